"""Where a simulated step's time goes, per pipeline stage, and what each stage holds in memory.

Every GPU of stage r spends the step's time T as

    T = compute + tp_comm_exposed + host_wait          (its chunks: the layers' own split, x m)
        + dp_comm_exposed + optimizer                  (gradient pre-scale, exposed DP collectives;
                                                        optimizer kernels, exposed gradient-norm
                                                        all-reduce)
        + pp_comm_exposed + bubble                     (its compute stream idle: while one of its
                                                        p2p transfers or the tied-embedding
                                                        all-reduce runs; otherwise the bubble)

The idle time of the compute stream is read from the run (:func:`idle_split`). Until the
pipeline's last chunk ends on any stage (the flush), a stage idles for its own p2p transfers
(pp) or for the pipeline (the bubble: a DP reduction running then is hidden by the flush).
After it, each idle moment goes to the first of: any stage's DP collective, the tied-embedding
all-reduce (pp), the TP all-reduce of norm gradients, the gradient norm or optimizer kernels;
the rest to the bubble. For equal stages and free transfers the bubble is (p - 1)(t_f + t_b)/v
on every stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import terms
from ..base.memo import Memo
from ..sim.memory import Memory, stage_memory
from ..sim.result import StageTimes, StepTimes, TimeSplit
from .pipeline import pipeline_schedule
from .step import Part, build_step, time_step
from .step_idle import CATEGORIES, intervals, stage_idle
from .step_timing import KINDS



class StepResult:
    """A simulated step: its times and each stage's memory (what the memo keeps), and, built
    when first asked, the schedule it ran and its ``run``: the step graph op by op with names
    (:meth:`tpsim.training.step_graph.StepGraph.run`, for the trace and the plots)."""
    __slots__ = ("times", "memory", "_setup", "_topo", "_run")

    def __init__(self, times: StepTimes, memory: tuple, setup, topo):
        self.times, self.memory, self._setup, self._topo, self._run = times, memory, setup, topo, None

    @property
    def run(self):
        if self._run is None:
            self._run = build_step(self._setup, self._topo).run()
        return self._run

    @property
    def schedule(self):
        return pipeline_schedule(self._setup.parallelism.pp, self._setup.m, self._setup.v)


def _clip(intervals, t0: float, t1: float) -> list:
    return [(max(a, t0), min(b, t1)) for a, b in intervals if b > t0 and a < t1]


def idle_split(t0: float, t1: float, busy, categories) -> tuple[list[float], float]:
    """Split the time in [t0, t1] that ``busy`` intervals leave free: to each list of intervals
    in ``categories`` (first match wins) what it covers of that free time; the rest is returned
    last (the bubble). One sweep over the intervals' ends."""
    out, bubble = [0.0] * len(categories), 0.0
    if t1 <= t0:
        return out, bubble
    events = [(x, 0, d) for a, b in _clip(busy, t0, t1) for x, d in ((a, 1), (b, -1))]
    for k, cat in enumerate(categories, 1):
        events += [(x, k, d) for a, b in _clip(cat, t0, t1) for x, d in ((a, 1), (b, -1))]
    events.append((t1, 0, 0))
    events.sort()
    live = [0] * (len(categories) + 1)
    t = t0
    for x, k, d in events:
        if x > t and not live[0]:
            hit = next((j for j in range(1, len(live)) if live[j]), 0)
            if hit:
                out[hit - 1] += x - t
            else:
                bubble += x - t
        t = max(t, x)
        live[k] += d
    return out, bubble


def _busy(iv, pp: int) -> list[dict]:
    """Per stage, the time its compute stream runs DP kernels (the gradients' pre-scale) and
    optimizer kernels, each op's end - start added in stream order."""
    out = [{"dp": 0.0, "optimizer": 0.0} for _ in range(pp)]
    names = {KINDS.index(k): k for k in ("dp", "optimizer")}
    pick = np.isin(iv.kind[iv.own], list(names))
    start, end, kind = iv.start.tolist(), iv.end.tolist(), iv.kind.tolist()
    for r, i in zip(iv.own_stage[pick].tolist(), iv.own[pick].tolist()):
        busy = out[r]
        name = names[kind[i]]
        busy[name] = busy[name] + end[i] - start[i]
    return out


def stage_times(setup, stage: int, split: dict) -> StageTimes:
    """:class:`~tpsim.sim.result.StageTimes` of ``stage`` from the timed step's ``split`` of its
    idle time (:func:`tpsim.training.step_idle.stage_idle`): before the pipeline's last chunk
    ends anywhere (the flush), its own p2p (``pp_a``) or the bubble (``bubble_a``); after it,
    whatever of the step's end is running (``idle``: module docstring), else the bubble
    (``bubble_b``); ``busy``: its own DP and optimizer kernels."""
    p, m = setup.parallelism.pp, setup.m
    mine = [setup.chunks[c * p + stage] for c in range(setup.v)]
    idle, busy = split["idle"], split["busy"]
    per_mb = Part.total([(c.part, 1) for c in mine])
    return StageTimes(
        compute_s=m * per_mb.compute_s, tp_comm_exposed_s=m * per_mb.tp_exposed_s + idle["tp"],
        host_wait_s=m * per_mb.host_wait_s, bubble_s=split["bubble_a"] + split["bubble_b"],
        pp_comm_exposed_s=split["pp_a"] + idle["pp"], dp_comm_exposed_s=busy["dp"] + idle["dp"],
        optimizer_s=busy["optimizer"] + idle["optimizer"], stage=stage,
        layers=sum(c.layers for c in mine), forward_s=per_mb.forward_s,
        backward_s=per_mb.backward_s, flops=m * per_mb.flops,
        hardware_flops=m * per_mb.hardware_flops)


def _splits(g, pp: int) -> tuple[list[dict], float]:
    """Per stage its idle split (:func:`stage_times`), and the makespan."""
    iv = intervals(g, pp)
    (pp_a, bubble_a), late, bubble_b = stage_idle(iv, pp)
    busy = _busy(iv, pp)
    return [{"pp_a": float(pp_a[r]), "bubble_a": float(bubble_a[r]),
             "bubble_b": float(bubble_b[r]), "busy": busy[r],
             "idle": {c: float(late[c][r]) for c in CATEGORIES}} for r in range(pp)], iv.makespan


def step_times(g, setup, global_batch: int, seq_len: int, peak: float) -> StepTimes:
    """The step's totals from the timed step ``g`` (:func:`tpsim.training.step.time_step`):
    per-GPU means over the stages (every stage has as many GPUs)."""
    par = setup.parallelism
    splits, T = _splits(g, par.pp)
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
        stages=stages)


def stage_memories(setup, capacity_bytes: float) -> tuple[Memory, ...]:
    """Each stage's weights, gradients, optimizer state (sharded d ways with the distributed
    optimizer) and the activations of the micro-batches in flight at its fullest moment
    (:func:`tpsim.training.terms.in_flight_chunks`)."""
    par = setup.parallelism
    shards = terms.optimizer_shards(par.dp, setup.distributed_optimizer)
    out = []
    for r in range(par.pp):
        live = terms.in_flight_chunks(par.pp, setup.v, setup.m, r)
        acts = sum(n * setup.chunks[c * par.pp + r].part.saved_bytes for c, n in enumerate(live))
        out.append(stage_memory(setup.stage_params[r], setup.dtype, acts, capacity_bytes,
                                shards, r, sum(live)))
    return tuple(out)


_STEPS = Memo("step simulations: times and memory", 512)


def simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float) -> StepResult:
    """Time the step (:func:`tpsim.training.step.time_step`), account for it. The times and
    memory are memoised per (setup, topology, ...) by value: a pure function of frozen
    inputs, which sweeps repeat; the op-by-op run is built only when asked."""
    times, memory = _STEPS.get((setup, topo, global_batch, seq_len, peak), _simulate_step,
                               setup, topo, global_batch, seq_len, peak)
    return StepResult(times, memory, setup, topo)


def _simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float) -> tuple:
    g = time_step(setup, topo)
    return (step_times(g, setup, global_batch, seq_len, peak),
            stage_memories(setup, topo.device.memory_bytes))
