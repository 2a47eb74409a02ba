"""The step bound's cool-down (tpsim.training.step_slowed) against the one-pass step timing
with the gradient reductions slowing the compute beside them (tpsim.training.step_timing): with
it the bound stays below every simulated end of a last backward, and where a reduction runs
beside the backwards after a chunk's last one it is above the path rows alone."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tpsim.search.p2p import inner_transfer
from tests.pipeline_vars import chunk_times, draw_times, transfer_times
from tpsim.training.step_bound import bound_ends, chain_forms, shape_forms
from tpsim.training.step_slowed import slowed_ends
from tpsim.training.step_programs import shape as step_shape
from tpsim.training.step_timing import TimedGraph, time_pipeline


def simulated_ends(p, v, m, layers, t, scale, c, reduce, loss, first=1.0):
    """{(stage, chunk): end of its last backward (with its pre-scale kernels)}: chunk times
    from the bound's variables t = (f, b, f_emb, b_emb, f_out, b_out), each last backward two
    buckets (``first`` of it, then the rest; ``first`` = 1: one) each followed by half of its
    pre-scale ``scale[g]`` and its reduction (the first as long as the last, ``reduce[g]``) on
    the stage's DP stream, the compute beside them at 1 - ``loss`` of its speed."""
    chunk_s, transfer = chunk_times(p, v, layers, t), transfer_times(p, c)

    def split(stage, chunk):
        b, s = chunk_s(stage, chunk, "B"), scale[chunk * p + stage]
        if first == 1.0:
            return [("grads", b), ("scale", s)]
        return [("a", first * b), ("a.scale", s / 2), ("b", (1 - first) * b), ("b.scale", s / 2)]
    g = TimedGraph()
    ops = time_pipeline(g, step_shape(p, m, v), chunk_s, transfer, split, None,
                        lambda stage, chunk: [reduce[chunk * p + stage]] * (1 + (first < 1)),
                        loss)
    return {(r, ch): g.end[ops[r].last_backward[ch][-1]] for r in range(p) for ch in range(v)}


def bounds(p, v, m, layers, t, scale, c, reduce, loss, slowed=True):
    shape = shape_forms(p, v, m, tuple(layers))
    x = np.concatenate([t, scale, c, inner_transfer(np.array(c), p, v)])[None, :]
    chains = chain_forms(p, v, m, tuple(layers)) if slowed and v > 1 else None
    return dict(zip(shape.targets, slowed_ends(shape, chains, x, np.array([reduce]), loss)[0]))


@st.composite
def pipelines(draw):
    p = draw(st.integers(2, 5))
    v = draw(st.integers(2, 3))
    m = p * draw(st.integers(1, 3))
    layers = [draw(st.integers(1, 3)) for _ in range(p * v)]
    t, scale, c = draw_times(draw, st, p, v)
    reduce = [draw(st.floats(0.0, 8.0)) for _ in range(p * v)]
    return p, v, m, layers, t, scale, c, reduce, draw(st.floats(0.0, 1.0)), \
        draw(st.sampled_from([1.0, 0.3, 0.8]))


@settings(max_examples=80, deadline=None)
@given(pipelines())
def test_slowed_bound_never_exceeds_the_slowed_step(case):
    """Every bounded end, the cool-down included, is at most the simulated one,
    whatever the layers per virtual stage, the reductions' lengths, the buckets and the
    interference (0: no slowdown; 1: no compute beside a reduction)."""
    sim = simulated_ends(*case)
    for target, lb in bounds(*case[:-1]).items():
        assert lb <= sim[target] * (1 + 1e-9) + 1e-12, (case, target, lb, sim[target])


def test_the_cool_down_chain_tightens_the_bound_beside_reductions():
    """Four stages, three chunks, twelve micro-batches, 0.1 s transfers, every chunk's last
    reduction 3 s at I = 0.5: each stage's first backward after a chunk's last one runs beside
    that reduction on the backward chain of micro-batch m - p down every virtual stage; the
    cool-down's bound of the first stage's end is above the path rows' and below the
    simulation, and without interference it is the unslowed simulation's."""
    p, v, m, layers = 4, 3, 12, [2] * 12
    t, scale, c, reduce = [1.0, 2.0, 0, 0, 0, 0], [0.0] * 12, [0.1] * 4, [3.0] * 12
    rows = bounds(p, v, m, layers, t, scale, c, reduce, 0.5, False)[0, 0]
    slow = bounds(p, v, m, layers, t, scale, c, reduce, 0.5)[0, 0]
    sim = simulated_ends(p, v, m, layers, t, scale, c, reduce, 0.5)[0, 0]
    assert rows < slow <= sim * (1 + 1e-12)
    plain = simulated_ends(p, v, m, layers, t, scale, c, reduce, 0.0)[0, 0]
    assert bounds(p, v, m, layers, t, scale, c, reduce, 0.0)[0, 0] == pytest.approx(plain)
