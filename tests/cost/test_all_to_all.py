"""All-to-all and the two-level MoE dispatch against closed forms derived by hand.

Toy devices as in test_collectives.py: no launch, no copy pass, latency_scale 1, every hop
``latency_us``; each expected number follows from the module docstring's arithmetic.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tpsim.base.errors import ConfigError
from tpsim.cost.all_to_all import (flex_dispatch_time, hierarchical_dispatch_time,
                                   round_robin_fanout, uniform_fanout)
from tpsim.cost.collectives import applicable_algorithms, collective_time

from tests.conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}
IB = {"name": "ib", "size": 4, "bandwidth_GBps": 25, "nics_per_node": 8, "latency_us": 10}


def test_all_to_all_inside_a_node_closed_form():
    """n=8, S=8e8 B, B=100 GB/s, one hop of 5 us: a rank sends 7/8 S = 7e8 B over its own
    links: 7000 us + 5 us; busbw = algbw 7/8 = B (the link, fully used)."""
    c = collective_time("all-to-all", 8e8, 8, make_topology([NODE]))
    assert c.time_s == pytest.approx(7005e-6, rel=1e-12)
    assert (c.algorithm, c.protocol) == ("p2p", "simple")
    assert c.busbw_Bps == pytest.approx(c.algbw_Bps * 7 / 8)
    assert c.transfer_s == pytest.approx(7000e-6)


def test_all_to_all_across_nodes_is_bound_by_each_rank_nic():
    """n=32 on 4 nodes of 8 (one 25 GB/s NIC per GPU), S=3.2e8 B: NVLink carries 7/32 S = 7e7 B
    at 100 GB/s (700 us); the NIC carries the inter-node share 24/32 S = 2.4e8 B at 25 GB/s
    (9600 us), the bottleneck; latency one hop per level, 5 + 10 us."""
    topo = make_topology([NODE, IB])
    c = collective_time("all-to-all", 3.2e8, 32, topo)
    assert c.transfer_s == pytest.approx(9600e-6, rel=1e-12)
    assert c.latency_s == pytest.approx(15e-6)
    assert c.time_s == pytest.approx(9615e-6, rel=1e-12)


def test_shared_nics_slow_the_network_stage():
    """Two NICs for eight GPUs: a rank's share is 2 x 25 / 8 = 6.25 GB/s, four times slower:
    2.4e8 B / 6.25e9 = 38400 us."""
    topo = make_topology([NODE, dict(IB, nics_per_node=2)])
    assert collective_time("all-to-all", 3.2e8, 32, topo).transfer_s == pytest.approx(38400e-6)


def test_all_to_all_options():
    topo = make_topology([NODE])
    assert applicable_algorithms("all-to-all", 8, topo) == ["p2p"]
    assert collective_time("all-to-all", 1e6, 1, topo).time_s == 0
    two = make_topology([NODE], {"collective_protocols": {"simple": {"launch_us": 1},
                                                          "ll": {"launch_us": 1}}})
    with pytest.raises(ConfigError, match="simple for the p2p"):
        collective_time("all-to-all", 1e6, 8, two, protocol="ll")
    assert collective_time("all-to-all", 1e6, 8, two).protocol == "simple"
    with pytest.raises(ConfigError, match=r"available for all-to-all.*\(p2p\)"):
        collective_time("all-to-all", 1e6, 8, topo, algorithm="ring")
    with pytest.raises(ConfigError, match="p2p"):     # p2p is for all-to-all only
        collective_time("all-reduce", 1e6, 8, topo, algorithm="p2p")


LL = {"collective_protocols": {"simple": {"launch_us": 8}, "ll": {"launch_us": 2,
                                                                 "bandwidth_fraction": 0.5}}}
NODE_LL = dict(NODE, hop_latency_us={"ring": {"simple": 5, "ll": 1}})


def test_small_all_to_all_inside_a_node_runs_on_ll():
    """NCCL's rule (enqueue.cc addP2pToPlan, P2P_LL_THRESHOLD 16 KiB): n=8, S = 8 x 16384 B, a
    peer's 16 KiB on LL: launch 2 us + hop 1 us + 7 x 16384 B at 50 GB/s (LL's half of 100);
    one byte more a peer and Simple: launch 8 + hop 5 + 7 x 16385 B at 100 GB/s."""
    topo = make_topology([NODE_LL], LL)
    c = collective_time("all-to-all", 8 * 16384, 8, topo)
    assert c.protocol == "ll"
    assert c.time_s == pytest.approx(3e-6 + 7 * 16384 / 50e9, rel=1e-12)
    c = collective_time("all-to-all", 8 * 16385, 8, topo)
    assert c.protocol == "simple"
    assert c.time_s == pytest.approx(13e-6 + 7 * 16385 / 100e9, rel=1e-12)
    forced = collective_time("all-to-all", 8 * 16384, 8, topo, protocol="simple")
    assert forced.protocol == "simple"                      # NCCL_PROTO=Simple
    assert forced.time_s == pytest.approx(13e-6 + 7 * 16384 / 100e9, rel=1e-12)


def test_small_all_to_all_across_nodes_stays_on_simple():
    """Across nodes the host proxy's per-peer work is not priced, so neither is LL there."""
    topo = make_topology([NODE_LL, IB], LL)
    assert collective_time("all-to-all", 32 * 1024, 32, topo).protocol == "simple"
    assert collective_time("all-to-all", 8 * 1024, 8, topo).protocol == "ll"


def test_copy_pass_streams_the_send_buffer_once():
    """copy 500 GB/s: S = 8e8 B -> +1600 us on top of the 7005 us above."""
    topo = make_topology([NODE], {"collective_copy_bandwidth_GBps": 500})
    c = collective_time("all-to-all", 8e8, 8, topo)
    assert c.copy_s == pytest.approx(1600e-6)
    assert c.time_s == pytest.approx(8605e-6)


def test_hierarchical_dispatch_closed_form():
    """32 ranks on 4 nodes, T = 1000 tokens of b = 1e4 B, r = 2 remote nodes and R = 6 ranks
    per token: network 2e7 B at 25 GB/s = 800 us; NVLink 6e7 x 7/8 = 5.25e7 B at 100 GB/s =
    525 us; the network sets the pace: 800 + 15 us."""
    topo = make_topology([NODE, IB])
    d = hierarchical_dispatch_time(1000, 1e4, topo.place(32), topo, 2.0, 6.0)
    assert (d.network_bytes, d.nvlink_bytes) == (2e7, pytest.approx(5.25e7))
    assert (d.network_s, d.nvlink_s) == (pytest.approx(800e-6), pytest.approx(525e-6))
    assert d.time_s == pytest.approx(815e-6)
    assert d.bottleneck == "network"


def test_dispatch_sends_a_token_once_per_node_not_once_per_gpu():
    """The same routing as a flat all-to-all would send each token to every remote GPU it
    needs; the two-level dispatch sends it to each remote node once, so its network bytes are
    r/R_remote of the flat ones: here 2 nodes vs 4.5 remote GPUs."""
    topo = make_topology([NODE, IB])
    d = hierarchical_dispatch_time(1000, 1e4, topo.place(32), topo, 2.0, 6.0)
    flat_remote_gpus = 6.0 * 24 / 31          # of the 6 ranks a token reaches, those off-node
    assert d.network_bytes < 1000 * 1e4 * flat_remote_gpus


def test_dispatch_inside_one_node_is_nvlink_only():
    """One node: r = 0, NVLink 1000 x 1e4 x 4 x 7/8 = 3.5e7 B at 100 GB/s = 350 us + 5 us."""
    topo = make_topology([NODE])
    d = hierarchical_dispatch_time(1000, 1e4, topo.place(8), topo, 0.0, 4.0)
    assert d.network_s == 0 and d.bottleneck == "nvlink"
    assert d.time_s == pytest.approx(355e-6)


def test_hybridep_across_nodes_runs_at_its_own_efficiency():
    """HybridEP across nodes: each stage at the level's efficiency.hybridep (NVLink 0.5,
    network 0.4 here); ring for DeepEP and for HybridEP inside one node or on a level that
    lists none. T = 1000, b = 1e4, E = 64, k = 4, 32 ranks: (r, R) = uniform_fanout."""
    nvl = dict(NODE, efficiency={"ring": 1.0, "hybridep": 0.5})
    topo = make_topology([nvl, dict(IB, efficiency={"ring": 1.0, "hybridep": 0.4})])
    r, R = uniform_fanout(64, 4, 32, 8)
    line = hierarchical_dispatch_time(1000, 1e4, topo.place(32), topo, r, R)
    hyb = flex_dispatch_time(1000, 1e4, 64, 4, topo.place(32), topo, "hybridep")
    assert hyb.transfer_s == pytest.approx(max(line.network_s / 0.4, line.nvlink_s / 0.5))
    assert flex_dispatch_time(1000, 1e4, 64, 4, topo.place(32), topo).transfer_s == \
        pytest.approx(max(line.network_s, line.nvlink_s))
    one = make_topology([nvl])
    inside = hierarchical_dispatch_time(1000, 1e4, one.place(8), one, 0.0, 4.0)
    assert flex_dispatch_time(1000, 1e4, 8, 4, one.place(8), one, "hybridep").transfer_s == \
        pytest.approx(inside.nvlink_s)
    plain = make_topology([NODE, IB])
    assert flex_dispatch_time(1000, 1e4, 64, 4, plain.place(32), plain, "hybridep").time_s == \
        flex_dispatch_time(1000, 1e4, 64, 4, plain.place(32), plain).time_s


def test_deepep_runs_at_its_efficiency_bounded_by_its_sms_inside_a_node():
    """DeepEP: NVLink at efficiency.deepep (0.5 here); inside a node also at least
    T b R / (sms r), r = deepep_sm_copy_GBps: T = 1000, b = 1e4, R = 4 on 8 ranks: NVLink
    3.5e7 B / 50 GB/s = 700 us; 4e7 B / (20 x 1 GB/s) = 2000 us binds, at 40 SMs 1000 us."""
    nvl = dict(NODE, efficiency={"ring": 1.0, "deepep": 0.5})
    topo = make_topology([nvl], {"deepep_sm_copy_GBps": 1.0})
    free = hierarchical_dispatch_time(1000, 1e4, topo.place(8), topo, 0.0, 4.0, "deepep")
    assert free.nvlink_s == pytest.approx(700e-6)
    for sms, want in ((20, 2000e-6), (40, 1000e-6), (200, 700e-6)):
        d = hierarchical_dispatch_time(1000, 1e4, topo.place(8), topo, 0.0, 4.0, "deepep", sms)
        assert d.nvlink_s == pytest.approx(want)
    across = make_topology([nvl, IB], {"deepep_sm_copy_GBps": 1.0})
    r, R = uniform_fanout(64, 4, 32, 8)
    line = hierarchical_dispatch_time(1000, 1e4, across.place(32), across, r, R)
    deep = flex_dispatch_time(1000, 1e4, 64, 4, across.place(32), across)
    assert deep.transfer_s == pytest.approx(max(line.network_s, line.nvlink_s / 0.5))


def test_hybridep_rows_carry_their_target_nodes_probabilities():
    """With ``probs`` each row is p = 4 (E/n) g bytes longer: E = 64 experts on n = 32 ranks,
    g = 8 a node: 64 bytes on b = 1e4, on both stages; S counts them."""
    topo = make_topology([NODE, IB])
    r, R = uniform_fanout(64, 4, 32, 8)
    with_p = flex_dispatch_time(1000, 1e4, 64, 4, topo.place(32), topo, "hybridep", True)
    want = hierarchical_dispatch_time(1000, 1e4 + 64, topo.place(32), topo, r, R)
    assert with_p.time_s == pytest.approx(want.time_s) and with_p.nbytes == 1000 * (1e4 + 64)


def test_uniform_fanout_matches_a_sampled_router():
    """E=64 experts on 16 ranks (2 nodes of 8), top-6: the hypergeometric expectation against
    20,000 sampled tokens; and the closed forms at the ends (top-1: one rank, and 1/2 chance of
    the other node)."""
    remote, ranks = uniform_fanout(64, 6, 16, 8)
    rng = np.random.default_rng(0)
    picks = np.argsort(rng.random((20000, 64)), axis=1)[:, :6]
    rank_of = picks // 4
    sampled_ranks = np.mean([len(set(r)) for r in rank_of])
    sampled_remote = np.mean([(r // 8 == 1).any() for r in rank_of])   # token on node 0
    assert ranks == pytest.approx(sampled_ranks, rel=0.01)
    assert remote == pytest.approx(sampled_remote, rel=0.01)
    assert uniform_fanout(64, 1, 16, 8) == pytest.approx((0.5, 1.0))
    assert uniform_fanout(64, 64, 16, 8) == pytest.approx((1.0, 16.0))
    assert math.isclose(uniform_fanout(64, 6, 8, 8)[0], 0.0)


def test_cli_prices_all_to_all_table_sweep_and_json(capsys):
    """`tpsim collective --op all-to-all`: one row, a sweep, JSON with busbw = algbw 7/8."""
    import json
    from tpsim.cli import main
    assert main(["collective", "--op", "all-to-all", "--bytes", "64MiB"]) == 0
    assert "all_to_all_time" in capsys.readouterr().out
    assert main(["collective", "--op", "all-to-all", "--sweep", "--max-bytes", "1MiB",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 11 and {r["algorithm"] for r in rows} == {"p2p"}
    assert rows[-1]["busbw_GBps"] == pytest.approx(rows[-1]["algbw_GBps"] * 7 / 8)


@pytest.mark.parametrize("experts, k, ranks, want", [
    (128, 8, 8, (0.0, 1.0)),          # Qwen3-30B-A3B, EP 8: 16 experts a rank, 8 in a row
    (256, 8, 64, (7 / 8, 2.0)),       # DeepSeek-V3, EP 64 on 8 nodes: 2 ranks of one node
    (256, 8, 16, (0.5, 1.0)),         # 16 experts a rank on 2 nodes: the other node half the time
    (8, 2, 8, (0.0, 2.0))])           # one expert a rank in one node: 2 ranks, no network
def test_round_robin_fanout_closed_forms(experts, k, ranks, want):
    """Token t takes experts k t .. k t + k - 1 mod E on contiguous shards of E/n: R ranks,
    r = (nodes spanned) (1 - 1/m) other nodes (AutoModel's FakeBalancedGate)."""
    assert round_robin_fanout(experts, k, ranks, 8) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("experts, k, ranks", [(128, 8, 8), (256, 8, 64), (64, 6, 16),
                                                (160, 6, 32), (384, 8, 32)])
def test_round_robin_reaches_no_more_than_a_random_router(experts, k, ranks):
    """Consecutive experts share ranks and nodes: the round-robin gate's token reaches at most
    the ranks and nodes a uniform top-k reaches on average, and at least ceil(k / (E/n))
    ranks (one when k fits in a shard)."""
    r, R = round_robin_fanout(experts, k, ranks, 8)
    ur, uR = uniform_fanout(experts, k, ranks, 8)
    assert r <= ur + 1e-12 and R <= uR + 1e-12
    assert R >= math.ceil(k / (experts // ranks))


def test_flex_dispatch_prices_the_round_robin_fanout():
    """routing='round-robin': the same two-level formula at round_robin_fanout's (r, R)."""
    topo = make_topology([NODE, IB])
    r, R = round_robin_fanout(64, 4, 32, 8)
    want = hierarchical_dispatch_time(1000, 1e4, topo.place(32), topo, r, R)
    got = flex_dispatch_time(1000, 1e4, 64, 4, topo.place(32), topo, routing="round-robin")
    assert got.time_s == want.time_s
    assert got.time_s < flex_dispatch_time(1000, 1e4, 64, 4, topo.place(32), topo).time_s
