"""ZeRO-2/3 and HSDP (tpsim.training.sharded_dp): the unit recurrences' closed forms, the
state per rank, and a prediction's monotone invariants."""
import pytest
from hypothesis import given, settings, strategies as st

import tpsim
from tpsim.spec.parallel import Parallelism
from tpsim.training.shard_state import state_bytes
from tpsim.training.sharded_dp import (ForwardRun, Sharding, backward_s, forward_s, replica_group,
                                       shard_group, unit_comm)


def test_forward_hides_gathers_shorter_than_compute():
    """n units of compute f, gathers g < f: only the first gather is exposed, g + n f;
    gathers longer than compute set the pace: n g + f."""
    assert forward_s([ForwardRun(1.0, 0.25, 10)]) == pytest.approx(0.25 + 10)
    assert forward_s([ForwardRun(1.0, 2.0, 10)]) == pytest.approx(10 * 2.0 + 1.0)
    assert forward_s([ForwardRun(1.0, 0.0, 7)]) == pytest.approx(7.0)


def test_a_lagged_host_issues_the_next_gather_later():
    """A unit's lag w (its host held at a sync, tpsim.sim.host_lag): the next gather goes out
    w after the unit's compute starts, so with w + g > f each unit after the first waits
    w + g - f: g + f + (n - 1)(w + g); with w + g <= f nothing changes; w = 0 is the old
    recurrence; more lag is never faster."""
    assert forward_s([ForwardRun(1.0, 0.25, 10, 0.9)]) == pytest.approx(0.25 + 9 * 1.15 + 1.0)
    assert forward_s([ForwardRun(1.0, 0.25, 10, 0.5)]) == pytest.approx(0.25 + 10)
    assert forward_s([ForwardRun(1.0, 0.25, 10, 0.0)], 0.3) == \
        forward_s([ForwardRun(1.0, 0.25, 10)], 0.3)
    assert forward_s([ForwardRun(1.0, 0.5, 10, 0.7)], 0.5) >= \
        forward_s([ForwardRun(1.0, 0.5, 10, 0.2)], 0.5)


def test_backward_adds_the_last_reduction():
    """compute b = 2 per unit, gather g = 0.5, reduce r = 0.5 (g + r < b): the first gather,
    n b of compute and the last unit's reduce-scatter are exposed: 0.5 + 20 + 0.5; with the
    communication longer than the compute (g = r = 1, b = 1), the stream is busy n (g + r)."""
    assert backward_s([(2.0, 0.5, 0.5, 10)]) == pytest.approx(21.0)
    assert backward_s([(1.0, 1.0, 1.0, 10)]) == pytest.approx(20.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
                          st.integers(0, 40)), min_size=1, max_size=4),
       st.floats(0, 1))
def test_recurrences_are_monotone_and_bounded(runs, extra):
    """Never faster than the compute or the stream's work alone; more gather time never
    faster; skipping ahead in steady runs gives what unit-by-unit iteration gives."""
    fwd = [ForwardRun(f, g, n) for f, g, _, n in runs]
    t = forward_s(fwd)
    assert t >= sum(r.compute_s * r.count for r in fwd) - 1e-12
    assert t >= sum(r.gather_s * r.count for r in fwd) - 1e-12
    assert forward_s([ForwardRun(f, g + extra, n) for f, g, n, _ in fwd]) >= t - 1e-12
    one_by_one = [ForwardRun(f, g, 1) for f, g, n, _ in fwd for _ in range(n)]
    assert forward_s(one_by_one) == pytest.approx(t, rel=1e-9, abs=1e-12)
    b = backward_s(runs)
    assert b >= sum((g + r) * n for _, g, r, n in runs) - 1e-12
    assert b == pytest.approx(backward_s([(x, g, r, 1) for x, g, r, n in runs
                                          for _ in range(n)]), rel=1e-9, abs=1e-12)


def test_groups_of_hsdp():
    """dp 8 over tp 2: shard groups of 4 consecutive DP ranks (stride tp), replicas 4 DP
    ranks apart."""
    par = Parallelism(tp=2, dp=8)
    assert list(shard_group(par, 0, 4).ranks) == [0, 2, 4, 6]
    assert list(replica_group(par, 0, 4).ranks) == [0, 8]


def test_state_bytes_by_stage():
    """bf16, P = 1e9 over s = 8, units of 1e7: ZeRO-3 holds 2P/8 + 2 x 2e7 gathered bytes,
    4P/8 + 2 x 4e7 gradient bytes, 12P/8 optimizer bytes; ZeRO-2 keeps whole weights."""
    P, u = 10**9, 10**7
    w, g, o, _ = state_bytes(P, "bf16", Sharding(3, 8), 8, True, u)
    assert (w, g, o) == pytest.approx((2 * P / 8 + 2 * 2 * u, 4 * P / 8 + 2 * 4 * u, 1.5 * P))
    w2, g2, _, _ = state_bytes(P, "bf16", Sharding(2, 8), 8, True, u)
    assert (w2, g2) == pytest.approx((2 * P, g))
    w3, _, _, _ = state_bytes(P, "bf16", Sharding(3, 8, reshard_after_forward=False), 8, True, u)
    assert w3 == pytest.approx(2 * P / 8 + 2 * P)


def test_fsdp_fp32_shards_are_the_master_weights():
    """PyTorch FSDP's mixed precision (fp32_params): ZeRO-3 keeps no 16-bit shard, only the
    gathered units, 16 / 8 bytes a parameter sharded; ZeRO-2 is unchanged (the flag is
    ZeRO-3's)."""
    P, u = 10**9, 10**7
    w, g, o, _ = state_bytes(P, "bf16", Sharding(3, 8, fp32_params=True), 8, True, u)
    assert (w, g, o) == pytest.approx((2 * 2 * u, 4 * P / 8 + 2 * 4 * u, 1.5 * P))
    assert state_bytes(P, "bf16", Sharding(2, 8, fp32_params=True), 8, True, u) == \
        state_bytes(P, "bf16", Sharding(2, 8), 8, True, u)


def test_unit_comm_fp8_all_gather_halves_the_bytes():
    par, seen = Parallelism(tp=1, dp=4), []
    price = lambda op, nbytes, group: seen.append((op, nbytes, group.size)) or nbytes
    g, g2, r = unit_comm(1000, "fp8", Sharding(3, 4, True, True), par, 0, price)
    assert (g, g2, r) == (1000, 1000, 4000)
    g, g2, r = unit_comm(1000, "bf16", Sharding(3, 2, False), par, 0, price)
    assert (g, g2, r) == (2000, 0.0, 4000 + 2000)     # HSDP: + all-reduce of the 1/2 shard
    assert seen[-1] == ("all-reduce", 2000, 2)


def test_zero3_state_is_a_fifth_of_zero0():
    """The issue's bar: ZeRO-3's weights + gradients + optimizer state at most 0.2 of
    ZeRO-0's (llama3-8b, dp 8), and ZeRO-2/3's step has no end-of-step gradient reduction."""
    kw = dict(tp=1, dp=8, global_batch=16)
    m0 = tpsim.predict("llama3-8b", "dgx-h100", zero=0, **kw).memory
    m3 = tpsim.predict("llama3-8b", "dgx-h100", zero=3, **kw).memory
    state = lambda m: m.weights_bytes + m.gradients_bytes + m.optimizer_bytes
    assert state(m3) <= 0.2 * state(m0)
    assert m3.zero == 3 and m0.zero == 0


def test_zero3_on_one_replica_is_zero0_time():
    """d = 1: nothing to gather or reduce, the same step as without ZeRO."""
    a = tpsim.predict("gpt3-1.3b", "dgx-h100", tp=8, zero=3, global_batch=4)
    b = tpsim.predict("gpt3-1.3b", "dgx-h100", tp=8, global_batch=4)
    assert a.step.time_s == pytest.approx(b.step.time_s)


def test_slower_network_slows_zero3_more():
    """ZeRO-3 moves ~1.5x ZeRO-0's bytes per step: across nodes it is the slower."""
    kw = dict(tp=8, dp=4, global_batch=32, nodes=4)
    t0 = tpsim.predict("gpt3-13b", "dgx-h100-ndr-cluster", **kw).step
    t3 = tpsim.predict("gpt3-13b", "dgx-h100-ndr-cluster", zero=3, **kw).step
    assert t3.dp_comm_exposed_s > 0
    assert t3.stages[0].dp_comm_exposed_s == pytest.approx(t3.dp_comm_exposed_s)


def test_fp8_all_gather_needs_fp8_and_gathers_less():
    kw = dict(tp=1, dp=16, global_batch=32, zero=3, nodes=2, seq_len=2048)
    with pytest.raises(tpsim.base.errors.ConfigError) as e:
        tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", fp8_all_gather=True, **kw)
    assert e.value.source == "--fp8-all-gather"
    a = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", dtype="fp8", **kw).step
    b = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", dtype="fp8", fp8_all_gather=True,
                      **kw).step
    assert b.dp_comm_exposed_s < a.dp_comm_exposed_s


def test_hsdp_replicas_add_an_all_reduce():
    """Shard groups of 8 of 16 ranks: the same per-unit reduce-scatter on 8 ranks, plus the
    all-reduce over the 2 replicas; more state per rank than sharding over all 16."""
    kw = dict(tp=1, dp=16, global_batch=32, zero=3, nodes=2, seq_len=2048)
    full = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", **kw)
    hsdp = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", shard_group=8, **kw)
    assert hsdp.memory.optimizer_bytes == pytest.approx(2 * full.memory.optimizer_bytes)
    assert hsdp.memory.optimizer_shards == 8


def test_the_layer_lists_its_dp_collectives():
    """ZeRO-3 on 8 ranks: per layer and micro-batch, the 16-bit weights all-gathered forward
    and backward, the fp32 gradients reduce-scattered: 2 x and 4 x its parameters in bytes."""
    p = tpsim.predict("llama3-8b", "dgx-h100", tp=1, dp=8, global_batch=16, zero=3)
    rows = [(c.phase, c.op, c.bytes) for c in p.collectives if c.group == "dp"]
    n = tpsim.spec.model.load_model("llama3-8b").layer_params(1)
    assert rows == [("forward", "all-gather", 2 * n), ("backward", "all-gather", 2 * n),
                    ("backward", "reduce-scatter", 4 * n)]
    assert not [c for c in tpsim.predict("llama3-8b", "dgx-h100", tp=1, dp=8,
                                         global_batch=16).collectives if c.group == "dp"]



def test_the_listed_reduce_scatter_carries_the_priced_gradient_bytes():
    """With --grad-reduce-in-bf16 (Composer's PURE FSDP mixed precision) the layer's listed
    reduce-scatter is the one the step prices: 2 bytes a parameter, not fp32's 4."""
    kw = dict(tp=1, dp=8, global_batch=16, zero=3)
    n = tpsim.spec.model.load_model("llama3-8b").layer_params(1)
    p = tpsim.predict("llama3-8b", "dgx-h100", grad_reduce_in_bf16=True, **kw)
    rows = [(c.phase, c.op, c.bytes) for c in p.collectives if c.group == "dp"]
    assert rows[-1] == ("backward", "reduce-scatter", 2 * n)
    assert p.step.time_s < tpsim.predict("llama3-8b", "dgx-h100", **kw).step.time_s

def test_compute_beside_a_unit_collective_is_slowed_once():
    """Interference I = 0.2. Forward, units (f, g) = (1, 0.25), (1, 0.5): unit 1's gather runs
    beside unit 0's compute (0.25 to 0.75), which ends at 0.25 + 1 + I x 0.5 = 1.35; unit 1
    then 1.35 to 2.35. Backward, two units (b, g, r) = (1, 0.5, 0.5): unit 0 from 0.5 beside
    unit 1's gather (0.5 to 1) ends 1.6; its reduce-scatter (1.6 to 2.1) beside unit 1's compute
    (ends 2.7); then unit 1's: 3.2, the unslowed 3.0 plus I x (0.5 + 0.5)."""
    two = [ForwardRun(1.0, 0.25, 1), ForwardRun(1.0, 0.5, 1)]
    assert forward_s(two, 0.2) == pytest.approx(2.35, rel=1e-12)
    assert forward_s(two) == pytest.approx(2.25, rel=1e-12)
    assert backward_s([(1.0, 0.5, 0.5, 2)], 0.2) == pytest.approx(3.2, rel=1e-12)
    assert backward_s([(1.0, 0.5, 0.5, 2)]) == pytest.approx(3.0, rel=1e-12)


def test_every_overlapped_collective_slows_compute_by_the_same_rule():
    """A collective of c seconds issued as w > c seconds of compute start on the other stream:
    the compute ends at w + I c (it runs at 1 - I for c), whatever the collective: a layer's
    TP collective (tpsim.sim.schedule), the MoE all-to-all beside the other micro-batch
    (tpsim.training.moe_overlap.beside), ZeRO-3's forward and backward all-gathers and ZeRO-2/3's
    reduce-scatter (the unit recurrences): the slowdown applied once, by the same factor."""
    import networkx as nx
    from tpsim.sim.schedule import schedule
    from tpsim.training.moe_overlap import beside
    i = 0.24
    for w, c in ((2.0, 0.5), (1.0, 0.9)):
        want = w + i * c
        g = nx.DiGraph()
        g.add_node("ag", stream="comm", time_s=c)
        g.add_node("gemm", stream="compute", time_s=w)
        layer = schedule(g, i)
        zero = [forward_s([ForwardRun(w, 0.0, 1), ForwardRun(0.0, c, 1)], i),
                backward_s([(w, 0.0, 0.0, 1), (0.0, c, 0.0, 1)], i),
                backward_s([(0.0, 0.0, c, 1), (w, 0.0, 0.0, 1)], i)]
        ends = [layer.end[layer.names.index("gemm")], beside(c, w, i), *zero]
        assert ends == pytest.approx([want] * 5, rel=1e-12), (w, c)


def test_a_zero3_step_pays_the_devices_interference():
    """The same ZeRO-3 job on a device whose collectives take no SMs is faster, and no
    slower than its compute allows; with ZeRO-0 nothing moves (its layer overlaps none)."""
    import dataclasses
    from tpsim.cluster.topology import load_topology
    topo = load_topology("dgx-h100")
    free = dataclasses.replace(topo, device=dataclasses.replace(
        topo.device, comm_compute_interference=0.0))
    kw = dict(tp=1, dp=8, global_batch=16, seq_len=2048, zero=3)
    slowed, clean = (tpsim.predict("llama3-8b", t, **kw).step for t in (topo, free))
    assert slowed.time_s > clean.time_s
    assert slowed.compute_s == pytest.approx(clean.compute_s, rel=1e-12)


def test_sync_every_micro_batch_runs_a_pipelines_units_as_without_one():
    """--fsdp-sync-every-micro-batch: with pp 4 the units are not pipelined (per unit, each
    micro-batch), and HSDP, refused beside torch's deferred reduction, is allowed."""
    from tpsim.training.sharded_dp import sharding
    deferred = sharding(3, 8, None, False, False, pp=4)
    every = sharding(3, 8, None, False, False, pp=4, sync_every=True)
    assert deferred.pipelined and not deferred.per_unit
    assert every.per_unit and every.per_micro_batch((1.0, 2.0, 3.0)) == (1.0, 2.0, 3.0)
    with pytest.raises(tpsim.base.errors.ConfigError) as e:
        sharding(3, 8, 4, False, False, pp=4)
    assert e.value.source == "--shard-group"
    assert sharding(3, 8, 4, False, False, pp=4, sync_every=True).shard == 4


def test_expert_bf16_halves_only_the_experts_reduction():
    """A unit of 1000 parameters, 400 of them routed experts sharded over 4 expert-DP ranks:
    dense all-gather 2 x 600 and reduce-scatter 4 x 600 bytes, the experts' 2 x 400 and
    4 x 400, or 2 x 400 with expert_bf16."""
    from tpsim.spec.folding import Folded
    from tpsim.training.sharded_dp import unit_collectives
    par = Parallelism(tp=1, dp=8)
    experts = Folded(par, 2, 1)
    rows = lambda sh: [(op, nbytes, g.name) for _, op, nbytes, g in
                       unit_collectives(1000, "bf16", sh, par, 0, 400, experts)]
    fp32 = rows(Sharding(3, 8, False, expert_shard=4))
    assert fp32 == [("all-gather", 1200, "dp"), ("reduce-scatter", 2400, "dp"),
                    ("all-gather", 800, "edp"), ("reduce-scatter", 1600, "edp")]
    assert rows(Sharding(3, 8, False, expert_shard=4, expert_bf16=True)) == \
        fp32[:3] + [("reduce-scatter", 800, "edp")]


def test_a_pipeline_synced_every_micro_batch_reduces_in_every_one():
    """pp 2, ZeRO-3 kept gathered: torch's deferred reduction runs no per-micro-batch DP
    collective and holds whole gradients; synced every micro-batch, each layer gathers its
    16-bit weights (2n bytes) and reduce-scatters its fp32 gradients (4n) every micro-batch,
    the gradients held sharded (and two units whole)."""
    kw = dict(tp=1, pp=2, dp=8, nodes=2, global_batch=32, zero=3, seq_len=2048,
              reshard_after_forward=False)
    n = tpsim.spec.model.load_model("llama3-8b").layer_params(1)
    deferred = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", **kw)
    every = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", fsdp_sync_every_micro_batch=True,
                          **kw)
    rows = lambda p: [(c.phase, c.op, c.bytes) for c in p.collectives if c.group == "dp"]
    assert rows(deferred) == []
    assert rows(every) == [("forward", "all-gather", 2 * n), ("backward", "reduce-scatter", 4 * n)]
    assert every.memory.gradients_bytes < deferred.memory.gradients_bytes / 2


def test_a_forward_run_has_one_shape():
    """forward_s takes ForwardRun (compute, gather, count, lag 0 by default): a bare triple,
    the shape it once took beside the 4-tuple, is refused rather than read two ways."""
    assert ForwardRun(1.0, 0.25, 10) == (1.0, 0.25, 10, 0.0)
    with pytest.raises(ValueError):
        forward_s([(1.0, 0.25, 10)])
