"""bench/moe_breakdown.py: the components of a simulated MoE layer sum to the layer's time.

Invariant (tpsim.sim.result.LayerTimes): total = compute + exposed comm + host wait, and the
breakdown splits compute by op and exposed comm by collective, so its parts sum to the total.
"""
from __future__ import annotations

import sys

import pytest

from tpsim.training.predict import predict

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from moe_breakdown import breakdown, group_of, host_phases  # noqa: E402
from moe_published import BRIDGE_BF16, TOPOLOGY  # noqa: E402
from moe_overlap_published import gpu_rows, profile_rows  # noqa: E402


@pytest.mark.parametrize("name, kind, group", [
    ("fwd.experts.fc1", "gemm", "expert GEMMs"), ("bwd.experts.fc2.wgrad", "gemm", "expert GEMMs"),
    ("fwd.experts.fc1.cast", "elementwise", "FP8 casts"), ("fwd.experts.act", "elementwise", "glue"),
    ("fwd.moe.dispatch", "collective", "EP comm"), ("bwd.moe.all-gather", "collective", "TP comm"),
    ("fwd.router.topk", "elementwise", "router"), ("bwd.attn", "attention", "attention"),
    ("bwd.qkv.dgrad", "gemm", "dense GEMMs"), ("fwd.moe.permute", "elementwise", "glue"),
    ("fwd.mlp_in.chunk3", "gemm", "dense GEMMs"), ("bwd.attn.cp0.accumulate", "elementwise", "glue")])
def test_group_of(name, kind, group):
    assert group_of(name, kind) == group


@pytest.mark.parametrize("name, kind, stream, group", [
    ("fwd.qkv.p2p1", "p2p", "copy", "TP comm"), ("fwd.attn.cp.kv1", "p2p", "comm", "CP comm"),
    ("bwd.qkv.reduce-scatter", "collective", "comm", "TP comm")])
def test_ops_off_the_compute_stream_are_communication(name, kind, stream, group):
    assert group_of(name, kind, stream) == group


def test_parts_sum_to_a_dense_layer_with_ring_exchange_and_cp():
    """A layer whose TP overlap copies shards on the copy engines (ring exchange) and whose
    context-parallel ring sends K/V: ops off the compute stream count only where the compute
    stream waits, once (bench/cp_published.py --layers)."""
    from cp_published import runs
    _, model, topo, nodes, settings, _ = runs()[1]
    p = predict(model, topo, nodes=nodes, **settings)
    parts = breakdown(p)
    assert sum(parts.values()) == pytest.approx(p.layer.total_s, rel=1e-9)
    assert parts["dense GEMMs"] > parts["attention"] > 0 and parts["TP comm"] > 0


def test_parts_sum_to_the_layer():
    _, model, nodes, layout, _ = BRIDGE_BF16
    p = predict(model, TOPOLOGY, nodes=nodes, **layout)
    parts = breakdown(p)
    assert sum(parts.values()) == pytest.approx(p.layer.total_s, rel=1e-9)
    assert parts["EP comm"] > 0 and parts["expert GEMMs"] > 0


def test_host_phases_bound_the_layer():
    """--host: each phase of the layer takes max(its GPU time, the host's issue time), so the
    two phases' maxima are the layer's total; at the break-even time an op h* the host's issue
    (its waits and launches kept) equals the GPU's."""
    _, model, nodes, layout, _ = BRIDGE_BF16
    p = predict(model, TOPOLOGY, nodes=nodes, **layout)
    phases = host_phases(p)
    assert sum(max(g, t) for g, t, _ in phases) == pytest.approx(p.layer.total_s, rel=1e-12)
    h = p.run.host_dispatch_s
    for (g, t, hs), n in zip(phases, p.run.template.host_ops):
        assert t - n * h + n * hs == pytest.approx(g, rel=1e-12)
        assert (hs > h) == (g > t)


def test_moe_layer_against_megatron_benchmark():
    """bench/moe_layer_published.py: the MoE slot alone against Megatron-LM's moe_perf baseline
    (H100, EP 8, Mixtral and DeepSeek proxies), used in no fit: mean |error| within 20%, every
    phase within 35% (reported: 15.2% and 32.2%; 12.7% before the MoE host work of
    tpsim.layer.moe_host)."""
    from moe_layer_published import rows
    errors = [t / pub - 1 for _, f, b, fp, bp in rows() for t, pub in ((f, fp), (b, bp))]
    assert sum(map(abs, errors)) / len(errors) <= 0.20
    assert max(map(abs, errors)) <= 0.35


def test_the_h100s_ep_slowdown_reproduces_its_fit():
    """The H100's ep_comm_slowdown (fitted by bench/moe_overlap_published.py --fit) grows
    tpsim's communication seconds of the HybridEP pair as the profile's grew, 10.83 / 8.25."""
    (_, off, _, pub_off, _), (_, on, _, pub_on, _) = profile_rows()
    assert on / off == pytest.approx(pub_on / pub_off, rel=0.005)


def test_the_hybridep_pair_splits_the_gpu_time_as_the_profile():
    """bench/moe_overlap_published.py's GPU table: without the overlap tpsim's busy time is its
    other kernels plus its exposed MoE communication (all of it: nothing beside) and the
    distributed optimizer's exposed exchange; the profile's other kernels are its busy union
    less its communication plus their 9 ms beside a GEMM or the attention."""
    (_, comm, beside, pub_comm, pub_beside), _ = profile_rows()
    (ov, busy, other, idle, pub_busy, pub_other, pub_idle, permute), on = gpu_rows()
    assert not ov and on[0] and on[2] is None and on[6] is None
    assert busy - other == pytest.approx(comm, abs=0.05) and beside == pytest.approx(0.0)
    assert pub_other == pytest.approx(pub_busy - pub_comm + pub_beside)
    assert pub_idle == pytest.approx(24.71 - 22.821) and idle > 0
    assert 0 < permute < other
