"""The step bound (tpsim.training.step_bound) against the pipeline it bounds: every path family is a real
path of the simulated schedule, so the bound never exceeds the simulated end of any stage's last
backward; for equal stages and free transfers it is the simulation's makespan; its program
positions are the schedule's; rows extrapolated in the number of micro-batches are the rows
built for it."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tpsim.training.pipeline import BACKWARD, Compute, add_pipeline, in_flight, pipeline_schedule
from tpsim.search.price import activation_counts
from tpsim.training.stage_program import Program, chunk_counts
from tpsim.training.step_bound import (_build, affine_base, bound_ends, end_stages, evaluate,
                                       shape_forms, symbolic_forms)
from tpsim.training.step_graph import StepGraph
from tpsim.search.p2p import inner_transfer
from tests.pipeline_vars import chunk_times, draw_times, transfer_times


def simulate_ends(p, v, m, layers, t, scale, c):
    """The pipeline of tpsim.training.pipeline.add_pipeline with chunk times from the bound's variables
    t = (f, b, f_emb, b_emb, f_out, b_out); the last backward of each chunk followed by its
    pre-scale kernel; transfers c[j] between stages j and j + 1, c[p - 1] from last to first.
    Returns {(stage, chunk): end of that chunk's last backward (with its kernel)}, makespan."""
    chunk_s, transfer = chunk_times(p, v, layers, t), transfer_times(p, c)

    def split(stage, chunk):
        return [("grads", chunk_s(stage, chunk, BACKWARD)), ("scale", scale[chunk * p + stage])]
    g = StepGraph()
    ops = add_pipeline(g, pipeline_schedule(p, m, v), chunk_s, transfer, split)
    run = g.run()
    return {(r, ch): run.end(ops[r].last_backward[ch][-1]) for r in range(p)
            for ch in range(v)}, run.timeline.makespan_s


def bound(p, v, m, layers, t, scale, c):
    shape = shape_forms(p, v, m, tuple(layers))
    x = np.concatenate([t, scale, c, inner_transfer(np.array(c), p, v)])
    return dict(zip(shape.targets, bound_ends(shape, x[None, :])[0]))


@st.composite
def pipelines(draw):
    p = draw(st.integers(1, 5))
    v = draw(st.integers(1, 3)) if p > 1 else 1
    m = p * draw(st.integers(1, 4)) if v > 1 else draw(st.integers(1, 3 * p + 2))
    n = draw(st.integers(1, 3))
    layers = [n] * (p * v)
    if v == 1 and p > 1:
        layers[0] = max(1, n - draw(st.integers(0, 1)))
        layers[-1] = max(1, n - draw(st.integers(0, 1)))
    t, scale, c = draw_times(draw, st, p, v)
    return p, v, m, layers, t, scale, c


@settings(max_examples=80, deadline=None)
@given(pipelines())
def test_bound_never_exceeds_the_simulated_ends(case):
    """Each bounded end (the first, second and last stage's last backward of every chunk) is at
    most the simulated one: the rows are weights of real paths of the schedule."""
    p, v, m, layers, t, scale, c = case
    ends, _ = simulate_ends(p, v, m, layers, t, scale, c)
    for target, lb in bound(p, v, m, layers, t, scale, c).items():
        assert lb <= ends[target] * (1 + 1e-9) + 1e-12, (case, target, lb, ends[target])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.floats(0.1, 2.0),
       st.floats(0.1, 4.0))
def test_equal_stages_free_transfers_are_exact(p, v, groups, f, b):
    """Equal chunks (one layer, no ends, no kernels) and free transfers: the bound of the first
    stage's last backward is the makespan, (m v + p - 1)(f + b) per chunk (Narayanan et al.
    2021: the bubble (p - 1)/(m v) of the ideal m v (f + b))."""
    v = v if p > 1 else 1
    m = p * groups
    layers = [1] * (p * v)
    t, scale, c = [f, b, 0, 0, 0, 0], [0.0] * (p * v), [0.0] * p
    ends, makespan = simulate_ends(p, v, m, layers, t, scale, c)
    lb = bound(p, v, m, layers, t, scale, c)[0, 0]
    assert makespan == ends[0, 0]
    assert np.isclose(lb, (m * v + p - 1) * (f + b), rtol=1e-12)
    assert np.isclose(lb, makespan, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 12))
def test_positions_are_the_schedules(p, v, mult):
    """fpos/bpos of the bound's Program put every forward and backward where the schedule of
    tpsim.training.pipeline runs it, on every stage; the warm-up and in-flight counts agree."""
    v = v if p > 1 else 1
    m = p * mult if v > 1 else mult
    sched = pipeline_schedule(p, m, v)
    for k in range(p):
        prog = Program(p, v, m, k)
        computes = [e for e in sched.stages[k] if isinstance(e, Compute)]
        forwards = [i for i, e in enumerate(computes) if e.kind == "F"]
        backwards = [i for i, e in enumerate(computes) if e.kind == "B"]
        assert forwards == [prog.fpos(i) for i in range(m * v)]
        assert backwards == [prog.bpos(i) for i in range(m * v)]
        last = [i for i, e in enumerate(computes) if e.kind == "B" and e.microbatch == m - 1]
        assert sorted(last) == sorted(prog.bpos(prog.last_backward(c)) for c in range(v))
        live = chunk_counts(min(prog.w + 1, prog.total), p, v)
        assert list(live) == in_flight(sched, k)
        f0, f1 = prog.f_range(0, len(computes) - 1)
        assert (f0, f1) == (0, m * v)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 16), st.integers(1, 4), st.integers(2, 12), st.integers(1, 3))
def test_extrapolated_rows_are_the_built_ones(p, v, steps, n):
    """Past affine_base micro-batches the rows grow linearly in m: the extrapolated rows equal
    the rows built for that m."""
    v = v if p > 1 else 1
    step = p if v > 1 else 1
    m = affine_base(p, v) + step * steps
    layers = [n] * (p * v)
    if v == 1 and p > 2:
        layers[0], layers[-1] = max(1, n - 1), max(1, n - 2)
    layers = tuple(layers)
    built = _build(p, v, m)
    a, b = shape_forms(p, v, m, layers), symbolic_forms(p, v, m)
    assert a.slices == b.slices == built.slices
    assert np.array_equal(b.matrix, built.matrix)
    assert np.array_equal(a.matrix, evaluate(built.matrix, layers))


def test_activation_counts_are_in_flight():
    """The memory's activation counts per stage are tpsim.training.pipeline.in_flight's chunks times
    their layers (embedding on the first virtual stage, output layer on the last)."""
    for p, v, m in ((4, 1, 3), (4, 1, 9), (4, 2, 8), (3, 3, 6), (1, 1, 5)):
        layers = tuple(range(1, p * v + 1))
        sched = pipeline_schedule(p, m, v)
        for i, r in enumerate(end_stages(p)):
            live = in_flight(sched, r)
            expect = (sum(n * layers[c * p + r] for c, n in enumerate(live)),
                      live[0] * (r == 0), live[-1] * (r == p - 1))
            assert tuple(activation_counts(p, v, m, layers)[i]) == expect


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))
def test_pieces_shared_across_micro_batches_are_the_built_ones(p, v, m1, m2):
    """Path pieces that do not depend on m (heads, tails) are built once and reused by the
    shapes of every m: a shape built after another reuses them and equals one built alone."""
    from tpsim.training import step_bound
    v = v if p > 1 else 1
    m1, m2 = (m1 * p, m2 * p) if v > 1 else (m1, m2)
    step_bound._PIECES.clear()
    alone = _build(p, v, m2)
    step_bound._PIECES.clear()
    _build(p, v, m1)
    after = _build(p, v, m2)
    assert alone.slices == after.slices
    assert np.array_equal(alone.matrix, after.matrix)
