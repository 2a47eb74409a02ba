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

from . import terms
from ..base.memo import Memo
from ..sim.memory import Memory, stage_memory
from ..sim.result import StageTimes, StepTimes, TimeSplit
from .step import Part, build_step

CATEGORIES = ("dp", "pp", "tp", "optimizer")


@dataclass(frozen=True)
class StepResult:
    """A simulated step: its times, each stage's memory, the run and the schedule it ran."""
    times: StepTimes
    memory: tuple[Memory, ...]
    run: object
    schedule: object


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


@dataclass(frozen=True)
class _Intervals:
    """A run's ops grouped once for the accounting: per stream (start, end, kind); the step
    end's global categories; the flush (the last chunk's end on any stage)."""
    streams: dict
    step_end: dict
    flush: float


def _intervals(run) -> _Intervals:
    tl = run.timeline
    streams: dict[str, list] = {}
    for i, s in enumerate(tl.streams):
        streams.setdefault(s, []).append((tl.start[i], tl.end[i], run.kinds[i]))
    step_end = {c: [] for c in (*CATEGORIES, "embedding")}
    flush = 0.0
    for s, ops in streams.items():
        if s.startswith("stage") and "." not in s:       # a stage's compute stream
            flush = max([flush] + [b for _, b, k in ops if k == "compute"])
            step_end["optimizer"] += [(a, b) for a, b, k in ops if k == "optimizer"]
            continue
        cat = ("dp" if s.endswith(".dp") else "tp" if s.endswith(".sync") else
               "embedding" if s == "embedding" else "optimizer" if s == "grad-norm" else None)
        if cat:
            step_end[cat] += [(a, b) for a, b, _ in ops]
    return _Intervals(streams, step_end, flush)


def _own_p2p(iv: _Intervals, stage: int) -> list:
    """The intervals of the p2p transfers ``stage`` sends or receives."""
    out = []
    for s, ops in iv.streams.items():
        if s.startswith("p2p ") and stage in map(int, s[4:].split(">")):
            out += [(a, b) for a, b, _ in ops]
    return out


def stage_times(run, setup, stage: int, iv: _Intervals | None = None) -> StageTimes:
    """:class:`~tpsim.sim.result.StageTimes` of ``stage`` from the run: before the pipeline's last
    chunk ends anywhere (the flush), the stage's idle time is its own p2p or the bubble; after
    it, whatever of the step's end is running (module docstring), else the bubble."""
    iv = iv or _intervals(run)
    p, m, T = setup.parallelism.pp, setup.m, run.timeline.makespan_s
    mine = [setup.chunks[c * p + stage] for c in range(setup.v)]
    own = iv.streams.get(f"stage{stage}", [])
    busy = {"compute": 0.0, "dp": 0.0, "optimizer": 0.0}
    for a, b, kind in own:
        busy[kind] = busy.get(kind, 0.0) + b - a
    own_busy = [(a, b) for a, b, _ in own]
    (pp_a,), bubble_a = idle_split(0.0, iv.flush, own_busy, [_own_p2p(iv, stage)])
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


def step_times(run, setup, schedule, global_batch: int, seq_len: int, peak: float) -> StepTimes:
    """The step's totals: per-GPU means over the stages (every stage has as many GPUs)."""
    par = setup.parallelism
    T = run.timeline.makespan_s
    iv = _intervals(run)
    stages = tuple(stage_times(run, setup, r, iv) for r in range(par.pp))

    def mean(field):
        return sum(getattr(s, field) for s in stages) / len(stages)
    flops, hardware = mean("flops"), mean("hardware_flops")
    return StepTimes(
        **{f.name: mean(f.name) for f in dataclasses.fields(TimeSplit)},
        time_s=T, tokens_per_s=global_batch * seq_len / T, tflops_per_gpu=flops / T / 1e12,
        mfu=flops / T / peak, hfu=hardware / T / peak, flops=flops, hardware_flops=hardware,
        ideal_bubble_fraction=(par.pp - 1) / (setup.m * setup.v), micro_batches=setup.m,
        global_batch=global_batch, pp=par.pp, dp=par.dp, virtual_stages=setup.v,
        schedule=schedule.name, distributed_optimizer=setup.distributed_optimizer,
        overlap_grad_reduce=setup.overlap_grad_reduce, p2p_bytes=setup.p2p_bytes,
        stages=stages)


def stage_memories(setup, device, headroom: float = 0.0) -> tuple[Memory, ...]:
    """Each stage's weights, gradients, optimizer state (sharded d ways with the distributed
    optimizer) and the activations of the micro-batches in flight at its fullest moment
    (:func:`tpsim.training.terms.in_flight_chunks`), against the ``device``'s memory less its
    reserve and the run's ``headroom`` (:meth:`~tpsim.cluster.topology.Device.usable_bytes`)."""
    par = setup.parallelism
    capacity, usable = device.memory_bytes, device.usable_bytes(headroom)
    shards = terms.optimizer_shards(par.dp, setup.distributed_optimizer)
    out = []
    for r in range(par.pp):
        live = terms.in_flight_chunks(par.pp, setup.v, setup.m, r)
        acts = sum(n * setup.chunks[c * par.pp + r].part.saved_bytes for c, n in enumerate(live))
        out.append(stage_memory(setup.stage_params[r], setup.dtype, acts, capacity,
                                shards, r, sum(live), usable))
    return tuple(out)


_STEPS = Memo("step simulations", 512)


def simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float,
                  headroom: float = 0.0) -> StepResult:
    """Build the step (:func:`tpsim.training.step.build_step`), run it, account for it. Memoised per
    (setup, topology, ...) by value: a pure function of frozen inputs, which sweeps repeat."""
    return _STEPS.get((setup, topo, global_batch, seq_len, peak, headroom), _simulate_step,
                      setup, topo, global_batch, seq_len, peak, headroom)


def _simulate_step(setup, topo, global_batch: int, seq_len: int, peak: float,
                   headroom: float) -> StepResult:
    g, schedule = build_step(setup, topo)
    run = g.run()
    return StepResult(step_times(run, setup, schedule, global_batch, seq_len, peak),
                      stage_memories(setup, topo.device, headroom), run, schedule)
