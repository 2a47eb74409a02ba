"""The mixture-of-experts slot with expert parallelism: Megatron-core's all-to-all dispatcher.

Megatron-core (``megatron/core/transformer/moe/token_dispatcher.py``
``MoEAlltoAllTokenDispatcher``, ``experts.py`` ``TEGroupedMLP``, ``shared_experts.py``) runs a
MoE layer over the folded groups (:mod:`tpsim.spec.folding`): each rank routes its own T_n
tokens (T/tp with sequence parallelism), sends each token to the ep ranks holding its experts
(all-to-all on the EP group), gathers the tokens of its expert-TP peers and runs its E_l = E/ep
experts, each 1/etp of its width wide:

forward::

    router, top-k            as :mod:`tpsim.layer.moe` (T_n tokens, all E logits)
    permute                  memory-bound: read and write T_n k x h (one row per chosen expert)
    all-to-all dispatch      on ep: S = ceil(T_n k load) h bytes per rank
    all-gather               on etp: the received rows of the etp ranks (R x h in all)
    sort                     memory-bound: read and write R x h (rows grouped by local expert)
    fc1, act, fc2            grouped GEMMs, E_l groups of m_e x (n_in f_e/etp) x h ... as the
                             EP-1 slot (FP8 casts of their inputs, one GEMM per expert over 4
                             streams), m_e = ceil(T_n k etp ep load / E), R = m_e E_l
    unsort                   memory-bound: read and write R x h
    reduce-scatter           on etp: the partial expert outputs (R x h)
    all-to-all combine       on ep: S again, the other way
    unpermute                memory-bound: read T_n k x h and the probabilities, write T_n x h
    shared experts           (S shared) the dense MLP on tp: all-gather T x h on tp (SP),
                             column GEMM, act, row GEMM, reduce-scatter on tp, then added (read
                             2, write 1); issued beside the dispatch (Megatron-core's
                             moe_shared_expert_overlap), so their GEMMs run under the all-to-all

with load = the busiest expert's tokens over the mean (``--moe-imbalance``), capped by the
capacity factor when tokens are dropped (``--moe-capacity-factor``): the busiest rank's grouped
GEMMs and all-to-all set the pace. Each all-to-all moves S (ep - 1)/ep of a rank's bytes to
other ranks (:func:`tpsim.cost.all_to_all.all_to_all_time`, on the EP group's placement: NVLink
inside a node, the GPU's own NIC across nodes). Backward mirrors every op: the combine's and
dispatch's all-to-alls again, the etp reduce-scatter and all-gather swapped, the grouped GEMMs'
dgrad and wgrad, the shared experts' backward (their output gradient gathered on tp, input
re-gathered) beside the combine's all-to-all, the router's backward.

Saved for backward: the router's input and scores (as EP 1), the sorted tokens R h (fc1's
weight gradient, in its GEMM's dtype), fc1's output and the probabilities, fc2's input (as EP 1:
:func:`tpsim.layer.moe.fc1_input_saved`; the unpermutation keeps nothing, Megatron-core
scaling the activation by the probabilities) and the shared experts' as the dense MLP's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.errors import ConfigError
from .dims import Dims, layer_dims, sp_reduce_op
from .moe import (act_saved, dense_bwd, fc1_input_saved, fc1_size, fc2_input_saved,
                  fc2_size, gathered_tokens, grouped, grouped_bwd, router_bwd, router_fwd, routed_rows,
                  shared_fwd)
from .moe_clamp import clamp_bwd, clamp_fwd
from .moe_host import alltoall_permute_ops, alltoall_preprocess_ops, counts_gather, sort_ops, \
    unsort_ops
from .moe_permute import (chosen_rows, permute_bwd, permute_fwd, unpermute_bwd,
                          unpermute_fwd)
from .moe_padding import pad_bwd, pad_fwd, unpad_bwd, unpad_fwd
from .ops import act_arith
from .template import Builder


@dataclass(frozen=True)
class Alltoall:
    """The switches of the all-to-all slot's structure: shared experts, which of its groups
    have more than one rank (a collective on a one-rank group is no op), the router's
    auxiliary loss (:mod:`tpsim.layer.moe_host`), Transformer Engine's fused permutation (else
    PyTorch's: :mod:`tpsim.layer.moe_permute`) and fused top-k (else PyTorch's:
    :mod:`tpsim.layer.moe_router`)."""
    shared: bool
    ep: bool
    etp: bool
    load_balancing: str = "none"
    permute_fusion: bool = True
    router_fusion: bool = True


def sent_rows(d: Dims) -> int:
    """ceil(T_n k load): rows one rank's all-to-all moves (its own slice included)."""
    return math.ceil(d.Tn * d.topk * d.load)


def a2a_bytes(d: Dims):
    """S = ceil(T_n k load) h bytes: one rank's all-to-all, as nccl-tests counts it."""
    return sent_rows(d) * d.h * d.bpe, (sent_rows(d), d.h), d.dtype


def _rows(d: Dims):
    """The R x h rows the local experts work on (the etp all-gather's output)."""
    return routed_rows(d) * d.h * d.bpe, (routed_rows(d), d.h), d.dtype


def _copy(B: Builder, name: str, rows, deps, saved=None, forward_of=None, sync=None,
          host_ops=1) -> str:
    """A memory-bound permutation of ``rows(d)`` x h: read and write each row once."""
    return B.eltwise(name, lambda d: (rows(d), d.h, 2 * rows(d) * d.h * d.bpe), deps,
                     saved=saved, forward_of=forward_of, sync=sync, host_ops=host_ops)


def probs_a2a_size(d: Dims):
    """The permuted probabilities' all-to-all: ceil(T_n k load) values in the activations'
    dtype (the router's, moe_router_dtype unset: :mod:`tpsim.layer.moe_host`; with it set they
    are fp32, left out: :mod:`tpsim.layer.router_dtype`)."""
    return sent_rows(d) * d.bpe, (sent_rows(d),), d.dtype


def _shared_tokens(B: Builder, x) -> str:
    return B.collective("fwd.shared.all-gather", "all-gather", (x,),
                        size=gathered_tokens) if B.sp else x


def alltoall_fwd(B: Builder, x, swiglu: bool, shared: bool) -> str:
    """The slot's forward from the norm's output ``x`` (T_n x h); module docstring."""
    n_in = 2 if swiglu else 1
    _, topk = router_fwd(B, x)
    tokens = _shared_tokens(B, x) if shared else None
    counts = counts_gather(B, topk)
    y = _copy(B, "fwd.moe.permute", chosen_rows, (x, topk), host_ops=alltoall_permute_ops()) \
        if B.permute_fusion else permute_fwd(B, x, topk, alltoall_preprocess_ops())
    p = B.collective("fwd.moe.dispatch", "all-to-all", (y,), size=a2a_bytes, group="ep",
                     sync=counts)
    probs = B.collective("fwd.moe.dispatch.probs", "all-to-all", (y,), size=probs_a2a_size,
                         group="ep")
    s = shared_fwd(B, tokens, n_in) if shared else None
    y = B.collective("fwd.moe.etp.all-gather", "all-gather", (p, probs), size=_rows, group="etp")
    y = experts_fwd(B, y, n_in, dispatcher="alltoall")
    y = B.collective("fwd.moe.etp.reduce-scatter", "reduce-scatter", (y,), size=_rows,
                     group="etp")
    y = B.collective("fwd.moe.combine", "all-to-all", (y,), size=a2a_bytes, group="ep")
    if shared:
        op = sp_reduce_op(B.sp)
        s = B.collective(f"fwd.shared.{op}", op, (s,), size=gathered_tokens)
    y = B.eltwise("fwd.moe.unpermute", lambda d: (d.Tn, d.h, (chosen_rows(d) + d.Tn) * d.h * d.bpe
                                                  + chosen_rows(d) * 4), (y, topk)) \
        if B.permute_fusion else unpermute_fwd(B, y, topk)
    return shared_add(B, y, s) if shared else y


def _shared_bwd(B: Builder, grad, n_in: int) -> str:
    """The shared experts' backward on tp from the slot's output gradient (T_n x h): gathered
    on tp (SP), fc2, act, fc1 (input re-gathered), the input gradient reduce-scattered."""
    op = sp_reduce_op(B.sp)
    if B.sp:
        grad = B.collective("bwd.shared.grad.all-gather", "all-gather", (grad,),
                            forward_of=f"fwd.shared.{op}", size=gathered_tokens)
    x = dense_bwd(B, "shared.fc2", lambda d: (d.T, d.h, d.fs), grad)
    x = B.eltwise("bwd.shared.act", lambda d: (d.T, d.fs, (1 + 2 * n_in) * d.T * d.fs * d.bpe),
                  (x,), forward_of="fwd.shared.act")
    inputs = (B.collective("bwd.shared.all-gather", "all-gather", (grad,),
                           forward_of="fwd.shared.all-gather", size=gathered_tokens),) \
        if B.sp else ()
    x = dense_bwd(B, "shared.fc1", lambda d: (d.T, n_in * d.fs, d.h), x, inputs)
    if B.sp:
        return B.collective("bwd.shared.reduce-scatter", "reduce-scatter", (x,),
                            size=gathered_tokens, forward_of="fwd.shared.all-gather")
    return B.collective("bwd.shared.all-reduce", "all-reduce", (x,), size=gathered_tokens)


def alltoall_bwd(B: Builder, grad, swiglu: bool, shared: bool) -> str:
    """The slot's backward from the gradient of its output (T_n x h); returns its input's
    gradient, the experts', the shared experts' and the router's summed."""
    n_in = 2 if swiglu else 1
    y = B.eltwise("bwd.moe.unpermute", lambda d: (chosen_rows(d), d.h, d.Tn * d.h * d.bpe
                                                  + 2 * chosen_rows(d) * d.h * d.bpe), (grad,),
                  forward_of="fwd.moe.unpermute") if B.permute_fusion else unpermute_bwd(B, grad)
    probs = y
    y = B.collective("bwd.moe.combine", "all-to-all", (y,), size=a2a_bytes, group="ep",
                     forward_of="fwd.moe.combine")
    s = _shared_bwd(B, grad, n_in) if shared else None
    y = B.collective("bwd.moe.etp.all-gather", "all-gather", (y,), size=_rows, group="etp",
                     forward_of="fwd.moe.etp.reduce-scatter")
    y = experts_bwd(B, y, n_in, dispatcher="alltoall")
    y = B.collective("bwd.moe.etp.reduce-scatter", "reduce-scatter", (y,), size=_rows,
                     group="etp", forward_of="fwd.moe.etp.all-gather")
    g = B.collective("bwd.moe.dispatch", "all-to-all", (y,), size=a2a_bytes, group="ep",
                     forward_of="fwd.moe.dispatch")
    probs = B.collective("bwd.moe.dispatch.probs", "all-to-all", (y,), size=probs_a2a_size,
                         group="ep", forward_of="fwd.moe.dispatch.probs")
    y = B.eltwise("bwd.moe.permute", lambda d: (d.Tn, d.h, (chosen_rows(d) + d.Tn) * d.h * d.bpe),
                  (g, probs), forward_of="fwd.moe.permute") if B.permute_fusion else \
        permute_bwd(B, g, probs)
    if shared:
        y = shared_add_bwd(B, y, s)
    return router_bwd(B, probs, y)


def experts_fwd(B: Builder, y, n_in: int, sync=None, dispatcher=None) -> str:
    """sort, fc1, act, fc2, unsort: the local experts on their R rows (module docstring), their
    rows padded for a quantized GEMM (:mod:`tpsim.layer.moe_padding`);
    ``sync``: the op the host waits for before issuing the sort (None: none); the sort's and
    unsort's host ops as ``dispatcher`` issues them (:mod:`tpsim.layer.moe_host`); no sort
    or unsort kernel where HybridEP permutes inside its own (:mod:`tpsim.layer.moe_flex`)."""
    rows = _sorted_rows(B, dispatcher)
    y = _copy(B, "fwd.moe.sort", rows, (y,), saved=fc1_input_saved, sync=sync,
              host_ops=sort_ops(B, dispatcher))
    y = grouped(B, "fwd.experts.fc1", fc1_size(n_in), (pad_fwd(B, y, dispatcher),))
    cat = clamp_fwd(B, y) if B.clamp else None      # gpt-oss: tpsim.layer.moe_clamp
    y = B.eltwise("fwd.experts.act", lambda d: (routed_rows(d), d.fe, (n_in + 1) * routed_rows(d)
                                                * d.fe * d.bpe), (cat or y,), saved=act_saved(n_in),
                  sync=cat, arith=act_arith(n_in))
    y = unpad_fwd(B, grouped(B, "fwd.experts.fc2", fc2_size, (y,), saved=fc2_input_saved),
                  dispatcher)
    return _copy(B, "fwd.moe.unsort", rows, (y,), host_ops=unsort_ops(B, dispatcher))


def experts_bwd(B: Builder, y, n_in: int, dispatcher=None) -> str:
    """The backward of :func:`experts_fwd`: unsort, fc2, act, fc1, sort."""
    rows = _sorted_rows(B, dispatcher)
    y = _copy(B, "bwd.moe.unsort", rows, (y,), forward_of="fwd.moe.unsort",
              host_ops=unsort_ops(B, dispatcher, backward=True))
    y = grouped_bwd(B, "experts.fc2", fc2_size, unpad_bwd(B, y, dispatcher))
    y = B.eltwise("bwd.experts.act", lambda d: (routed_rows(d), d.fe, (1 + 2 * n_in)
                                                * routed_rows(d) * d.fe * d.bpe), (y,),
                  forward_of="fwd.experts.act", arith=act_arith(n_in, True))
    y = clamp_bwd(B, y) if B.clamp else y
    y = pad_bwd(B, grouped_bwd(B, "experts.fc1", fc1_size(n_in), y), dispatcher)
    return _copy(B, "bwd.moe.sort", rows, (y,), forward_of="fwd.moe.sort",
                 host_ops=sort_ops(B, dispatcher, backward=True))


def _sorted_rows(B: Builder, dispatcher):
    """The rows the sort and unsort copy: R, none where HybridEP permutes in its kernels."""
    return (lambda d: 0) if B.permute_into and dispatcher == "hybridep" else routed_rows


def shared_add(B: Builder, y, s) -> str:
    """The shared experts' output ``s`` added to the routed experts' ``y``: read 2, write 1."""
    return B.eltwise("fwd.shared.add", lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe), (y, s))


def shared_add_bwd(B: Builder, y, s) -> str:
    return B.eltwise("bwd.shared.add", lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe), (y, s),
                     forward_of="fwd.shared.add")


def expert_load(imbalance: float, capacity_factor: float | None) -> float:
    """The busiest expert's tokens over the mean: the imbalance, capped by the capacity factor
    (Megatron-core's moe_expert_capacity_factor drops the tokens beyond it)."""
    return imbalance if capacity_factor is None else min(imbalance, capacity_factor)


def alltoall_dims(model, tp: int, ep: int, etp: int, micro_batch: int, seq_len: int,
                  dtype: str, sequence_parallel: bool, load: float = 1.0) -> Dims:
    """Per-rank sizes of ``model``'s MoE slot with the all-to-all dispatcher: E / ep experts of
    width f_e / etp, the shared experts' S f_s / tp, T_n tokens routed at ``load``. TP > 1
    needs sequence parallelism (as Megatron-core); the widths must divide."""
    if tp > 1 and not sequence_parallel:
        raise ConfigError("--sequence-parallel", "", "on with an MoE model and tp > 1 (as "
                          "Megatron-core requires)", False)
    shared = model.shared_experts * (model.shared_expert_ffn_hidden or 0)
    if shared % tp:
        raise ConfigError("--tp", "", f"a divisor of {model.name}'s shared experts ({shared})",
                          tp)
    d = layer_dims(model, tp, micro_batch, seq_len, dtype, sequence_parallel, training=True)
    return Dims(b=d.b, s=d.s, h=d.h, tp=tp, dtype=d.dtype, linear_dtype=d.linear_dtype,
                heads=d.heads, kv_heads=d.kv_heads, d=d.d, f=d.f, sp=d.sp, vocab=d.vocab,
                experts=model.experts, topk=model.experts_per_token,
                fe=model.expert_ffn_hidden // etp, fs=shared // tp, ep=ep, etp=etp,
                load=float(load))
