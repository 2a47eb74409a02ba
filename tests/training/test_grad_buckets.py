"""Megatron-core's separate dense and expert gradient buffers: the cuts of a chunk's backward
where either kind of bucket closes, and the expert reduction over expert DP when dp x cp = 1."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.spec.model import load_model, with_overrides
from tpsim.spec.model_params import expert_params
from tpsim.training import data_parallel as dpm
from tpsim.training import terms
from tpsim.training.grad_buckets import prescale_s, reduce_ranks, split_buckets
from tpsim.training.predict import predict
from tpsim.training.step import build_step, time_step

UNITS = [("output", 50, 1), ("moe", 30, 3), ("layer", 10, 2), ("embedding", 50, 1)]


def test_dense_and_expert_buckets_close_apart():
    """Per MoE unit 20 of 30 parameters are experts'. Bucket size 40: the dense stream
    (50 | 10 10 10 10 | 10 50) closes after units 1, 5, 7; the expert stream (20 20 | 20)
    after units 3 and 4 (its last expert unit, not the chunk's end). One bucket (None): the
    experts at unit 4, the dense 150 at the end."""
    assert split_buckets(UNITS, (0, 20, 0, 0), 40) == [
        ([(0, 1)], 50, 0), ([(1, 2)], 40, 40), ([(1, 1)], 20, 20), ([(2, 1)], 40, 0),
        ([(2, 1), (3, 1)], 60, 0)]
    assert split_buckets(UNITS, (0, 20, 0, 0), None) == [
        ([(0, 1), (1, 3)], 60, 60), ([(2, 2), (3, 1)], 150, 0)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 90), st.integers(1, 5), st.integers(0, 1)),
                min_size=1, max_size=6), st.sampled_from([None, 1, 40, 100]))
def test_cuts_cover_the_units_and_reduce_every_parameter_once(runs, size):
    """Whatever the runs, the cuts span every unit once in order, reduce every parameter
    (dense and expert) once; without experts they are data_parallel.buckets' cut."""
    units = [("u", p, n) for p, n, _ in runs]
    ex = tuple(p // 2 * e for p, _, e in runs)
    cuts = split_buckets(units, ex, size)
    assert _merged([p for c in cuts for p in c[0]]) == [(i, n) for i, (_, n, _) in
                                                        enumerate(runs)]
    assert sum(c[1] for c in cuts) == sum(p * n for p, n, _ in runs)
    assert sum(c[2] for c in cuts) == sum(e * n for e, (_, n, _) in zip(ex, runs))
    plain = split_buckets(units, (), size)
    assert [c[0] for c in plain] == dpm.buckets([(p, n) for p, n, _ in runs], size)


def _merged(pieces):
    """(run, units) pieces with consecutive ones of a run added up."""
    out = []
    for i, k in pieces:
        if out and out[-1][0] == i:
            out[-1] = (i, out[-1][1] + k)
        else:
            out.append((i, k))
    return out


def test_reduce_ranks_counts_expert_dp():
    m = load_model("mixtral-8x7b")
    p = predict(with_overrides(m, layers=2), "dgx-h100", seq_len=1024, global_batch=8,
                tp=8, ep=2, expert_tp=1, sequence_parallel=True)
    setup = p.step_run._setup
    assert terms.grad_ranks(setup.parallelism) == 1 and setup.experts.edp == 4
    assert reduce_ranks(setup.parallelism, setup.experts) == 4
    assert reduce_ranks(setup.parallelism, None) == 1
    assert prescale_s(1e6, "bf16", p.step_run._topo.device, 1) == 0.0


@pytest.mark.parametrize("overlap, do", [(False, False), (True, False), (False, True)])
def test_experts_reduce_over_expert_dp_at_dp_1(overlap, do):
    """TP 8, EP 2, expert TP 1, DP 1 on one DGX H100: expert DP 8 / 2 = 4. The dense
    gradients reduce over nobody; the routed experts' (2 MoE layers x E/ep x 3 h f_e) over
    the 4 ranks, stride 2: the step's DP ops add up to exactly that collective's price
    (all-reduce; reduce-scatter with the distributed optimizer), with no pre-scale (1/dp = 1);
    overlapped, one bucket per MoE layer (its 704M expert parameters exceed the 40M bucket)."""
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    p = predict(model, "dgx-h100", seq_len=1024, global_batch=8, tp=8, ep=2, expert_tp=1,
                sequence_parallel=True, overlap_grad_reduce=overlap, distributed_optimizer=do)
    setup, topo = p.step_run._setup, p.step_run._topo
    group = setup.experts.group("edp")
    assert (group.size, group.stride) == (4, 2)
    x, k = 2 * expert_params(model, 2, 1), 2 if overlap else 1
    want = k * terms.collective_price(topo)(dpm.reduce_op(do), dpm.grad_bytes(x / k, "bf16"),
                                            group)
    g = build_step(setup, topo)
    ops = [i for i, n in enumerate(g.names)
           if n.endswith(dpm.reduce_op(do)) and g.kinds[i] == "dp" and g.seconds[i]]
    assert len(ops) == k
    assert ops and sum(g.seconds[i] for i in ops) == pytest.approx(want, rel=1e-12)
    scales = [i for i, n in enumerate(g.names) if n.endswith("scale") and g.kinds[i] == "dp"]
    assert scales
    assert all(g.seconds[i] == 0.0 for i in scales)
    assert time_step(setup, topo).makespan_s == pytest.approx(g.run().timeline.makespan_s,
                                                             rel=1e-12)
    assert p.step.dp_comm_exposed_s > 0


def test_the_distributed_optimizer_shards_experts_over_expert_dp_at_dp_1():
    """dp 1, edp 4: the dense state is whole, the experts' 1/4: params / (dense + x / 4)."""
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    p = predict(model, "dgx-h100", seq_len=1024, global_batch=8, tp=8, ep=2, expert_tp=1,
                sequence_parallel=True, distributed_optimizer=True)
    setup = p.step_run._setup
    n, x = setup.stage_params[0], 2 * expert_params(model, 2, 1)
    assert setup.optimizer_shards(0) == pytest.approx(n / (n - x + x / 4), rel=1e-12)
    assert setup.optimizer_shards(0) > 1
