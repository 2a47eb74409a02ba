"""Where a simulated step's time goes, per pipeline stage, and what each stage holds in memory.

Every GPU of stage r spends the step's time T as

    T = compute + tp_comm_exposed + host_wait          (its chunks: the layers' own split, x m)
        + dp_comm_exposed + optimizer                  (gradient pre-scale, exposed DP collectives,
                                                        the waits for the overlapped weight
                                                        all-gather, the time the compute loses
                                                        beside DP collectives; optimizer kernels, exposed
                                                        gradient-norm all-reduce)
        + pp_comm_exposed + bubble                     (its compute stream idle: while one of its
                                                        p2p transfers or the tied-embedding
                                                        all-reduce runs; otherwise the bubble)

The idle time of the compute stream is read from the run (:mod:`tpsim.training.step_idle`). Until the
pipeline's last chunk ends on any stage (the flush), a stage idles for its own p2p transfers
(pp), while any stage's first forward waits for the overlapped weight all-gather (dp: the
pipeline waits for it), or for the pipeline (the bubble: a DP reduction running then is hidden
by the flush).
After it, each idle moment goes to the first of: any stage's DP collective, the tied-embedding
all-reduce (pp), the TP all-reduce of norm gradients, the gradient norm or optimizer kernels;
the rest to the bubble. For equal stages and free transfers the bubble is (p - 1)(t_f + t_b)/v
on every stage.
"""
from __future__ import annotations

import dataclasses

from . import terms
from ..base.memo import Memo
from ..sim.memory import Memory, stage_memory
from ..sim.result import StageTimes, StepTimes, TimeSplit
from .torch_pipeline import runtime_schedule
from .step import Part, build_step, time_step
from .step_idle import idle_split, stage_splits  # noqa: F401 (idle_split: read from here by tests)
from .shard_state import largest_unit, state_bytes
from .shard_groups import stage_experts


class StepResult:
    """A simulated step: its times and each stage's memory (what the memo keeps), and, built
    when first asked, the schedule it ran and its ``run``: the step graph op by op with names
    (:meth:`tpsim.training.step_graph.StepGraph.run`, for the trace and the plots)."""
    __slots__ = ("times", "memory", "_setup", "_topo", "_run")

    def __init__(self, times: StepTimes, memory: tuple, setup, topo):
        self.times, self.memory, self._setup, self._topo = times, memory, setup, topo
        self._run = None

    @property
    def run(self):
        if self._run is None:
            self._run = build_step(self._setup, self._topo).run()
        return self._run

    @property
    def schedule(self):
        s = self._setup
        return runtime_schedule(s.parallelism.pp, s.m, s.v, s.pp_runtime)


def stage_times(setup, stage: int, split: dict) -> StageTimes:
    """:class:`~tpsim.sim.result.StageTimes` of ``stage`` from the timed step's ``split`` of its
    idle time (:func:`tpsim.training.step_idle.stage_splits`): before the pipeline's last chunk
    ends anywhere (the flush), its own p2p (``pp_a``), any stage's wait for the overlapped
    weight all-gather (``dp_a``) or the bubble (``bubble_a``); after it,
    whatever of the step's end is running (``idle``: module docstring), else the bubble
    (``bubble_b``); ``busy``: its own DP and optimizer kernels."""
    p, m = setup.parallelism.pp, setup.m
    mine = [setup.chunks[c * p + stage] for c in range(setup.v)]
    idle, busy = split["idle"], split["busy"]
    per_mb = Part.total([(c.part, 1) for c in mine])
    return StageTimes(
        compute_s=m * per_mb.compute_s, tp_comm_exposed_s=m * per_mb.tp_exposed_s + idle["tp"],
        host_wait_s=m * per_mb.host_wait_s, bubble_s=split["bubble_a"] + split["bubble_b"],
        pp_comm_exposed_s=split["pp_a"] + idle["pp"],
        dp_comm_exposed_s=busy["dp"] + split["dp_a"] + idle["dp"] + m * per_mb.dp_exposed_s,
        optimizer_s=busy["optimizer"] + idle["optimizer"],
        offload_exposed_s=m * per_mb.offload_exposed_s, stage=stage,
        layers=sum(c.layers for c in mine), forward_s=per_mb.forward_s,
        backward_s=per_mb.backward_s, flops=m * per_mb.flops,
        hardware_flops=m * per_mb.hardware_flops)


def step_times(g, setup, global_batch: int, seq_len: int, peak: float) -> StepTimes:
    """The step's totals from the timed step ``g`` (:func:`tpsim.training.step.time_step`):
    per-GPU means over the stages (every stage has as many GPUs)."""
    par = setup.parallelism
    splits, T = stage_splits(g, par.pp)
    for r, split in enumerate(splits):         # compute slowed beside its DP collectives
        split["busy"]["dp"] += g.lost_s(f"stage{r}")
    stages = tuple(stage_times(setup, r, splits[r]) for r in range(par.pp))

    def mean(field):
        return sum(getattr(s, field) for s in stages) / len(stages)
    flops, hardware = mean("flops"), mean("hardware_flops")
    return StepTimes(
        **{f.name: mean(f.name) for f in dataclasses.fields(TimeSplit)},
        time_s=T, tokens_per_s=global_batch * seq_len / T, tflops_per_gpu=flops / T / 1e12,
        mfu=flops / T / peak, hfu=hardware / T / peak, flops=flops, hardware_flops=hardware,
        ideal_bubble_fraction=(par.pp - 1) / (setup.m * setup.v), micro_batches=setup.m,
        global_batch=global_batch, pp=par.pp, dp=par.dp, virtual_stages=setup.v,
        schedule="1f1b" if setup.v == 1 else "interleaved-1f1b",
        distributed_optimizer=setup.distributed_optimizer,
        overlap_grad_reduce=setup.overlap_grad_reduce, p2p_bytes=setup.p2p_bytes,
        stages=stages,
        ep_comm_exposed_s=setup.m * sum(c.part.ep_exposed_s for c in setup.chunks) / par.pp)


def stage_memories(setup, device, headroom: float = 0.0) -> tuple[Memory, ...]:
    """Each stage's weights, gradients, optimizer state (sharded d ways with the distributed
    optimizer; ZeRO-2/3: :func:`tpsim.training.shard_state.state_bytes`) and the activations of
    the micro-batches in flight at its fullest moment
    (:func:`tpsim.training.terms.in_flight_chunks`), against the ``device``'s memory less its
    reserve, the run's ``headroom`` and the allocator's waste on the stage's churned bytes
    (:meth:`~tpsim.cluster.topology.Device.usable_bytes`)."""
    par = setup.parallelism
    capacity = device.memory_bytes

    def usable(churned: float) -> float:
        return device.usable_bytes(headroom, churned)
    sh = setup.sharding
    out = []
    for r in range(par.pp):
        live = terms.in_flight_chunks(par.pp, setup.v, setup.m, r)
        acts = sum(n * setup.chunks[c * par.pp + r].part.saved_bytes for c, n in enumerate(live))
        state = state_bytes(setup.stage_params[r], setup.precision, sh, par.dp, True, max(
            largest_unit(setup.chunks[c * par.pp + r].units) for c in range(setup.v)),
            stage_experts(setup, r)) if sh.stage >= 2 else None
        out.append(stage_memory(setup.stage_params[r], setup.precision, acts, capacity,
                                setup.optimizer_shards(r), r, sum(live), usable, state,
                                sh.stage or int(setup.distributed_optimizer),
                                setup.offloaded_bytes,
                                setup.plain_params[r] if setup.plain_params else 0,
                                setup.tp_buffers_bytes))
    return tuple(out)


_STEPS = Memo("step simulations: times and memory", 512)


def simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float,
                  headroom: float = 0.0) -> StepResult:
    """Time the step (:func:`tpsim.training.step.time_step`), account for it. The times and
    memory are memoised per (setup, topology, ...) by value: a pure function of frozen
    inputs, which sweeps repeat; the op-by-op run is built only when asked."""
    times, memory = _STEPS.get((setup, topo, global_batch, seq_len, peak, headroom),
                               _simulate_step, setup, topo, global_batch, seq_len, peak, headroom)
    return StepResult(times, memory, setup, topo)


def _simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float,
                   headroom: float) -> tuple:
    g = time_step(setup, topo)
    return (step_times(g, setup, global_batch, seq_len, peak),
            stage_memories(setup, topo.device, headroom))
