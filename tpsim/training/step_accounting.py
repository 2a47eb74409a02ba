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
from .step_timing import KINDS

CATEGORIES = ("dp", "pp", "tp", "optimizer")


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


_KIND = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class _Intervals:
    """A timed step's ops as arrays for the accounting: ``start``, ``end``, ``kind`` (codes of
    :data:`_KIND`) per op; per stage its compute stream's ops and the p2p transfers it sends
    or receives (index arrays); the step end's global categories; the flush (the last chunk's
    end on any stage); the makespan."""
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    own: tuple
    p2p: tuple
    step_end: dict
    flush: float
    makespan: float


def _intervals(g, pp: int) -> _Intervals:
    start, end = np.array(g.start), np.array(g.end)
    kind = np.array(g.kind, dtype=np.int8)
    own = tuple(np.array(g.on.get(f"stage{r}", ()), dtype=np.intp) for r in range(pp))
    links: list[list] = [[] for _ in range(pp)]
    step_end = {c: [] for c in (*CATEGORIES, "embedding")}
    for s, ids in g.on.items():
        if s.startswith("p2p "):
            for r in set(map(int, s[4:].split(">"))):
                links[r].append(ids)
            continue
        cat = ("dp" if s.endswith(".dp") else "tp" if s.endswith(".sync") else
               "embedding" if s == "embedding" else "optimizer" if s == "grad-norm" else None)
        if cat:
            step_end[cat] += [(g.start[i], g.end[i]) for i in ids]
    flush = 0.0
    for ids in own:
        done = ids[kind[ids] == _KIND["compute"]]
        if len(done):
            flush = max(flush, float(end[done].max()))
        step_end["optimizer"] += [(g.start[i], g.end[i])
                                  for i in ids[kind[ids] == _KIND["optimizer"]].tolist()]
    p2p = tuple(np.concatenate([np.array(x, dtype=np.intp) for x in ls]) if ls else
                np.zeros(0, np.intp) for ls in links)
    return _Intervals(start, end, kind, own, p2p, step_end, flush,
                      float(end.max()) if len(end) else 0.0)


def _before_flush(iv: _Intervals, stage: int) -> tuple[float, float]:
    """(own p2p, bubble) of ``stage`` in [0, flush]: :func:`idle_split` of its compute
    stream's ops and its own transfers, as arrays: the intervals' ends sorted, the busy and p2p
    counts as running sums, each idle piece added in time order (the same sums)."""
    t0, t1 = 0.0, iv.flush
    if t1 <= t0:
        return 0.0, 0.0
    own, p2p = iv.own[stage], iv.p2p[stage]
    a = np.concatenate([iv.start[own], iv.start[p2p]])
    b = np.concatenate([iv.end[own], iv.end[p2p]])
    is_p2p = np.zeros(len(a), bool)
    is_p2p[len(own):] = True
    keep = (b > t0) & (a < t1)
    a, b, is_p2p = np.maximum(a[keep], t0), np.minimum(b[keep], t1), is_p2p[keep]
    x = np.concatenate([a, b, [t0, t1]])
    up = np.concatenate([np.ones(len(a), np.int64), -np.ones(len(b), np.int64), [0, 0]])
    mark = np.concatenate([is_p2p, is_p2p, [False, False]])
    order = np.argsort(x, kind="stable")
    x, up, mark = x[order], up[order], mark[order]
    busy = np.cumsum(np.where(mark, 0, up))[:-1]
    p2p_on = np.cumsum(np.where(mark, up, 0))[:-1]
    gap = np.diff(x)
    idle = busy == 0
    pp_gaps, bubble_gaps = gap[idle & (p2p_on > 0)], gap[idle & (p2p_on == 0)]
    return (float(np.cumsum(pp_gaps)[-1]) if len(pp_gaps) else 0.0,
            float(np.cumsum(bubble_gaps)[-1]) if len(bubble_gaps) else 0.0)


def stage_times(iv: _Intervals, setup, stage: int) -> StageTimes:
    """:class:`~tpsim.sim.result.StageTimes` of ``stage`` from the timed step: before the
    pipeline's last chunk ends anywhere (the flush), the stage's idle time is its own p2p or
    the bubble; after it, whatever of the step's end is running (module docstring), else the
    bubble."""
    p, m, T = setup.parallelism.pp, setup.m, iv.makespan
    mine = [setup.chunks[c * p + stage] for c in range(setup.v)]
    own = iv.own[stage]
    busy = {"compute": 0.0, "dp": 0.0, "optimizer": 0.0}
    for name in ("dp", "optimizer"):
        for i in own[iv.kind[own] == _KIND[name]].tolist():
            busy[name] = busy[name] + iv.end[i] - iv.start[i]
    pp_a, bubble_a = _before_flush(iv, stage)
    late = own[iv.end[own] > iv.flush]
    own_busy = list(zip(iv.start[late].tolist(), iv.end[late].tolist()))
    cats = dict(iv.step_end, pp=iv.step_end["embedding"] if stage in (0, p - 1) else [])
    end, bubble_b = idle_split(iv.flush, T, own_busy, [cats[c] for c in CATEGORIES])
    idle = dict(zip(CATEGORIES, end))
    per_mb = Part.total([(c.part, 1) for c in mine])
    return StageTimes(
        compute_s=m * per_mb.compute_s, tp_comm_exposed_s=m * per_mb.tp_exposed_s + idle["tp"],
        host_wait_s=m * per_mb.host_wait_s, bubble_s=bubble_a + bubble_b,
        pp_comm_exposed_s=pp_a + idle["pp"], dp_comm_exposed_s=busy["dp"] + idle["dp"],
        optimizer_s=busy["optimizer"] + idle["optimizer"], stage=stage,
        layers=sum(c.layers for c in mine), forward_s=per_mb.forward_s,
        backward_s=per_mb.backward_s, flops=m * per_mb.flops,
        hardware_flops=m * per_mb.hardware_flops)


def step_times(g, setup, global_batch: int, seq_len: int, peak: float) -> StepTimes:
    """The step's totals from the timed step ``g`` (:func:`tpsim.training.step.time_step`):
    per-GPU means over the stages (every stage has as many GPUs)."""
    par = setup.parallelism
    iv = _intervals(g, par.pp)
    T = iv.makespan
    stages = tuple(stage_times(iv, setup, r) for r in range(par.pp))

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
