"""The EP communication overlap across micro-batches (tpsim.training.moe_overlap) against its
closed forms: the merged pair from the layer's pieces, the steady state's share, never slower,
and Megatron-core's refusals."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.layer.ops import Dispatch
from tpsim.sim.interference import op_interference
from tpsim.training.moe_overlap import (beside, ends, exchange_s, merged_share, overlapped,
                                        pair_s, pieces)
from tpsim.training.step import Part

H100 = load_topology("dgx-h100-ndr-cluster")
QWEN = dict(tp=1, dp=16, ep=16, seq_len=1024, nodes=2, global_batch=64)


@pytest.fixture(scope="module")
def qwen():
    return {ov: tpsim.predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", overlap_moe_comm=ov,
                              **QWEN) for ov in (False, True)}


def test_beside_is_the_longer_stream_with_the_slowed_compute():
    """Compute under comm runs 1 - i as fast: hidden when c / (1 - i) <= a, else c + i a."""
    assert beside(2.0, 1.0, 0.25) == 2.0
    assert beside(1.0, 2.0, 0.25) == 2.0 + 0.25
    assert beside(1.0, 0.8, 0.25) == pytest.approx(0.8 + 0.25)
    assert beside(3.0, 2.0, 0.0) == 3.0


def test_beside_slows_the_comm_while_the_compute_runs():
    """Comm under compute runs 1 - k as fast: a comm of a beside a longer compute ends at
    a / (1 - k), the compute then c + i a / (1 - k); beside a shorter one, a + k c / (1 - i)."""
    assert beside(1.0, 4.0, 0.25, 0.5) == pytest.approx(4.0 + 0.25 * 2.0)
    assert beside(4.0, 1.0, 0.25, 0.5) == pytest.approx(4.0 + 0.5 / 0.75)
    assert beside(1.0, 1.0, 1.0, 1.0) == 2.0


@settings(max_examples=50, deadline=None)
@given(a=st.floats(0, 10), c=st.floats(0, 10), i=st.floats(0, 1), k=st.floats(0, 1))
def test_beside_is_no_shorter_than_either_stream_nor_the_unslowed_comm(a, c, i, k):
    """Both streams' work is done (at least the longer one alone, at least k = 0's pair), and
    within the serial sum where the two losses together are at most one."""
    t = beside(a, c, i, k)
    comm_end, compute_end = ends(a, c, i, k)
    assert comm_end >= a - 1e-12 and compute_end >= c - 1e-12 and t == max(comm_end, compute_end)
    assert t >= max(a, c) - 1e-12 and t >= beside(a, c, i) - 1e-12
    if i + k <= 1:
        assert t <= a + c + 1e-12


def test_pieces_tile_the_layer(qwen):
    """P_f + D_f + C_f and the gap between D_f and C_f span the forward (M_f is busy time
    from D_f's start to C_f's); C_b + D_b + P_b and the gap the backward."""
    sim = qwen[False].run
    (p_f, d_f, m_f, c_f), (c_b, m_b, d_b, p_b) = pieces(sim)
    tl = sim.timeline
    at = {n: i for i, n in enumerate(sim.template.names)}
    gap_f = tl.start[at["fwd.moe.combine"]] - tl.end[at["fwd.moe.dispatch"]]
    fwd_end = max(tl.end[i] for i in sim.template.forward)
    assert p_f + d_f + gap_f + c_f == pytest.approx(fwd_end, rel=1e-12)
    gap_b = tl.start[at["bwd.moe.dispatch"]] - tl.end[at["bwd.moe.combine"]]
    assert c_b + gap_b + d_b + p_b == pytest.approx(tl.makespan_s - fwd_end, rel=1e-12)
    assert 0 < m_f <= d_f + gap_f + 1e-15 and 0 < m_b <= c_b + gap_b + 1e-15
    assert d_f == tl.end[at["fwd.moe.dispatch"]] - tl.start[at["fwd.moe.dispatch"]]


def test_the_pair_is_megatrons_four_slots(qwen):
    """The four slots of Megatron-core's schedule (the dispatch of the backward waits on its
    mlp_bwd, the forward's mlp on its dispatch), no shorter than the host's issue of both
    phases' ops and of the grouped GEMMs' per-expert launches (here, at 1,024 tokens, the host
    sets the pace: its ops at 58 us, 48 launches at 5 us and the auxiliary loss's C++ node,
    :mod:`tpsim.layer.moe_host`, and Transformer Engine's 2 calls per local expert (8) after each
    grouped wgrad and each expert weight's AccumulateGrad node and DDP post-hook, each priced
    as a launch, :mod:`tpsim.layer.moe_loops`); NCCL's all-to-alls slow the compute beside them by the
    device's interference (0.50 on the H100)."""
    sim, device = qwen[False].run, H100.device
    i, k = device.comm_compute_interference, device.ep_comm_slowdown
    (p_f, d_f, m_f, c_f), (c_b, m_b, d_b, p_b) = pieces(sim)
    gpu = (beside(c_b, p_f, i, k) + beside(d_f, m_b, i, k) + beside(d_b, m_f, i, k)
           + beside(c_f, p_b, i, k))
    host = sum(sim.template.host_ops) * sim.host_dispatch_s + sum(sim.launch_s)
    assert sum(sim.launch_s) == pytest.approx((48 + 1 + 2 * 4 * 8) * device.host_launch_s)
    assert pair_s(sim, device) == pytest.approx(max(gpu, host))


def test_exchange_beside_the_compute_is_each_slots_earlier_end(qwen):
    """exchange_s: the dispatches and combines alone, slowed by k beside the compute, and the
    part of them with compute beside: per slot the earlier of the two streams' ends."""
    sim, device = qwen[False].run, H100.device
    i, k = device.comm_compute_interference, device.ep_comm_slowdown
    (p_f, d_f, m_f, c_f), (c_b, m_b, d_b, p_b) = pieces(sim)
    slots = ((c_b, p_f), (d_f, m_b), (d_b, m_f), (c_f, p_b))
    alone, slowed, beside_s = exchange_s(sim, device)
    assert alone == pytest.approx(c_b + d_f + d_b + c_f)
    assert slowed == pytest.approx(sum(ends(a, c, i, k)[0] for a, c in slots))
    assert beside_s == pytest.approx(sum(min(ends(a, c, i, k)) for a, c in slots))
    assert beside_s <= slowed + 1e-15


def test_deepep_kernels_take_their_20_sms():
    """The flex dispatcher's DeepEP kernels hold 20 of the H100's 132 SMs: a persistent GEMM
    beside them runs a second pass (half its speed), a non-persistent kernel loses 20 / 132;
    HybridEP's 32 SMs the same way (tpsim.cost.interference)."""
    flex = tpsim.predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", moe_dispatcher="flex", **QWEN)
    op = next(o for o in flex.run.ops if type(o) is Dispatch)
    assert op_interference(op, H100.device) == 0.5
    assert op_interference(op, H100.device, persistent=False) == 20 / 132
    hybrid = Dispatch(1.0, 1.0, 8, 2, "ep", "hybridep")
    assert op_interference(hybrid, H100.device, persistent=False) == 32 / 132


@pytest.mark.parametrize("m, pp, v, want", [(8, 1, 1, 7 / 8), (64, 8, 4, 1 - 32 / 256),
                                            (4, 8, 1, 0.0), (16, 2, 12, 1 - 24 / 192)])
def test_merged_share_leaves_the_warm_up_out(m, pp, v, want):
    assert merged_share(m, pp, v) == pytest.approx(want)


@settings(max_examples=20, deadline=None)
@given(share=st.floats(0, 1), interference=st.floats(0, 0.5))
def test_overlap_never_slows_the_layer_and_keeps_its_sum(qwen, share, interference):
    """The overlapped part is never slower, shorter by at most share x (t_f + t_b - t_pair),
    and keeps forward + backward = compute + exposed + host wait."""
    sim = qwen[False].run
    part = Part.of(sim)
    device = dataclasses.replace(H100.device, comm_compute_interference=interference)
    o = overlapped(part, sim, share, device)
    total = part.forward_s + part.backward_s
    assert o.forward_s <= part.forward_s and o.backward_s <= part.backward_s
    saved = total - (o.forward_s + o.backward_s)
    assert saved == pytest.approx(share * max(0.0, total - pair_s(sim, device)), abs=1e-15)
    assert o.forward_s + o.backward_s == pytest.approx(
        o.compute_s + o.tp_exposed_s + o.host_wait_s, rel=1e-9)


def test_overlap_speeds_up_the_step_and_changes_only_the_moe_layers():
    """At the recipes' 4,096 tokens (at 1,024 the host's issue sets the pace either way)."""
    off, on = (tpsim.predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", overlap_moe_comm=ov,
                             **{**QWEN, "seq_len": 4096}) for ov in (False, True))
    assert on.step.time_s < off.step.time_s
    assert on.step.ep_comm_exposed_s < off.step.ep_comm_exposed_s
    assert on.layer == off.layer and on.model.embedding_s == off.model.embedding_s


@pytest.mark.parametrize("kw", [
    dict(model="gpt3-125m", ep=1),
    dict(ep=1, expert_tp=1, tp=2, sequence_parallel=True, dp=8),
    dict(moe_dispatcher="allgather"),
    dict(recompute="full"),
    dict(pp=2, dp=8, ep=8),
])
def test_refusals_name_the_flag(kw):
    kw = {"model": "qwen3-30b-a3b", **QWEN, "nodes": None, **kw}
    with pytest.raises(ConfigError, match="--overlap-moe-comm"):
        tpsim.predict(kw.pop("model"), "dgx-h100-ndr-cluster", overlap_moe_comm=True, **kw)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1e-2), min_size=8, max_size=8), st.floats(0.0, 0.9))
def test_slots_never_slower_than_serial_and_equal_it_without_a2a(t, i):
    """Each slot is the longer of its two ops and at most their sum, so the pair is never longer
    than the forward and backward one after the other, and with no all-to-all it is the
    compute alone: P_f + M_b + M_f + P_b."""
    p_f, d_f, m_f, c_f, c_b, m_b, d_b, p_b = t
    slots = ((c_b, p_f), (d_f, m_b), (d_b, m_f), (c_f, p_b))
    pair = sum(beside(a, c, i) for a, c in slots)
    for a, c in slots:
        assert max(a, c) <= beside(a, c, i) <= a + c + 1e-18
    assert pair <= sum(t) + 1e-15
    assert sum(beside(0.0, c, i) for _, c in slots) == pytest.approx(p_f + m_b + m_f + p_b)

