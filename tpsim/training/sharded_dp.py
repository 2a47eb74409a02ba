"""Sharded data parallelism: ZeRO stages 2 and 3 (FSDP), HSDP, and what each rank holds.

ZeRO (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models", section 5) shards over the d data-parallel ranks, stage by stage:

| stage | sharded over d | the gradients | the weights |
| --- | --- | --- | --- |
| 1 | optimizer state (Megatron's distributed optimizer) | reduce-scattered once per step | all-gathered after the step |
| 2 | + gradients | reduce-scattered unit by unit in every micro-batch's backward | all-gathered after the step |
| 3 | + weights | the same | all-gathered unit by unit before each forward and backward |

ZeRO-1 is :mod:`tpsim.training.data_parallel`'s distributed optimizer. Stages 2 and 3 are
modelled as PyTorch FSDP2 (``fully_shard``, as torchtitan applies it: one unit per transformer
block, the embedding and the output layer units of their own; docs/fsdp.md of
pytorch/torchtitan) runs them, with DeepSpeed's ZeRO-2 as stage 3 without the weight gathers:

* a unit's weights are all-gathered (16-bit, the precision's ``gathered`` bytes; 1 byte with
  ``fp8_all_gather``, torchtitan's float8 all-gather) on the shard group before its forward,
  and again before its backward when ``reshard_after_forward`` (FSDP2's default) freed them;
* the all-gather of the next unit is issued when a unit's compute starts (prefetch one unit
  ahead: two units gathered at once), on one in-order communication stream, or, where the
  unit's forward holds the host at a device-to-host sync (DeepEP's dispatch), its lag later
  (:mod:`tpsim.sim.host_lag`: FSDP2's implicit prefetch is the host's issue);
* each unit's main gradients (fp32 for bf16: torchtitan's reduce_dtype) are reduce-scattered
  on that stream as soon as its backward ends, in every micro-batch (no buffer holds whole
  gradients across micro-batches); with HSDP (a shard group of s < d ranks) the 1/s shard is
  then all-reduced over the d / s replicas; the backward waits for its last reduction
  (FSDP2's post-backward callback waits for the reduce-scatter stream).

A chunk's forward (backward) is then the two streams' max-plus recurrence over its units
(:func:`forward_s`, :func:`backward_s`): unit i's compute starts at S_i = max(C_i-1, A_i), where
its all-gather ends at A_i = max(A'_i-1, S_i-1 + w_i-1) + g_i (A' the stream's last end, w the
lag, 0 without a sync) and C_i = S_i +
compute_i, the compute slowed to 1 - the device's ``comm_compute_interference`` while the stream
runs beside it (NCCL's kernels take SMs: the rule of every collective that overlaps compute,
:func:`tpsim.sim.schedule.slowed_end`); the exposed rest counts as DP communication
(``Part.dp_exposed_s``). Not modelled: FSDP2's two streams for the all-gathers and
reduce-scatters (one in-order stream here, as they share the links), the float8 all-gather's amax
all-reduce (one number per weight), Megatron-FSDP's and DeepSpeed's bucketing. FSDP's copies on
the compute stream: :mod:`.fsdp_copies`. Memory per rank: :mod:`.shard_state`.

With context parallelism the shard group is the dp x cp ranks, and a model's folded routed
experts shard over expert DP, each MoE unit gathering and reducing its experts' part there
(:mod:`tpsim.training.shard_groups`: s cp and edp s / d ranks), in bf16 with ``expert_bf16``
(no reduce_dtype for the experts' FSDP2 units: NeMo AutoModel's MoE parallelizer at 89e3a9fdd).

With a pipeline (pp > 1: ``pipelined``) the units run as PyTorch's pipeline schedules run an FSDP2
stage (``torch/distributed/pipelining/stage.py``: every micro-batch's backward with
``set_requires_gradient_sync(False)`` and ``set_reshard_after_backward(False)``, then one
``perform_reduce_grad`` after the stage's last backward): the main gradients accumulate whole and
are reduce-scattered once per step after the backward (the step's DP reduction, as the distributed
optimizer's without overlap); ZeRO-3 gathers every unit at the step's start (its first forward
waits for it, as Megatron-core's overlapped weight gather, :mod:`tpsim.training.step_gather`), and
with ``reshard_after_forward`` each backward gathers its unit again (the forward before it
resharded it): m + 1 gathers per unit and step, as torch's 1F1B makes them (its warmup forwards
gather instead of its cooldown backwards, which find the unit still gathered). torchtitan's default
with a pipeline is no resharding after the forward (``fsdp_reshard_after_forward`` "default": one
gather per step). A rank then holds whole gradients and, ZeRO-3, every unit of its stage gathered.
HSDP and the fp8 all-gather are not modelled with a pipeline (refused). ``sync_every`` runs the
units as without one (``--fsdp-sync-every-micro-batch``: FSDP2's hooks, the stage no FSDPModule).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from . import data_parallel as dpm, terms
from ..base.errors import ConfigError
from ..spec.parallel import Group, Parallelism
from ..spec.precision import precision
from ..sim.price import group_collective
from ..sim.result import CollectiveRow
from ..sim.schedule import slowed_end
from .fsdp_copies import with_unit_copies
from .shard_state import FP8_GATHERED
from .shard_groups import dense_groups, expert_groups, expert_shard, sharded_shares, stage_experts

FP8_DTYPES = ("fp8",)     # the dtypes whose linears take fp8 weights
BF16_GRADS = 2              # bytes per gradient reduced in bf16 (expert_bf16)


@dataclass(frozen=True)
class Sharding:
    """The run's ZeRO ``stage`` (0-3; 1: the distributed optimizer) and the ``shard`` ranks
    its state is split over (d cp, or HSDP's shard group x cp; 1 below stage 2, the distributed
    optimizer's d being :func:`tpsim.training.terms.optimizer_shards`'s); ``expert_shard``:
    its folded routed experts' (0: none folded)."""
    stage: int = 0
    shard: int = 1
    reshard_after_forward: bool = True
    fp8_all_gather: bool = False
    expert_shard: int = 0
    pipelined: bool = False     # pp > 1, FSDP deferred to the last backward (module docstring)
    fp32_params: bool = False   # ZeRO-3's shards are the fp32 masters (.shard_state)
    copies: str = ""            # "flat" (FSDP1's flat parameters), "fsdp2" (.fsdp_copies)
    expert_bf16: bool = False   # folded experts' gradients reduced in bf16 (module docstring)

    @property
    def torch_fsdp(self) -> bool:
        """Whether PyTorch's FSDP shards (FSDP1's flat parameters, FSDP2's copies, or their
        fp32 sharded parameters), not Megatron-FSDP (:mod:`.shard_state`)."""
        return bool(self.copies) or self.fp32_params

    @property
    def per_unit(self) -> bool:
        """Whether every DP collective runs unit by unit in the chunks (ZeRO-2/3, not pipelined)."""
        return self.stage >= 2 and not self.pipelined

    def per_micro_batch(self, comm: tuple[float, float, float]) -> tuple[float, float, float]:
        """A unit's (forward gather, backward gather, reduction) seconds that each
        micro-batch's chunk runs: all of ``comm`` (:func:`unit_comm`); pipelined, only ZeRO-3's
        backward gather with ``reshard_after_forward`` (module docstring)."""
        if not self.pipelined:
            return comm
        return 0.0, comm[1] if self.stage == 3 and self.reshard_after_forward else 0.0, 0.0

    def state_shards(self, dp: int, distributed_optimizer: bool) -> tuple[int, int, int]:
        """(weights, main gradients, optimizer state) shards: 1, 1 or s by stage; the
        optimizer state over d with the distributed optimizer (ZeRO-1)."""
        if self.stage < 2:
            return 1, 1, dp if distributed_optimizer else 1
        return (self.shard if self.stage == 3 else 1), self.shard, self.shard


UNSHARDED = Sharding()


def sharding(zero_stage: int, dp: int, shard_group: int | None, reshard_after_forward: bool,
             fp8_all_gather: bool, cp: int = 1, edp: int = 0, pp: int = 1,
             fp32_params: bool = False, flat_params: bool = False,
             fsdp2_copies: bool = False, sync_every: bool = False,
             expert_bf16: bool = False) -> Sharding:
    """The :class:`Sharding` of a run: stages 2 and 3 over ``shard_group`` DP ranks (None: all
    of dp) x ``cp``, folded experts (``edp`` > 0 ranks of expert DP) over edp s / d
    (:func:`tpsim.training.shard_groups.expert_shard`), ``pipelined`` with ``pp`` > 1 unless
    ``sync_every`` (HSDP and the fp8 all-gather refused there, naming their flags)."""
    if zero_stage < 2:
        return UNSHARDED
    s, pipelined = dp if shard_group is None else shard_group, pp > 1 and not sync_every
    if pipelined and (s < dp or fp8_all_gather):
        flag, value = ("--shard-group", s) if s < dp else ("--fp8-all-gather", True)
        raise ConfigError(flag, "", f"off with --pp {pp} (ZeRO-2/3 beside a pipeline is "
                          "modelled over all of dp, gathered in 16 bits)", value)
    return Sharding(zero_stage, s * cp, reshard_after_forward, fp8_all_gather,
                    expert_shard(edp, dp, s) if edp else 0, pipelined, fp32_params,
                    "flat" if flat_params else "fsdp2" if fsdp2_copies else "", expert_bf16)


def shard_group(par: Parallelism, stage: int, shard: int) -> Group:
    """Pipeline stage ``stage``'s shard group: the first ``shard`` ranks of its dp x cp group
    (consecutive DP ranks, as torchtitan's dp_shard is the inner mesh dimension)."""
    return dense_groups(par, stage, shard)[0]


def weight_gather_group(par: Parallelism, stage: int, sh: Sharding) -> Group:
    """The all-gather of the updated weights after the optimizer (ZeRO-1 and 2): the DP group
    of pipeline stage ``stage`` (:func:`tpsim.training.terms.dp_group`), ZeRO-2's shard group."""
    return shard_group(par, stage, sh.shard) if sh.per_unit else terms.dp_group(par, stage)


def expert_gather_group(experts, stage: int, sh: Sharding) -> Group | None:
    """The folded experts' all-gather of the updated weights (ZeRO-1 and 2): their expert-DP
    group of pipeline stage ``stage``, ZeRO-2's expert shard group; None without ``experts``."""
    if experts is None:
        return None
    if sh.per_unit and sh.expert_shard:
        return expert_groups(experts, stage, sh.expert_shard)[0]
    return terms.expert_dp_group(experts, stage)


def replica_group(par: Parallelism, stage: int, shard: int) -> Group:
    """The ranks holding the same shard on pipeline stage ``stage``: d cp / shard of them, a
    shard group apart (HSDP's replicate dimension)."""
    return dense_groups(par, stage, shard)[1]


def unit_gather_bytes(params: float, dtype: str, sh: Sharding) -> float:
    """A unit's weight all-gather: params x 1 byte with ``fp8_all_gather``, else x the
    precision's gathered (16-bit) bytes (:func:`tpsim.training.data_parallel.gather_bytes`)."""
    return params * FP8_GATHERED if sh.fp8_all_gather else dpm.gather_bytes(params, dtype)


def unit_collectives(params: float, dtype: str, sh: Sharding, par: Parallelism,
                     stage: int, expert: float = 0, experts=None) -> list[tuple]:
    """A unit's collectives per micro-batch on pipeline stage ``stage``, as (phase, op, bytes,
    group): the all-gather of :func:`unit_gather_bytes` on the shard group before the forward
    (ZeRO-3) and again before the backward (``reshard_after_forward``); the reduce-scatter of
    params x main-gradient bytes on it, and with HSDP the all-reduce of the 1/s shard over the
    replicas. Of them ``expert`` routed-expert parameters (an MoE unit, ``experts`` its
    Folded groups) run the same on the expert-DP groups
    (:func:`tpsim.training.shard_groups.expert_groups`), after the rest."""
    out = _collectives(params - expert, dtype, sh, sh.shard, dense_groups(par, stage, sh.shard))
    if expert:
        out += _collectives(expert, dtype, sh, sh.expert_shard,
                            expert_groups(experts, stage, sh.expert_shard), sh.expert_bf16)
    return out


def _collectives(params: float, dtype: str, sh: Sharding, shard: int, groups,
                 bf16: bool = False) -> list[tuple]:
    """:func:`unit_collectives` of ``params`` sharded over ``shard`` ranks of ``groups``
    (shard group, replica group), their gradients ``bf16`` (2 bytes) or the precision's."""
    (group, replicas), out = groups, []
    if sh.stage == 3 and shard > 1:
        gathered = unit_gather_bytes(params, dtype, sh)
        out.append(("forward", "all-gather", gathered, group))
        if sh.reshard_after_forward:
            out.append(("backward", "all-gather", gathered, group))
    grads = params * BF16_GRADS if bf16 else dpm.grad_bytes(params, dtype)
    if shard > 1:
        out.append(("backward", "reduce-scatter", grads, group))
    if replicas.size > 1:
        out.append(("backward", "all-reduce", grads / shard, replicas))
    return out


def unit_comm(params: float, dtype: str, sh: Sharding, par: Parallelism, stage: int,
              price, expert: float = 0, experts=None) -> tuple[float, float, float]:
    """A unit's (forward gather, backward gather, gradient reduction) seconds: its
    :func:`unit_collectives` priced by ``price(op, bytes, group)`` and summed."""
    out = [0.0, 0.0, 0.0]
    for phase, op, nbytes, group in unit_collectives(params, dtype, sh, par, stage, expert,
                                                     experts):
        out[_kind(phase, op)] += price(op, nbytes, group)
    return out[0], out[1], out[2]


def _kind(phase: str, op: str) -> int:
    """Its place in :func:`unit_comm`'s triple: 0 forward gather, 1 backward gather, 2 reduction."""
    return 0 if phase == "forward" else 1 if op == "all-gather" else 2


def layer_collectives(params: float, dtype: str, sh: Sharding, par: Parallelism,
                      topo) -> tuple[CollectiveRow, ...]:
    """A layer unit's :func:`unit_collectives` on stage 0 that every micro-batch runs
    (:meth:`Sharding.per_micro_batch`) as rows of the layer's collectives table (group dp),
    priced by :func:`tpsim.sim.price.group_collective`; none below ZeRO-2."""
    if sh.stage < 2:
        return ()
    rows, each = [], sh.per_micro_batch((1.0, 1.0, 1.0))
    for phase, op, nbytes, group in unit_collectives(params, dtype, sh, par, 0):
        if not each[_kind(phase, op)]:
            continue
        c = group_collective(op, nbytes, group, topo)
        rows.append(CollectiveRow(op, phase, 1, int(nbytes), c.time_s,
                                  f"{c.algorithm}/{c.protocol}", c.formula, "dp"))
    return tuple(rows)


def _steady(run, state, step):
    """Iterate ``state = step(state)`` ``run`` times, skipping ahead once one step shifts every
    component by the same amount (max-plus recurrences are shift-invariant: the rest of the
    run then adds that amount per step exactly)."""
    for k in range(run):
        new = step(state)
        deltas = {round(b - a, 15) for a, b in zip(state, new)}
        state = new
        if len(deltas) == 1 and k + 1 < run:
            d = (run - k - 1) * next(iter(deltas))
            return tuple(x + d for x in state)
    return state


class ForwardRun(NamedTuple):
    """``count`` units of a chunk's forward alike (:func:`forward_s`): each unit's compute
    and all-gather seconds, and the host's lag from its compute's start to issuing the next
    unit's gather (:mod:`tpsim.sim.host_lag`; 0: issued as the compute starts)."""
    compute_s: float
    gather_s: float
    count: int
    lag_s: float = 0.0


def forward_s(units: list[ForwardRun], interference: float = 0.0) -> float:
    """A chunk's forward over ``units`` in forward order, :class:`ForwardRun` s: the module
    docstring's recurrence (state: the stream's last gather end, the last compute's start and
    its end unslowed, when the host issues the next gather: the start + the unit's lag), each
    compute slowed beside the gathers it overlaps (:func:`_beside`; after a lag, the gather
    before it to its end and the next from its issue)."""
    state = (0.0, 0.0, 0.0, 0.0)
    for f, g, n, lag in units:
        def step(s, f=f, g=g, w=lag):
            issue = max(s[0], s[3])
            comm = issue + g
            busy = [(s[1], comm)] if s[3] <= s[1] else \
                [(s[1], s[0])] * (s[0] > s[1]) + [(issue, comm)]
            start = max(slowed_end(s[1], s[2] - s[1], busy, interference), comm)
            return comm, start, start + f, start + w
        state = _steady(n, state, step)
    return _beside(state, state[0], interference)


def _beside(s, busy_end: float, interference: float) -> float:
    """The end of the compute ``s`` holds (start s[1], s[2] - s[1] seconds alone) with the
    communication stream busy from its start to ``busy_end`` (every collective issued by then
    runs back to back from the compute's start: the gather issued as it starts, in the
    backward after the reduction of the unit before): slowed to 1 - ``interference`` beside
    it (:func:`tpsim.sim.schedule.slowed_end`, the rule of every collective beside compute)."""
    return slowed_end(s[1], s[2] - s[1], [(s[1], busy_end)], interference)


def backward_s(units, interference: float = 0.0) -> float:
    """A chunk's backward over ``units`` in backward order, runs of (compute, gather, reduce
    seconds, count): each unit's all-gather issued as the one before starts, its reduction
    after its compute, both on the in-order communication stream (the next unit's gather goes
    first); each compute slowed beside them (:func:`_beside`); the backward ends with its
    last reduction."""
    state, pending = (0.0, 0.0, 0.0), 0.0

    def step(s, b, g, r):
        comm = max(s[0], s[1]) + g                   # this unit's all-gather
        end = _beside(s, comm, interference)         # the unit before, beside what it overlaps
        start = max(end, comm)
        return max(comm, end) + r, start, start + b  # then the unit before's reduction
    for b, g, r, n in units:
        if n:
            state = step(state, b, g, pending)
            state = _steady(n - 1, state, lambda s, b=b, g=g, r=r: step(s, b, g, r))
            pending = r
    end = _beside(state, state[0], interference)
    return max(state[0], end) + pending


def sharded_chunk(chunk, dtype: str, sh: Sharding, par: Parallelism, stage: int, price,
                  experts=None, interference: float = 0.0):
    """``chunk`` (a :class:`tpsim.training.step.Chunk` of pipeline stage ``stage``) with its
    forward and backward as :func:`forward_s` and :func:`backward_s` over its units (run
    ahead by what it receives, ``Chunk.received``), the time over its compute counted as
    exposed DP communication (``Part.dp_exposed_s``); its MoE units' experts on ``experts``'
    groups."""
    ex = chunk.experts or (0,) * len(chunk.units)
    comm = [sh.per_micro_batch(unit_comm(params, dtype, sh, par, stage, price, e, experts))
            for (_, params, _), e in zip(chunk.units, ex)]
    lags = chunk.lags or (0.0,) * len(chunk.units)
    fwd = chunk.received[0] + forward_s(
        [ForwardRun(f, c[0], n, w) for f, c, (_, _, n), w in zip(
            reversed(chunk.forwards), reversed(comm), reversed(chunk.units), reversed(lags))],
        interference)
    bwd = chunk.received[1] + backward_s(
        [(b, c[1], c[2], n) for (b, _, n), c in zip(chunk.units, comm)], interference)
    p = chunk.part
    exposed = fwd - p.forward_s + bwd - p.backward_s
    return dataclasses.replace(chunk, part=dataclasses.replace(
        p, forward_s=fwd, backward_s=bwd, dp_exposed_s=p.dp_exposed_s + exposed))


def shard_setup(setup, sh: Sharding, topo):
    """A :class:`tpsim.training.step.StepSetup` run with ZeRO-2/3 ``sh``: each chunk
    :func:`sharded_chunk` on its pipeline stage (virtual stage g on stage g mod pp); with
    folded experts each stage's optimizer split as
    :func:`tpsim.training.shard_groups.sharded_shares`. Pipelined (module docstring): the
    gradients reduce-scattered after the whole backward and ZeRO-3's gathers at the step's
    start (the distributed optimizer's step-level collectives on the shard group, without
    overlapped reduction, with the overlapped gather), only ZeRO-3's resharded backward
    gathers in the chunks."""
    par, price = setup.parallelism, terms.collective_price(topo)
    if sh.pipelined:
        setup = dataclasses.replace(setup, distributed_optimizer=True, overlap_grad_reduce=False,
                                    overlap_param_gather=sh.stage == 3)
    chunked = sh.per_unit or sh.per_micro_batch((1.0, 1.0, 1.0)) != (0.0, 0.0, 0.0)
    size = (unit_gather_bytes(1.0, setup.precision, sh), precision(setup.precision).grads)
    chunks = tuple(sharded_chunk(with_unit_copies(c, sh, *size, topo.device),
                                 setup.precision, sh, par, g % par.pp, price, setup.experts,
                                 topo.device.comm_compute_interference)
                   for g, c in enumerate(setup.chunks)) if chunked else setup.chunks
    shards = tuple(sharded_shares(n, stage_experts(setup, r), sh.shard, sh.expert_shard)
                   for r, n in enumerate(setup.stage_params)) if setup.shards else ()
    return dataclasses.replace(setup, chunks=chunks, sharding=sh, shards=shards)


def check_dtype(sh: Sharding, dtype: str) -> None:
    """``fp8_all_gather`` needs FP8 linears (the weights are cast to fp8 before the gather)."""
    if sh.fp8_all_gather and dtype not in FP8_DTYPES:
        raise ConfigError("--fp8-all-gather", "", f"--dtype {' or '.join(FP8_DTYPES)} (the "
                          "linears' weights are all-gathered as their fp8 cast)", dtype)


__all__ = ["Sharding", "UNSHARDED", "sharding", "shard_group", "weight_gather_group",
           "expert_gather_group", "replica_group", "unit_comm", "unit_collectives",
           "layer_collectives", "ForwardRun", "forward_s", "backward_s", "sharded_chunk", "shard_setup",
           "check_dtype"]
