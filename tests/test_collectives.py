"""The collective cost model against hand-derived closed forms and invariants."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.collectives import (applicable_algorithms, bus_factor, collective_time, ring_hops)
from tpsim.errors import ConfigError
from tpsim.topology import load_topology, shipped_topologies

from conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}
IB = {"name": "ib", "size": 4, "bandwidth_GBps": 25, "nics_per_node": 8, "latency_us": 10}


def test_ring_all_reduce_closed_form():
    """N=4, S=1e8 B, B=100 GB/s, alpha=5 us:
    t = 2(N-1) alpha + 2(N-1)/N S/B = 6*5 us + 1.5 * 1e8 / 1e11 s = 30 us + 1500 us = 1530 us."""
    topo = make_topology([NODE])
    c = collective_time("all-reduce", 1e8, 4, topo, "ring")
    assert c.time_s == pytest.approx(1530e-6, rel=1e-12)
    assert c.algbw_Bps == pytest.approx(1e8 / 1530e-6)
    assert c.busbw_Bps == pytest.approx(c.algbw_Bps * 1.5)


def test_reduce_scatter_and_all_gather_closed_form():
    """N=4: (N-1) alpha + (N-1)/N S/B = 15 us + 0.75 * 1e-3 s = 765 us; busbw = algbw * 3/4."""
    topo = make_topology([NODE])
    for op in ("reduce-scatter", "all-gather"):
        c = collective_time(op, 1e8, 4, topo)
        assert c.time_s == pytest.approx(765e-6, rel=1e-12)
        assert c.busbw_Bps == pytest.approx(c.algbw_Bps * 0.75)


def test_launch_and_copy_terms_add():
    """launch 10 us, copy 500 GB/s: all-reduce streams 2S = 2e8 B -> +400 us; 1530 + 10 + 400."""
    topo = make_topology([NODE], {"collective_launch_us": 10, "collective_copy_bandwidth_GBps": 500})
    c = collective_time("all-reduce", 1e8, 4, topo, "ring")
    assert c.time_s == pytest.approx(1940e-6, rel=1e-12)
    assert (c.launch_s, c.copy_s) == (pytest.approx(10e-6), pytest.approx(400e-6))


def test_two_node_ring_uses_nic_aggregate_and_counts_inter_node_hops():
    """16 ranks = 2 nodes x 8. Hops per pass: 14 intra (alpha 5 us), 1 inter (10 us), two passes
    -> 2*(14*5 + 10) = 160 us. Bottleneck min(100 GB/s per GPU, 8 NICs x 25 GB/s = 200) = 100 GB/s:
    2*15/16 * 1e9 / 1e11 = 18.75 ms."""
    topo = make_topology([NODE, IB])
    c = collective_time("all-reduce", 1e9, 16, topo, "ring")
    assert c.latency_s == pytest.approx(160e-6)
    assert c.time_s == pytest.approx(160e-6 + 18.75e-3)


def test_nic_bound_cluster():
    """2 NICs of 25 GB/s per node -> 50 GB/s per node bounds a 16-rank ring: 2*15/16*1e9/5e10 = 37.5 ms."""
    topo = make_topology([NODE, dict(IB, nics_per_node=2)])
    c = collective_time("all-reduce", 1e9, 16, topo, "ring")
    assert c.transfer_s == pytest.approx(37.5e-3)


def test_ring_hops_sum_to_ranks_minus_one():
    topo = make_topology([NODE, IB])
    for n in (2, 8, 9, 16, 24, 32):
        assert sum(h for _, h in ring_hops(topo.place(n).spans)) == n - 1


def test_tree_closed_form():
    """32 ranks = 4 nodes: latency 2*((8-1)*5 + log2(4)*10) = 110 us; bandwidth 2S/min(100, 200) GB/s."""
    topo = make_topology([NODE, IB])
    c = collective_time("all-reduce", 1e9, 32, topo, "tree")
    assert c.time_s == pytest.approx(110e-6 + 2e9 / 100e9)


def test_hierarchical_closed_form():
    """16 ranks, g=8, m=2. Intra RS+AG: 2*(7*5 us + 7/8 * 1e9/1e11) = 70 us + 17.5 ms.
    Inter all-reduce of S/g on 200/8 = 25 GB/s per GPU: 2*1*10 us + 2*(1/2)*(1.25e8)/25e9 = 20 us + 5 ms."""
    topo = make_topology([NODE, IB])
    c = collective_time("all-reduce", 1e9, 16, topo, "hierarchical")
    assert c.time_s == pytest.approx(90e-6 + 17.5e-3 + 5e-3)


def test_nvls_closed_form_and_only_with_switch_reduction():
    """8 ranks, NVLS eff 0.5: 2*5 us + (1 + 1/8) * 1e9 / (100e9 * 0.5) = 10 us + 22.5 ms."""
    plain = make_topology([NODE])
    assert "nvls" not in applicable_algorithms("all-reduce", 8, plain)
    sharp = make_topology([dict(NODE, in_switch_reduction=True, efficiency={"nvls": 0.5})])
    c = collective_time("all-reduce", 1e9, 8, sharp, "nvls")
    assert c.time_s == pytest.approx(10e-6 + 22.5e-3)


def test_auto_picks_the_fastest():
    topo = make_topology([NODE, IB])
    for n, size in ((16, 1e3), (16, 1e9), (32, 1e6)):
        best = collective_time("all-reduce", size, n, topo)
        for a in applicable_algorithms("all-reduce", n, topo):
            assert best.time_s <= collective_time("all-reduce", size, n, topo, a).time_s


def test_one_rank_costs_nothing():
    c = collective_time("all-reduce", 1e6, 1, make_topology([NODE]))
    assert c.time_s == 0 and c.algorithm == "none"


def test_bad_algorithm_and_op_are_config_errors():
    topo = make_topology([NODE])
    with pytest.raises(ConfigError, match="tree"):
        collective_time("all-reduce", 1e6, 8, topo, "tree")   # single node: no tree
    with pytest.raises(ConfigError):
        collective_time("all-to-all", 1e6, 8, topo)
    with pytest.raises(ConfigError, match="at most 8"):
        collective_time("all-reduce", 1e6, 9, topo)


# ---------------------------------------------------------------- invariants (hypothesis)

SHIPPED = sorted(shipped_topologies())
ops = st.sampled_from(["all-reduce", "reduce-scatter", "all-gather", "broadcast"])
sizes = st.integers(min_value=1, max_value=2**34)


@st.composite
def placements(draw):
    topo = load_topology(draw(st.sampled_from(SHIPPED)))
    ranks = draw(st.integers(min_value=2, max_value=min(topo.max_ranks, 128)))
    return topo, ranks


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes, sizes)
def test_more_bytes_never_faster(pl, op, a, b):
    topo, n = pl
    lo, hi = sorted((a, b))
    assert collective_time(op, lo, n, topo).time_s <= collective_time(op, hi, n, topo).time_s


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes, st.floats(min_value=1.01, max_value=10))
def test_more_bandwidth_never_slower(pl, op, nbytes, factor):
    import dataclasses
    topo, n = pl
    faster = dataclasses.replace(topo, levels=tuple(
        dataclasses.replace(lv, bandwidth_Bps=lv.bandwidth_Bps * factor) for lv in topo.levels))
    assert collective_time(op, nbytes, n, faster).time_s <= collective_time(op, nbytes, n, topo).time_s


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes)
def test_never_below_the_bandwidth_bound(pl, op, nbytes):
    """No algorithm beats line rate: a ring moves bus_factor * S through some link, never faster
    than the fastest link in the topology; NVLS still sends each GPU's S through its own link."""
    topo, n = pl
    c = collective_time(op, nbytes, n, topo)
    fastest = max(lv.bandwidth_Bps * (lv.nics_per_node or lv.size) for lv in topo.levels)
    per_device_best = max(lv.bandwidth_Bps for lv in topo.levels[:1])
    bound = (nbytes / per_device_best if c.algorithm == "nvls"
             else bus_factor(op, n) * nbytes / max(per_device_best, fastest))
    assert c.time_s >= bound
    assert math.isfinite(c.busbw_Bps) and c.busbw_Bps > 0


def test_protocols_closed_form_and_auto_choice():
    """Simple launch 8 us; LL launch 3 us, hop latency x0.1, quarter bandwidth. N=4, alpha=5 us,
    B=100 GB/s. LL: 3 + 0.1*30 + 1.5*S/25e9. Simple: 8 + 30 + 1.5*S/1e11.
    S=1e4: LL 6.6 us < Simple 38.15 us. S=1e8: LL 6006 us > Simple 1538 us."""
    topo = make_topology([NODE], {"collective_protocols": {
        "simple": {"launch_us": 8}, "ll": {"launch_us": 3, "hop_latency_scale": 0.1,
                                           "bandwidth_fraction": 0.25}}})
    small = collective_time("all-reduce", 1e4, 4, topo)
    assert (small.protocol, small.time_s) == ("ll", pytest.approx(6e-6 + 1.5e4 / 25e9))
    big = collective_time("all-reduce", 1e8, 4, topo)
    assert (big.protocol, big.time_s) == ("simple", pytest.approx(38e-6 + 1.5e-3))
    forced = collective_time("all-reduce", 1e8, 4, topo, "ring", "ll")
    assert forced.time_s == pytest.approx(6e-6 + 1.5e8 / 25e9)


def test_protocols_must_include_simple_and_be_known():
    with pytest.raises(ConfigError, match="simple"):
        make_topology([NODE], {"collective_protocols": {"ll": {"launch_us": 1}}})
    with pytest.raises(ConfigError, match="collective_protocols.ll256"):
        make_topology([NODE], {"collective_protocols": {"simple": {}, "ll256": {}}})
    with pytest.raises(ConfigError, match="--protocol"):
        collective_time("all-reduce", 1e6, 4, make_topology([NODE]), protocol="ll")
