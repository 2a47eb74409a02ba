"""NCCL's tuning-model corrections (tree correction, ring plateau, LL's host cap) against
tuning.cc's tables and hand-derived closed forms on hand-made topologies."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tpsim.cost.collectives import collective_time
from tpsim.cost.nccl_tuning import TREE_CORRECTION, ring_plateau, tree_correction

from tests.conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}
IB = {"name": "ib", "size": 4, "bandwidth_GBps": 25, "nics_per_node": 8, "latency_us": 10}
LL = {"collective_protocols": {"simple": {}, "ll": {"bandwidth_fraction": 0.5}}}


def test_tree_correction_indexes_log2_of_64_byte_units():
    """tuning.cc: logSize = log2i(S >> 6). 1 MiB - 1 B -> index 13: LL 0.4, LL128 0.6, Simple 0.5.
    1 MiB -> index 14 (LL 0.5), held at 0.4 by the envelope: 1 MiB takes at least what 1 MiB - 1 B
    took; 3 MiB (index 15) is LL's 0.6 again. Below 64 B: 1; 512 MiB: 0.9 (the envelope of 512 MiB - 1 B),
    1 GiB: 1."""
    assert [tree_correction(2**20 - 1, p) for p in ("ll", "ll128", "simple")] == [0.4, 0.6, 0.5]
    assert tree_correction(2**20, "ll") == pytest.approx(0.4)
    assert tree_correction(3 * 2**20, "ll") == pytest.approx(0.6)
    assert tree_correction(63, "simple") == tree_correction(2**30, "simple") == 1.0
    assert tree_correction(2**29, "simple") == pytest.approx(0.9)


@given(st.integers(1, 2**34), st.sampled_from(("ll", "ll128", "simple")))
def test_tree_time_never_falls_with_size(nbytes, proto):
    assert nbytes / tree_correction(nbytes, proto) <= \
        (nbytes + 1) / tree_correction(nbytes + 1, proto) * (1 + 1e-12)


@given(st.integers(1, 2**34), st.sampled_from(("ll", "ll128", "simple")))
def test_tree_correction_is_a_fraction(nbytes, proto):
    assert 0.4 <= tree_correction(nbytes, proto) <= 1.0


def test_tree_transfer_divides_by_the_correction():
    """32 ranks on 4 nodes, S = 1 MiB, Simple: 2 S / (100 GB/s x 0.5) = 41.943 us; latency
    2 ((8-1) 5 + 2 x 10) = 110 us."""
    c = collective_time("all-reduce", 2**20, 32, make_topology([NODE, IB]), "tree")
    assert c.transfer_s == pytest.approx(2 * 2**20 / 50e9, rel=1e-12)
    assert c.latency_s == pytest.approx(110e-6)


def test_ring_plateau_only_simple_all_reduce_across_nodes():
    assert ring_plateau("all-reduce", 2**20, 16, "simple", True) == 1.4
    assert ring_plateau("all-reduce", 2**20, 16, "ll", True) == 1.0
    assert ring_plateau("all-reduce", 2**20, 16, "simple", False) == 1.0
    assert ring_plateau("all-gather", 2**20, 16, "simple", True) == 1.0
    assert ring_plateau("all-reduce", 16 * 4096 - 1, 16, "simple", True) == 1.0


def test_ll_cap_bounds_the_network_stage_only():
    """2 nodes, LL (half the line): NICs 8 x 25 x 0.5 = 100 GB/s, above the 39 GB/s cap: the
    ring's network stage moves 2 (15/16) S at 39 GB/s; 4 nodes take the second cap (20.4 GB/s).
    LL128 and Simple keep the line rate; without the key nothing changes."""
    topo = make_topology([NODE, dict(IB, ll_max_busbw_GBps=[39.0, 20.4])], LL)
    plain = make_topology([NODE, IB], LL)
    s = 2**24
    c = collective_time("all-reduce", s, 16, topo, "ring", "ll")
    assert c.transfer_s == pytest.approx(2 * 15 / 16 * s / 39e9, rel=1e-12)
    c4 = collective_time("all-reduce", s, 32, topo, "ring", "ll")
    assert c4.transfer_s == pytest.approx(2 * 31 / 32 * s / 20.4e9, rel=1e-12)
    assert collective_time("all-reduce", s, 16, plain, "ring", "ll").transfer_s == \
        pytest.approx(2 * 15 / 16 * s / 50e9, rel=1e-12)        # the NVLink stage: 100 x 0.5
    assert collective_time("all-reduce", s, 16, topo, "ring").transfer_s == \
        collective_time("all-reduce", s, 16, plain, "ring").transfer_s


def test_tree_beyond_two_nodes_carries_one_and_a_half_times():
    """One 25 GB/s NIC per node, S = 1 GiB (no correction): two nodes move 2 S / 25 GB/s over the
    network stage; four nodes 1.5x that (an inner node takes both children's halves)."""
    topo = make_topology([NODE, dict(IB, nics_per_node=1)])
    two = collective_time("all-reduce", 2**30, 16, topo, "tree")
    four = collective_time("all-reduce", 2**30, 32, topo, "tree")
    assert two.transfer_s == pytest.approx(2 * 2**30 / 25e9, rel=1e-12)
    assert four.transfer_s == pytest.approx(1.5 * 2 * 2**30 / 25e9, rel=1e-12)


@pytest.mark.parametrize("nodes", [2, 4])
def test_ll_host_latency_is_paid_per_ll_network_hop(nodes):
    """ll_host_latency_us = 3 us on the network level, device latency scale 2 (not applied to
    it): a tree's LL latency grows by 2 log2(nodes) x 3 us (up and down), a ring's by its
    2 (nodes - 1) network hops x 3 us; LL128 and Simple, and one node, do not change."""
    scaled = {**LL, "collective_latency_scale": 2.0}
    host = make_topology([NODE, dict(IB, ll_host_latency_us=3.0)], scaled)
    plain = make_topology([NODE, IB], scaled)
    ranks, s = 8 * nodes, 2**16
    for algo, hops in (("tree", 2 * (nodes.bit_length() - 1)), ("ring", 2 * (nodes - 1))):
        extra = (collective_time("all-reduce", s, ranks, host, algo, "ll").latency_s
                 - collective_time("all-reduce", s, ranks, plain, algo, "ll").latency_s)
        assert extra == pytest.approx(hops * 3e-6, rel=1e-12), algo
        assert collective_time("all-reduce", s, ranks, host, algo, "simple").time_s == \
            collective_time("all-reduce", s, ranks, plain, algo, "simple").time_s
    assert collective_time("all-reduce", s, 8, host, "ring", "ll").time_s == \
        collective_time("all-reduce", s, 8, plain, "ring", "ll").time_s


def test_tree_cap_bounds_the_network_stage_after_the_correction():
    """NICs 8 x 25 GB/s = 200 GB/s (NVLink 400), tree caps Simple [150, 120], LL128 [100, 80] GB/s bus
    bandwidth. Two nodes, S = 1 GiB (correction 1): the Simple tree moves 2 S at 150 GB/s, not
    200; LL128 (fraction 0.92: 184 GB/s) at 100. S = 1 MiB (Simple correction 0.5): 2 S at
    0.5 x 150 (NCCL corrects the capped bandwidth). Four nodes: 2 S at 120 (the cap binds the
    bus bandwidth, load included: 200 / 1.5 = 133 > 120). Rings and LL are not capped."""
    protos = {"collective_protocols": {"simple": {}, "ll128": {"bandwidth_fraction": 0.92}}}
    caps = {"simple": [150.0, 120.0], "ll128": [100.0, 80.0]}
    fast = dict(NODE, bandwidth_GBps=400)           # NVLink not the bottleneck
    topo = make_topology([fast, dict(IB, tree_max_busbw_GBps=caps)], protos)
    plain = make_topology([fast, IB], protos)
    s = 2**30
    assert collective_time("all-reduce", s, 16, topo, "tree").transfer_s == \
        pytest.approx(2 * s / 150e9, rel=1e-12)
    assert collective_time("all-reduce", s, 16, topo, "tree", "ll128").transfer_s == \
        pytest.approx(2 * s / 100e9, rel=1e-12)
    assert collective_time("all-reduce", 2**20, 16, topo, "tree").transfer_s == \
        pytest.approx(2 * 2**20 / (0.5 * 150e9), rel=1e-12)
    assert collective_time("all-reduce", s, 32, topo, "tree").transfer_s == \
        pytest.approx(2 * s / 120e9, rel=1e-12)
    assert collective_time("all-reduce", s, 16, topo, "ring").time_s == \
        collective_time("all-reduce", s, 16, plain, "ring").time_s


def test_tree_cap_is_nccls_channels_times_per_channel_maximum():
    """dgx-h100-ndr-cluster: 8 tree channels x Hopper's perChMaxTreeBws (41.4 / 36.0 GB/s) and
    perChMaxTreeLL128Bws (36.7 / 29.0), 2 nodes / more (NCCL tuning.cc 2.18-2.30)."""
    from tpsim.cluster.topology import load_topology
    net = load_topology("dgx-h100-ndr-cluster").network
    assert net.tree_busbw_caps_Bps == {"simple": pytest.approx((8 * 41.4e9, 8 * 36.0e9)),
                                       "ll128": pytest.approx((8 * 36.7e9, 8 * 29.0e9))}


def test_tree_caps_refuse_other_protocols():
    from tpsim.base.errors import ConfigError
    with pytest.raises(ConfigError, match="tree_max_busbw_GBps"):
        make_topology([NODE, dict(IB, tree_max_busbw_GBps={"ll": [10.0]})])
