"""Pipeline schedules as data (Megatron-core's 1F1B and interleaved 1F1B) and their run on
in-order streams: the bubble comes out of the simulation and equals the closed form."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.training.pipeline import (BACKWARD, FORWARD, Compute, P2P, add_pipeline, in_flight,
                            interleaved, interleaved_warmup, one_f_one_b, pipeline_schedule,
                            schedule_table, split_layers, stage_totals)
from tpsim.training.step_graph import StepGraph


def makespan(p, m, v, tf, tb, transfer=0.0):
    """The schedule run with every stage's chunk taking tf/v forward and tb/v backward."""
    g = StepGraph()
    add_pipeline(g, pipeline_schedule(p, m, v), lambda r, c, k: (tf if k == FORWARD else tb) / v,
                 lambda a, b: transfer)
    return g.run().timeline.makespan_s


def computes(prog):
    return [e for e in prog if isinstance(e, Compute)]


def test_one_f_one_b_text():
    """p=3, m=4 by hand: stage r warms up with p-r-1 forwards, then alternates, then drains."""
    assert one_f_one_b(3, 4).text() == "\n".join([
        "stage 0: F0 F1 F2 B0 F3 B1 B2 B3",
        "stage 1: F0 F1 B0 F2 B1 F3 B2 B3",
        "stage 2: F0 B0 F1 B1 F2 B2 F3 B3"])


def test_interleaved_text():
    """p=2, m=4, v=2 by hand from Megatron-core: forwards in table order (mb 0,1 on chunk 0,
    then on chunk 1, then mb 2,3), stage r warms up with (p-r-1)*2 + (v-1)*p forwards
    (4 and 2), backwards in the same order with the chunks reversed."""
    assert schedule_table(4, 2, 2) == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0), (2, 1),
                                       (3, 1)]
    assert [interleaved_warmup(2, 2, r, 4) for r in (0, 1)] == [4, 2]
    assert interleaved(2, 4, 2).text() == "\n".join([
        "stage 0: F0 F1 F0.1 F1.1 F2 B0.1 F3 B1.1 F2.1 B0 F3.1 B1 B2.1 B3.1 B2 B3",
        "stage 1: F0 F1 F0.1 B0.1 F1.1 B1.1 F2 B0 F3 B1 F2.1 B2.1 F3.1 B3.1 B2 B3"])


def test_p2p_batches_follow_megatron():
    """Stage 1 of 3 in steady state: after a forward, send it on and receive the next stage's
    gradient in one batch; after a backward, send the gradient back and receive the next input."""
    prog = one_f_one_b(3, 4).stages[1]
    text = " ".join(str(e) for e in prog)
    assert "F1 [send a1>2, recv g0<2] B0 [send g0>0, recv a2<0] F2" in text
    assert all(e.sends or e.recvs for e in prog if isinstance(e, P2P))


@given(st.integers(1, 8), st.integers(1, 24))
def test_one_f_one_b_runs_every_chunk_once(p, m):
    s = one_f_one_b(p, m)
    for r, prog in enumerate(s.stages):
        c = computes(prog)
        assert sorted((e.kind, e.microbatch) for e in c) == \
            sorted((k, i) for k in (FORWARD, BACKWARD) for i in range(m))
        w = min(p - r - 1, m)                     # warm-up forwards, then one more before B0
        assert next(i for i, e in enumerate(c) if e.kind == BACKWARD) == (w + 1 if w < m else m)
        for i in range(m):
            assert c.index(Compute(FORWARD, i)) < c.index(Compute(BACKWARD, i))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 6), st.integers(1, 4),
       st.floats(0.1, 3.0), st.floats(0.1, 3.0))
def test_bubble_is_the_closed_form(p, groups, v, tf, tb):
    """Equal stages, free transfers: the step takes m (tf + tb) + (p - 1)(tf + tb)/v, i.e. the
    bubble is (p - 1)/(m v) of the ideal (Narayanan et al. 2021, section 2.2), for 1F1B (any
    m, also m < p) and interleaved 1F1B (m a multiple of p)."""
    v = v if p > 1 else 1
    m = groups * p if v > 1 else groups * 3 + p % 3
    ideal = m * (tf + tb)
    bubble = makespan(p, m, v, tf, tb) - ideal
    assert bubble == pytest.approx(ideal * (p - 1) / (m * v), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(1, 3), st.floats(0.0, 0.5),
       st.floats(0.0, 0.5))
def test_slower_transfers_are_never_faster(p, groups, v, t1, extra):
    """Max-plus on in-order streams: the makespan is monotone in every duration."""
    m = groups * p
    assert makespan(p, m, v, 1.0, 2.0, t1 + extra) >= makespan(p, m, v, 1.0, 2.0, t1) - 1e-12


def test_transfers_lengthen_the_pipeline():
    """With blocking p2p each of the 2(p-1) boundary crossings of the first micro-batch's
    forward and last backward adds its transfer (at least) to the step."""
    base = makespan(4, 8, 1, 1.0, 2.0)
    assert makespan(4, 8, 1, 1.0, 2.0, 0.1) >= base + 2 * 3 * 0.1 - 1e-12


@pytest.mark.parametrize("p, m", [(4, 8), (4, 2), (8, 8), (1, 5)])
def test_in_flight_1f1b(p, m):
    """Stage r of 1F1B holds min(p - r, m) micro-batches at once (Korthikanti et al. 2022, 4.2.3:
    the first stage p of them)."""
    s = one_f_one_b(p, m)
    assert [in_flight(s, r) for r in range(p)] == [[min(p - r, m)] for r in range(p)]


def test_in_flight_interleaved():
    """Stage r holds its warm-up plus one chunks: (p - r - 1) 2 + (v - 1) p + 1."""
    p, m, v = 4, 8, 3
    s = interleaved(p, m, v)
    for r in range(p):
        assert sum(in_flight(s, r)) == (p - r - 1) * 2 + (v - 1) * p + 1


def test_split_layers():
    assert split_layers(96, 8) == [12] * 8
    assert split_layers(96, 8, 3) == [4] * 24
    assert split_layers(30, 4, first=6, last=6) == [6, 9, 9, 6]
    assert split_layers(10, 2, first=4) == [4, 6]
    for bad in (dict(layers=10, pp=4), dict(layers=24, pp=4, v=4),
                dict(layers=30, pp=4, first=5, last=6), dict(layers=12, pp=2, v=2, first=3),
                dict(layers=32, pp=4, v=2, first=7, last=7), dict(layers=4, pp=3, first=2, last=2)):
        with pytest.raises(ValueError):
            split_layers(**bad)


def test_an_uneven_split_names_what_it_was_given():
    """One stage with an end stage's layers: said so; an unset end as '-', not None."""
    with pytest.raises(ValueError, match="32 layers on one stage: --first-stage-layers"):
        split_layers(32, 1, first=3)
    assert split_layers(32, 1, first=32) == [32]
    with pytest.raises(ValueError, match="first/last stage layers 3/- leave 29 for 3 middle"):
        split_layers(32, 4, first=3)


def _megatron_offset(layers, pp, v, first, last, chunk, rank):
    """The first layer of model chunk ``chunk`` on pipeline rank ``rank``, transcribed from
    Megatron-core's get_transformer_layer_offset (megatron/core/transformer/transformer_layer.py,
    the uneven branch with a virtual pipeline)."""
    middle_stages = pp - (first is not None) - (last is not None)
    f, l = first or 0, last or 0
    middle = layers - f - l
    f_chunk, l_chunk, m_chunk = f // v, l // v, middle // v
    total = f_chunk + m_chunk + l_chunk
    if rank == 0:
        return chunk * total
    middle_rank = rank if first is None else rank - 1
    return chunk * total + f_chunk + middle_rank * (m_chunk // middle_stages)


@pytest.mark.parametrize("layers, pp, v, first, last, per_stage", [
    (126, 16, 1, 7, 7, [7] + [8] * 14 + [7]),     # Llama 3 405B: one layer off each end stage
    (30, 4, 2, 6, 8, [6, 8, 8, 8]),
    (62, 8, 2, 6, 8, [6] + [8] * 6 + [8]),
    (12, 2, 2, 4, None, [4, 8]),                   # pp 2: the last stage takes the rest
    (36, 4, 3, None, 6, [10, 10, 10, 6]),           # 10 % 3: refused below
    (40, 5, 2, 4, 4, [4, 10, 12, 10, 4]),           # 32 over 3 middle stages: refused below
])
def test_split_layers_with_first_last_and_virtual_stages_as_megatron(layers, pp, v, first,
                                                                     last, per_stage):
    """Megatron-core: stage 0 holds ``first``, stage pp-1 ``last``, the others the rest evenly
    (it must divide); each stage's layers split evenly over its v chunks (each must divide);
    chunk c of stage r is virtual stage c pp + r and starts where Megatron's offset says."""
    divides = (sum(per_stage) == layers and len(set(per_stage[1:-1])) <= 1
               and all(n % v == 0 for n in per_stage))
    if not divides:
        with pytest.raises(ValueError):
            split_layers(layers, pp, v, first, last)
        return
    got = split_layers(layers, pp, v, first, last)
    assert got == [per_stage[r] // v for c in range(v) for r in range(pp)]
    assert stage_totals(got, pp, v) == per_stage
    if v > 1:                                     # the layer order Megatron builds
        for c in range(v):
            for r in range(pp):
                assert sum(got[:c * pp + r]) == _megatron_offset(layers, pp, v, first, last, c, r)


def test_interleaving_needs_groups_of_p():
    with pytest.raises(ValueError, match="multiple of p"):
        interleaved(4, 6, 2)


def test_deadlock_is_reported():
    """A program whose transfer waits for its own consumer cannot run: a clear error."""
    g = StepGraph()
    a = g.add("a", "s0", 1.0)
    b = g.add("b", "s1", 1.0, (a,))
    g.depend(a, (b,))
    with pytest.raises(RuntimeError, match="deadlocks"):
        g.run()
