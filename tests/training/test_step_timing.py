"""The step timed in one pass (tpsim.training.step_timing) against the step graph timed event by
event (StepGraph.run: a topological order, then each op at the max of its inputs' and its
stream's ends): the same start and end of every op on every stream, bit for bit; the makespan
never shrinks when an op takes longer; the stage programs as integers are the schedule's."""
from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.spec.model import ModelConfig
from tpsim.base.schema import from_mapping
from tpsim.training import step_accounting
from tpsim.training.pipeline import BACKWARD, Compute, add_pipeline, pipeline_schedule
from tpsim.training.predict import predict
from tpsim.training.step import build_step, time_step
from tpsim.training.step_accounting import idle_split
from tpsim.training.step_graph import StepGraph
from tpsim.training import step_idle
from tpsim.training.step_idle import idle
from tpsim.training.step_programs import Shape
from tpsim.training.torch_pipeline import TORCH, runtime_schedule
from tpsim.training.step_timing import KINDS, TimedGraph, time_pipeline

A100 = load_topology("dgx-a100-hdr-cluster")


def by_stream(streams, start, end, kinds):
    out = {}
    for s, a, b, k in zip(streams, start, end, kinds):
        out.setdefault(s, []).append((a, b, k))
    return out


def timed(g: TimedGraph) -> dict:
    return {s: [(g.start[i], g.end[i], KINDS[g.kind[i]]) for i in ids]
            for s, ids in g.on.items() if ids}


def reference(g: StepGraph) -> dict:
    run = g.run()
    tl = run.timeline
    return by_stream(tl.streams, tl.start, tl.end, run.kinds)


@st.composite
def pipelines(draw):
    """A schedule with random durations: per (stage, chunk, kind), per directed link, and the
    last backward cut into random pieces (or not)."""
    p = draw(st.integers(1, 5))
    v = draw(st.integers(1, 3)) if p > 1 else 1
    m = p * draw(st.integers(1, 3)) if v > 1 else draw(st.integers(1, 2 * p + 2))
    dur = st.floats(0.0, 4.0, allow_nan=False)
    chunk = {(r, c, k): draw(dur) for r in range(p) for c in range(v) for k in "FB"}
    link = {(a, b): draw(dur) for a in range(p) for b in range(p)}
    cut = draw(st.booleans())
    pieces = {(r, c): [draw(st.floats(0.0, 1.0)) for _ in range(draw(st.integers(1, 3)))]
              for r in range(p) for c in range(v)}
    runtime = draw(st.sampled_from(("megatron", TORCH)))
    return p, m, v, chunk, link, (pieces if cut else None), runtime


def both(p, m, v, chunk, link, pieces, runtime="megatron"):
    """The schedule into a StepGraph (reference) and timed in one pass."""
    def split(r, c):
        return [(f"piece{i}", t) for i, t in enumerate(pieces[r, c])]
    args = (lambda r, c, k: chunk[r, c, k], lambda a, b: link[a, b], split if pieces else None)
    ref = StepGraph()
    ref_ops = add_pipeline(ref, runtime_schedule(p, m, v, runtime), *args)
    fast = TimedGraph()
    fast_ops = time_pipeline(fast, Shape(p, m, v, runtime), *args)
    return ref, ref_ops, fast, fast_ops


@settings(max_examples=150, deadline=None)
@given(pipelines())
def test_one_pass_equals_the_event_by_event_timing(case):
    ref, ref_ops, fast, fast_ops = both(*case)
    assert timed(fast) == reference(ref)
    run = ref.run()
    for a, b in zip(ref_ops, fast_ops):       # what the step's end waits for
        assert [run.end(i) for i in a.end] == [fast.end[i] for i in b.end]
        assert {c: [run.end(i) for i in ids] for c, ids in a.last_backward.items()} == \
            {c: [fast.end[i] for i in ids] for c, ids in b.last_backward.items()}


@settings(max_examples=60, deadline=None)
@given(pipelines(), st.data())
def test_a_longer_op_never_shortens_the_step(case, data):
    p, m, v, chunk, link, pieces, runtime = case
    g0 = TimedGraph()
    time_pipeline(g0, Shape(p, m, v, runtime), lambda r, c, k: chunk[r, c, k],
                  lambda a, b: link[a, b])
    grown = dict(chunk)
    key = data.draw(st.sampled_from(sorted(chunk)))
    grown[key] += data.draw(st.floats(0.0, 5.0))
    g1 = TimedGraph()
    time_pipeline(g1, Shape(p, m, v, runtime), lambda r, c, k: grown[r, c, k],
                  lambda a, b: link[a, b])
    assert g1.makespan_s >= g0.makespan_s


@pytest.mark.parametrize("runtime", ["megatron", TORCH])
@pytest.mark.parametrize("p, m, v", [(1, 3, 1), (3, 4, 1), (4, 2, 1), (2, 4, 2), (4, 8, 3)])
def test_integer_programs_are_the_schedule(p, m, v, runtime):
    """Each stage's entries, in order: a compute's chunk and direction, a batch's messages."""
    sched, sh = runtime_schedule(p, m, v, runtime), Shape(p, m, v, runtime)
    V = p * v
    for prog, ints in zip(sched.stages, sh.progs):
        assert len(prog) == len(ints)
        for e, c in zip(prog, ints):
            if isinstance(e, Compute):
                last = e.kind == BACKWARD and e.microbatch == m - 1
                assert c == 2 * e.chunk + (e.kind == BACKWARD) + 2 * v * last
            else:
                want = [2 * (msg.microbatch * V + msg.src) + (msg.kind == "gradient")
                        for msg in (*e.sends, *e.recvs)]
                assert list(c) == want
                for msg, k in zip(e.sends, c):
                    assert sh.links[sh.link[k]] == (msg.src % p, msg.dst % p)


def test_a_deadlock_is_reported():
    """A link whose later transfer is posted before its earlier one cannot run."""
    sh = Shape(2, 2, 1)
    sh.after[:], sh.next[:] = [-1] * len(sh.after), [-1] * len(sh.next)
    sh.progs[1] = sh.progs[1][::-1]
    with pytest.raises(RuntimeError, match="deadlocks"):
        time_pipeline(TimedGraph(), sh, lambda r, c, k: 1.0, lambda a, b: 1.0)


def gpt(**kw) -> ModelConfig:
    data = {"name": "gpt-test", "layers": 12, "hidden": 1024, "heads": 16, "vocab": 50257,
            "seq_len": 1024, "dropout": 0.1, "bias": True, "tie_embeddings": True, **kw}
    return from_mapping(ModelConfig, data, "<test>")


@pytest.mark.parametrize("kw", [
    dict(tp=2, pp=4, dp=2, global_batch=16),
    dict(tp=2, pp=2, dp=4, global_batch=32, virtual_stages=3, sequence_parallel=True),
    dict(tp=4, pp=3, dp=2, global_batch=12, overlap_grad_reduce=False,
         distributed_optimizer=True),
    dict(tp=8, pp=2, global_batch=6, scatter_gather_p2p=True),
    dict(tp=1, pp=1, dp=8, global_batch=16, distributed_optimizer=True),
    dict(tp=2, pp=4, global_batch=8, first_stage_layers=2, last_stage_layers=4),
])
def test_the_whole_step_equals_its_graph(kw):
    """The step's end (DP buckets, SP and embedding all-reduces, the optimizer) included: every
    stream's ops as the op-by-op graph runs them, and the accounting reads the same step."""
    pred = predict(gpt(), A100, **kw)
    setup, topo = pred.step_run._setup, pred.step_run._topo
    assert pred.step_run._run is None                  # the op-by-op run waits to be asked
    assert timed(time_step(setup, topo)) == reference(build_step(setup, topo))
    assert pred.step_run.run.timeline.makespan_s == pred.step.time_s
    assert pred.step.schedule == pred.step_run.schedule.name


@pytest.mark.parametrize("kw", [
    dict(tp=2, pp=4, dp=2, global_batch=64),
    dict(tp=2, pp=2, dp=4, global_batch=32, virtual_stages=3, sequence_parallel=True),
    dict(tp=4, pp=3, dp=2, global_batch=24, overlap_grad_reduce=False,
         distributed_optimizer=True),
])
def test_the_sweep_and_the_arrays_split_a_step_alike(kw):
    """A small step is split by the sweep, a large one on arrays: the same numbers."""
    pred = predict(gpt(), A100, **kw)
    g = time_step(pred.step_run._setup, pred.step_run._topo)
    pp = kw["pp"]
    assert step_idle._swept(g, pp) == step_idle._arrays(g, pp)


def test_the_memo_keeps_numbers_only():
    step_accounting._STEPS.clear()
    predict(gpt(), A100, tp=2, pp=2, global_batch=8)
    (value,) = step_accounting._STEPS._data.values()
    times, memory = value
    assert type(times).__name__ == "StepTimes" and all(type(x).__name__ == "Memory"
                                                       for x in memory)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.data())
def test_idle_for_all_stages_is_the_sweep(pp, data):
    """Each stage's split of [t0, t1] equals :func:`idle_split` on its own intervals."""
    rnd = random.Random(data.draw(st.integers(0, 10**6)))
    grid = [rnd.choice([0.0, 0.5, 1.0, 1.5, 2.0]) + rnd.random() * 3 for _ in range(40)]

    def intervals(n):
        out = []
        for _ in range(n):
            a, b = sorted(rnd.sample(grid, 2))
            out.append((rnd.randrange(pp), a, b))
        return out
    busy, sets = intervals(rnd.randrange(12)), [intervals(rnd.randrange(8)) for _ in range(3)]
    t0, t1 = sorted(rnd.sample(grid, 2))

    def arrays(rows):
        import numpy as np
        return tuple(np.array([r[i] for r in rows], dtype=float if i else np.intp)
                     for i in range(3))
    got, bubble = idle(t0, t1, pp, arrays(busy), [arrays(s) for s in sets])
    for r in range(pp):
        def mine(rows):
            return [(a, b) for s, a, b in rows if s == r]
        want, want_bubble = idle_split(t0, t1, mine(busy), [mine(s) for s in sets])
        assert [g[r] for g in got] == want and bubble[r] == want_bubble


@pytest.mark.parametrize("reduction, b1_end, s1_end", [
    (1.0, 1 + 2 + 0.5 + 3 + 0.2 * 1.0, 1 + 2 + 0.5 + 3 + 0.2 * 1.0 + 0.25),
    (10.0, 3.5 + 3 / 0.8, 3.5 + 3 / 0.8 + 0.25 / 0.8),
])
def test_a_bucket_reduction_slows_the_backward_beside_it(reduction, b1_end, s1_end):
    """One stage, one micro-batch: the forward (1 s), then the last backward cut into bucket 0
    (2 s), its pre-scale (0.5 s), bucket 1 (3 s), its pre-scale (0.25 s). Bucket 0's reduction
    R runs from 3.5 s beside bucket 1, which runs at 1 - I = 0.8 while it does: a short R
    (1 s) costs it I R, bucket 1 ends at 3.5 + 3 + 0.2 R; a long one (10 s) outlasts it,
    3.5 + 3 / 0.8, and slows the pre-scale after it too (0.25 / 0.8)."""
    g = TimedGraph()
    pieces = [("bucket0", 2.0), ("bucket0.scale", 0.5), ("bucket1", 3.0), ("bucket1.scale", 0.25)]
    ops = time_pipeline(g, Shape(1, 1, 1), lambda r, c, k: 1.0 if k == "F" else 5.75,
                        lambda a, b: 0.0, lambda r, c: pieces,
                        reduce=lambda r, c: [reduction, 1.0], interference=0.2)
    b1, s1 = ops[0].last_backward[0][2:]
    assert g.end[b1] == pytest.approx(b1_end, rel=1e-12)
    assert g.end[s1] == pytest.approx(s1_end, rel=1e-12)
    assert g.lost_s("stage0") == pytest.approx(b1_end - 6.5 + (s1_end - b1_end - 0.25), rel=1e-12)


def _with_interference(topo, i: float):
    return dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                                comm_compute_interference=i))


@settings(max_examples=12, deadline=None)
@given(pp=st.sampled_from([1, 2]), dp=st.sampled_from([2, 4]), v=st.sampled_from([1, 2]),
       do=st.booleans(), opg=st.booleans(), i=st.floats(0.05, 0.9))
def test_interference_only_ever_slows_the_step(pp, dp, v, do, opg, i):
    """Without interference no compute op loses time beside a DP collective (the step as a pure
    max-plus graph of its ops' own lengths); with more of it the step is never faster."""
    kw = dict(tp=2, pp=pp, dp=dp, virtual_stages=v if pp > 1 else 1, global_batch=4 * dp * pp,
              distributed_optimizer=do, overlap_param_gather=do and opg)
    times = []
    for x in (0.0, i / 2, i):
        pred = predict(gpt(layers=8), _with_interference(A100, x), **kw)
        lost = time_step(pred.step_run._setup, pred.step_run._topo).lost
        assert x > 0 or not lost
        times.append(pred.step.time_s)
    assert times[0] <= times[1] <= times[2]
    assert times[2] > times[0] or not lost
