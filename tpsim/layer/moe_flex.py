"""The MoE slot's other token dispatchers: Megatron-core's flex and all-gather dispatchers with
expert parallelism, and which slot a run's MoE layers take (``--moe-dispatcher``).

Megatron-core (``megatron/core/transformer/moe/token_dispatcher.py``) offers three dispatchers
(``--moe-token-dispatcher-type``): ``alltoall`` (:mod:`tpsim.layer.moe_ep`, tpsim's default),
``allgather`` and ``flex``. Dense layers ignore the choice, as Megatron-core's do.

flex (``MoEFlexTokenDispatcher`` with ``_DeepepManager`` or ``_HybridEPManager``,
``--moe-flex-dispatcher-backend deepep|hybridep``): one fused kernel permutes the tokens into
its send buffers and dispatches them, each token sent once per target node and forwarded over
NVLink once per target GPU (DeepEP's normal kernels), not once per expert:

    router, top-k            as :mod:`tpsim.layer.moe`; with ``--moe-routing round-robin``
                             AutoModel's fake gate instead (:mod:`tpsim.layer.fake_gate`)
    dispatch                 :class:`~tpsim.layer.ops.Dispatch` on ep, T_n load rows of h
                             (:func:`tpsim.cost.all_to_all.flex_dispatch_time`); no permute op
    sort                     the received tokens into rows per local expert (R x h), as the
                             all-to-all slot's (``get_permuted_hidden_states_by_experts``)
    fc1, act, fc2, unsort    as the all-to-all slot
    combine                  :class:`~tpsim.layer.ops.Dispatch` again, the other way; the
                             reduction of each token's expert outputs inside it (no unpermute)
    shared experts           beside, as the all-to-all slot

HybridEP (``--moe-flex-backend hybridep``) sizes its forward dispatch from every rank's routing
(deepseek-ai/DeepEP branch ``hybrid-ep``, ``HybridEPBuffer::metadata_preprocessing``, called by
Megatron-core's ``fused_a2a.py`` ``HybridEPDispatch.forward`` without a handle): first it
all-gathers the ranks' routing maps on ep (``Executor::allgather_routing_map``: a bool T_n x E
map a rank, NCCL's ``all_gather_into_tensor`` across nodes, its own NVLink kernel inside one),
the dispatch waiting for it; the metadata kernel that reads the gathered map (ep T_n E bytes) is
left out. The backward reuses the forward's handle: no gather. HybridEP permutes as it copies
the received tokens out of its registered buffer (``dispatch_with_permute``, and
``combine_with_unpermute`` the other way: DeepEP ``docs/Hybrid-EP_Implementation.md`` 7.2): by
default in a kernel of its own after the dispatch (before the combine), priced as the sort (and
unsort), R x h read and written; with ``--moe-permute-fusion-into-hybridep`` (Megatron-core's
``moe_permute_fusion_into_hybridep``, DeepEP's ``fuse_permute_dispatch`` and
``fuse_unpermute_combine``) by permute blocks in the dispatch's (combine's) own grid, reading
each chunk as it lands: the sort and unsort run no kernel (their host ops and saved input
stay), their bytes moving beside the NVLink-bound transfer, priced as free.

Backward mirrors it: the combine's dispatch kernel, the experts' backward, the dispatch's
combine kernel, the router's backward (none for the fake gate). The kernels run on the SMs
they are given, which the compute beside them loses (:mod:`tpsim.sim.interference`: DeepEP's
20 of the H100's 132 SMs, HybridEP's 32; Hopper's persistent GEMMs beside them run a second
pass, other kernels lose that share). The flex dispatcher's group is expert-TP x EP: tpsim
prices expert-TP 1 (the published recipes') and refuses more.

allgather (``MoEAllGatherTokenDispatcher``): every rank all-gathers the tokens of the
expert-TP x EP group (G = T_n etp ep rows, consecutive ranks), keeps those routed to its E/ep
experts, runs them, and reduce-scatters the G rows back: the EP-1 slot of
:mod:`tpsim.layer.moe` on a group ep times larger.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from ..spec.parallel import Group
from .dims import Dims, sp_reduce_op
from .fake_gate import fake_gate_fwd
from ..spec.fake_gate import fake_gate
from .moe import gathered_tokens, moe_bwd, moe_fwd, router_bwd, router_fwd, shared_fwd
from .moe_ep import (Alltoall, _shared_bwd, _shared_tokens, alltoall_bwd, alltoall_fwd,
                     experts_bwd, experts_fwd, shared_add, shared_add_bwd)
from .moe_host import flex_dispatch_bwd_launches, flex_dispatch_ops
from .ops import Dispatch
from .template import Builder

TPEP = "tpep"      # the all-gather dispatcher's group: expert-TP x EP consecutive ranks


@dataclass(frozen=True)
class Flex:
    """The flex dispatcher's slot: shared experts, the kernels' backend, the router's
    auxiliary loss, HybridEP's permutation inside its kernels (module docstring), the fused
    top-k (:mod:`tpsim.layer.moe_router`), which experts a token takes (``--moe-routing``: its
    dispatches' fan-out; round-robin: AutoModel's fake gate, :mod:`tpsim.layer.fake_gate`, in
    the router's place)."""
    shared: bool
    backend: str = "deepep"
    load_balancing: str = "none"
    permute_into: bool = False
    router_fusion: bool = True
    routing: str = "uniform"


@dataclass(frozen=True)
class AllGather:
    """The all-gather dispatcher's slot over expert-TP x EP ranks: shared experts, and whether
    that group has more than one rank; the router's loss and fused top-k."""
    shared: bool
    gathered: bool = True
    load_balancing: str = "none"
    router_fusion: bool = True


def slot_groups(moe) -> dict[str, int]:
    """Group sizes the slot's template compiles with (2: more than one rank)."""
    if isinstance(moe, Alltoall):
        return {"ep": 2 if moe.ep else 1, "etp": 2 if moe.etp else 1}
    if isinstance(moe, Flex):
        return {"ep": 2}
    if isinstance(moe, AllGather):
        return {TPEP: 2 if moe.gathered else 1}
    return {}


def slot(B: Builder, x, swiglu: bool, moe, backward: bool = False) -> str:
    """The MoE slot's forward from the norm's output ``x`` or, ``backward``, its backward from
    its output's gradient ``x``: all-to-all (an :class:`~tpsim.layer.moe_ep.Alltoall`), flex,
    all-gather over EP, or the EP-1 all-gather slot (1, 2: with shared experts)."""
    if isinstance(moe, Alltoall):
        fwd, bwd, arg = alltoall_fwd, alltoall_bwd, moe.shared
    elif isinstance(moe, Flex):
        fwd, bwd, arg = flex_fwd, flex_bwd, moe
    elif isinstance(moe, AllGather):
        fwd, bwd, arg = allgather_fwd, allgather_bwd, moe.shared
    else:
        fwd, bwd, arg = moe_fwd, moe_bwd, moe == 2
    return (bwd if backward else fwd)(B, x, swiglu, arg)


def _dispatch(B: Builder, name: str, deps, moe: Flex, forward_of=None, sync=None,
              host_ops=1, launches=None) -> str:
    """One flex kernel of ``moe``'s backend and routing on ep: the rank's T_n load rows of h
    (module docstring); ``sync``: the
    op the host waits for before issuing it; ``host_ops``, ``launches``: its host work
    (:mod:`tpsim.layer.moe_host`). HybridEP's forward dispatch and its backward carry each
    row's routing probabilities (Megatron-core ``fused_a2a.py``: ``dispatch_with_permute``
    with ``probs``, ``combine_with_unpermute`` with their gradient; the forward combine and
    its backward without)."""
    backend = moe.backend
    probs = backend == "hybridep" and name.endswith(".dispatch")

    def make(d: Dims):
        return Dispatch(d.Tn * d.load, d.h * d.bpe, d.experts, d.topk, "ep", backend,
                        (d.Tn, d.h), d.dtype, probs, moe.routing)
    return B.add(name, make, "comm", deps, None, forward_of, "ep", host_ops, sync, launches)


def _shared_out(B: Builder, y, s) -> str:
    """The shared experts' output reduced on tp and added to the routed experts' ``y``."""
    op = sp_reduce_op(B.sp)
    return shared_add(B, y, B.collective(f"fwd.shared.{op}", op, (s,), size=gathered_tokens))


def routing_maps(d: Dims):
    """HybridEP's gathered routing maps (module docstring): ep T_n E bools, one byte each
    (nccl-tests' all-gather size)."""
    return d.ep * d.Tn * d.experts, (d.ep, d.Tn, d.experts), "bool"


def flex_fwd(B: Builder, x, swiglu: bool, moe: Flex) -> str:
    """The flex slot's forward from the norm's output ``x`` (T_n x h); module docstring."""
    n_in = 2 if swiglu else 1
    topk = fake_gate_fwd(B, x) if fake_gate(moe.routing) else router_fwd(B, x)[1]
    tokens = _shared_tokens(B, x) if moe.shared else None
    if moe.backend == "hybridep":
        topk = B.collective("fwd.moe.routing.all-gather", "all-gather", (topk,),
                            size=routing_maps, group="ep")
    y = _dispatch(B, "fwd.moe.dispatch", (x, topk), moe, sync=topk,
                  host_ops=flex_dispatch_ops(moe.backend))
    s = shared_fwd(B, tokens, n_in) if moe.shared else None
    y = experts_fwd(B, y, n_in, dispatcher=moe.backend)
    y = _dispatch(B, "fwd.moe.combine", (y,), moe)
    return _shared_out(B, y, s) if moe.shared else y


def flex_bwd(B: Builder, grad, swiglu: bool, moe: Flex) -> str:
    """The flex slot's backward from its output's gradient (T_n x h)."""
    n_in = 2 if swiglu else 1
    y = _dispatch(B, "bwd.moe.combine", (grad,), moe, forward_of="fwd.moe.combine")
    s = _shared_bwd(B, grad, n_in) if moe.shared else None
    y = _dispatch(B, "bwd.moe.dispatch", (experts_bwd(B, y, n_in, moe.backend),), moe,
                  forward_of="fwd.moe.dispatch",
                  launches=flex_dispatch_bwd_launches(moe.backend))
    if moe.shared:
        y = shared_add_bwd(B, y, s)
    return y if fake_gate(moe.routing) else router_bwd(B, y, y)


def _gathered(d: Dims):
    """The G = T_n etp ep gathered rows of h (the all-gather's output)."""
    rows = d.Tn * d.etp * d.ep
    return rows * d.h * d.bpe, (rows, d.h), d.dtype


def allgather_fwd(B: Builder, x, swiglu: bool, shared: bool) -> str:
    """The all-gather slot's forward over expert-TP x EP (module docstring)."""
    n_in = 2 if swiglu else 1
    _, topk = router_fwd(B, x)
    tokens = _shared_tokens(B, x) if shared else None
    y = B.collective("fwd.moe.all-gather", "all-gather", (x, topk), size=_gathered, group=TPEP)
    s = shared_fwd(B, tokens, n_in) if shared else None
    y = experts_fwd(B, y, n_in, sync=y)
    y = B.collective("fwd.moe.reduce-scatter", "reduce-scatter", (y,), size=_gathered,
                     group=TPEP)
    return _shared_out(B, y, s) if shared else y


def allgather_bwd(B: Builder, grad, swiglu: bool, shared: bool) -> str:
    """The all-gather slot's backward: the output gradient all-gathered, the experts'
    backward, the input gradient reduce-scattered."""
    n_in = 2 if swiglu else 1
    y = B.collective("bwd.moe.all-gather", "all-gather", (grad,), size=_gathered, group=TPEP,
                     forward_of="fwd.moe.reduce-scatter")
    s = _shared_bwd(B, grad, n_in) if shared else None
    y = B.collective("bwd.moe.reduce-scatter", "reduce-scatter", (experts_bwd(B, y, n_in),),
                     size=_gathered, group=TPEP, forward_of="fwd.moe.all-gather")
    if shared:
        y = shared_add_bwd(B, y, s)
    return router_bwd(B, y, y)


def slot_of(dispatcher: str, backend: str, shared: bool, ep: int, etp: int, tp: int,
            load_balancing: str = "none", permute_fusion: bool = True,
            into_hybridep: bool = False, router_fusion: bool = True,
            routing: str = "uniform"):
    """The MoE layers' slot for ``dispatcher`` at ep, expert-TP ``etp`` and TP ``tp``: None
    for the EP-1 slot of :mod:`tpsim.layer.moe` (ep 1, etp = tp: every dispatcher's layer),
    else an :class:`~tpsim.layer.moe_ep.Alltoall` (unfused permutation without
    ``permute_fusion``), :class:`Flex` (HybridEP's permutation in its kernels with
    ``into_hybridep``, its tokens' experts by ``routing``) or :class:`AllGather` (with the
    router's ``load_balancing``), each with the router's top-k fused or not
    (``router_fusion``); a ConfigError naming a flag tpsim does not price."""
    if ep == 1 and etp == tp:
        for fused, flag, what in ((permute_fusion, "--no-moe-permute-fusion", "permutation"),
                                  (router_fusion, "--no-moe-router-fusion", "router")):
            if not fused:
                raise ConfigError(flag, "", f"--ep or --expert-tp set (the unfused {what} is "
                                  "priced for the expert-parallel slots)", ep)
        return None
    if dispatcher == "flex":
        if ep == 1:
            raise ConfigError("--ep", "", "more than 1 with --moe-dispatcher flex (Megatron-core: "
                              "the flex dispatcher requires TP x EP > 1)", ep)
        if etp > 1:
            raise ConfigError("--expert-tp", "", "1 with --moe-dispatcher flex (its expert-TP x "
                              "EP group is priced for expert-TP 1)", etp)
        return Flex(shared, backend, load_balancing, into_hybridep and backend == "hybridep",
                    router_fusion, routing)
    if dispatcher == "allgather":
        return AllGather(shared, etp * ep > 1, load_balancing, router_fusion)
    return Alltoall(shared, ep > 1, etp > 1, load_balancing, permute_fusion, router_fusion)


def slot_subgroups(moe, experts) -> dict[str, Group]:
    """The groups by a name of their own that the slot's ops run on (the all-gather
    dispatcher's expert-TP x EP ranks); ``experts`` the folded groups."""
    if not isinstance(moe, AllGather):
        return {}
    return {TPEP: Group(TPEP, experts.etp * experts.ep, 1, 0, experts.world)}
