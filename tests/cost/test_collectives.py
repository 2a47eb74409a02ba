"""The collective cost model against closed forms derived by hand, on hand-made topologies.

Unless a test says otherwise the toy device has no launch, no copy pass, Simple only and
collective_latency_scale 1, and a level without ``hop_latency_us`` charges ``latency_us`` for every
algorithm and protocol: each expected number below follows from the docstring's arithmetic.
"""
from __future__ import annotations

import pytest

from tpsim.cost.collectives import applicable_algorithms, collective_time, ring_hops
from tpsim.base.errors import ConfigError
from tpsim.cost.nvls_pipeline import nvls_chunk_bytes, nvls_tree_chunk_bytes

from tests.conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}
IB = {"name": "ib", "size": 4, "bandwidth_GBps": 25, "nics_per_node": 8, "latency_us": 10}
SHARP = dict(NODE, in_switch_reduction=True, efficiency={"nvls": 0.5}, nvls_step_us=1)


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


def test_latency_scale_multiplies_every_latency_and_nothing_else():
    """collective_latency_scale 2 with launch 10 us: launch 20 us, ring latency 2 * 30 = 60 us,
    transfer still 1500 us: 1580 us."""
    topo = make_topology([NODE], {"collective_launch_us": 10, "collective_latency_scale": 2})
    c = collective_time("all-reduce", 1e8, 4, topo, "ring")
    assert (c.launch_s, c.latency_s, c.transfer_s) == pytest.approx((20e-6, 60e-6, 1500e-6))


def test_hop_latency_table_per_algorithm_and_protocol():
    """hop_latency_us ring.ll = 0.5 us, ll128 absent (falls back to latency_us = 5 us).
    N=4 ring all-reduce, 6 steps: LL latency 6 * 0.5 = 3 us; LL128 6 * 5 = 30 us."""
    topo = make_topology([dict(NODE, hop_latency_us={"ring": {"ll": 0.5}})],
                         {"collective_protocols": {"simple": {}, "ll": {}, "ll128": {}}})
    assert collective_time("all-reduce", 1e3, 4, topo, "ring", "ll").latency_s == pytest.approx(3e-6)
    assert collective_time("all-reduce", 1e3, 4, topo, "ring", "ll128").latency_s == \
        pytest.approx(30e-6)


def test_two_node_ring_uses_nic_aggregate_and_counts_inter_node_hops():
    """16 ranks = 2 nodes x 8. Hops per pass: 14 intra (alpha 5 us), 1 inter (10 us), two passes
    -> 2*(14*5 + 10) = 160 us, times NCCL's ring plateau 1.4 (Simple across nodes, S >= 16 x 4 KiB)
    = 224 us; 1 KiB (below the plateau) keeps 160 us. Bottleneck min(100 GB/s per GPU, 8 NICs x
    25 GB/s = 200) = 100 GB/s: 2*15/16 * 1e9 / 1e11 = 18.75 ms."""
    topo = make_topology([NODE, IB])
    c = collective_time("all-reduce", 1e9, 16, topo, "ring")
    assert c.latency_s == pytest.approx(224e-6)
    assert c.time_s == pytest.approx(224e-6 + 18.75e-3)
    assert collective_time("all-reduce", 2**10, 16, topo, "ring").latency_s == pytest.approx(160e-6)


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
    assert collective_time("all-reduce", 1e9, 16, topo).algorithm != "hierarchical"  # not NCCL's


def test_nvls_chunk_size_follows_nccls_rule():
    """8 GPUs x 16 channels = 128 concurrent ops, 128 KiB cap: 128 KiB from 64*128*128 KiB = 1 GiB,
    64 KiB from 8*128*64 KiB = 64 MiB, 32 KiB from 2*128*32 KiB = 8 MiB, 16 KiB below."""
    for nbytes, chunk in ((2**30, 2**17), (2**30 - 1, 2**16), (2**26, 2**16), (2**26 - 1, 2**15),
                          (2**23, 2**15), (2**23 - 1, 2**14), (1, 2**14)):
        assert nvls_chunk_bytes(nbytes, 128, 2**17) == chunk


def test_nvls_closed_form_large():
    """8 GPUs, B eff = 100 GB/s * 0.5 = 5e10 B/s, step 1 us, NVLS latency = latency_us = 5 us,
    S = 2^29: chunk 64 KiB (S < 1 GiB, >= 64 MiB), ops = 16 * 8 = 128, m = 2^29 / (128 * 2^16) = 64,
    w = 1 + 1/8 = 1.125. One step: 1 us + 1.125 * 2^16 * 128 / 5e10 s = 1 + 188.74368 us.
    t = 5 us + (64 + 1) * 189.74368 us = 12338.339 us; transfer = 1.125 * 2^29 / 5e10 = 12079.596 us,
    pipeline = 64 * 1 us + 189.74368 us = 253.744 us."""
    plain = make_topology([NODE])
    assert "nvls" not in applicable_algorithms("all-reduce", 8, plain)
    c = collective_time("all-reduce", 2**29, 8, make_topology([SHARP]), "nvls")
    assert c.time_s == pytest.approx(5e-6 + 65 * 189.74368e-6, rel=1e-9)
    assert (c.transfer_s, c.pipeline_s) == pytest.approx((12079.5955e-6, 253.74368e-6), rel=1e-7)


def test_nvls_closed_form_one_chunk_per_pipeline():
    """S = 2^17 on 128 ops: each pipeline carries one chunk of S/128 = 1 KiB through both stages:
    t = 5 us + 2 (1 us + 1.125 * 2^17 / 5e10 s) = 5 + 2 (1 + 2.949) us = 12.898 us."""
    c = collective_time("all-reduce", 2**17, 8, make_topology([SHARP]), "nvls")
    assert c.time_s == pytest.approx(5e-6 + 2 * (1e-6 + 1.125 * 2**17 / 5e10), rel=1e-12)


def test_nvls_never_cheaper_just_above_a_chunk_switch():
    """Step 50 us. At 64 MiB = 2^26 NCCL doubles the chunk to 64 KiB: by its rule alone 2^26 takes
    m + 1 = 9 steps of (50 + 1.125 * 2^16 * 128 / 5e10 s) = 9 * 238.744 = 2148.7 us, while 2^26 - 1
    byte, on 32 KiB chunks, takes 17 steps of (50 + 94.372) = 2454.3 us. The envelope holds
    t(2^26) at 5 + 2454.3 us, so a larger message never finishes sooner."""
    topo = make_topology([dict(SHARP, nvls_step_us=50)])
    c = collective_time("all-reduce", 2**26, 8, topo, "nvls")
    assert c.time_s == pytest.approx(5e-6 + 17 * (50e-6 + 1.125 * 2**15 * 128 / 5e10), rel=1e-12)
    for switch in (2**23, 2**26, 2**30):
        below = collective_time("all-reduce", switch - 1, 8, topo, "nvls").time_s
        assert collective_time("all-reduce", switch, 8, topo, "nvls").time_s >= below


def test_nvls_tree_closed_form():
    """2 nodes x 8 GPUs, NVLS inside (as above), one tree hop across nodes (latency_us 10 us, up
    and down): latency 5 + 2 * 1 * 10 = 25 us. S = 2^29, ops = 128: NVLS-tree chunk 128 KiB
    (S >= 32 ops 128 KiB = 2^29), m = 2^29 / (128 * 2^17) = 32. A switch stage: a = 1 us + 1.125 *
    2^24 / 5e10 s = 378.48736 us; a network stage: b = 2^24 / (8 NICs * 25 GB/s) = 83.88608 us;
    two of each: t = 25 us + (32 - 1) a + 2 a + 2 b; transfer = 1.125 * 2^29 / 5e10 = 12079.5955 us."""
    topo = make_topology([SHARP, IB])
    assert "nvls_tree" in applicable_algorithms("all-reduce", 16, topo)
    c = collective_time("all-reduce", 2**29, 16, topo, "nvls_tree")
    total = 33 * 378.48736e-6 + 2 * 83.88608e-6
    assert c.time_s == pytest.approx(25e-6 + total, rel=1e-9)
    assert c.transfer_s == pytest.approx(12079.5955e-6, rel=1e-7)
    assert c.pipeline_s == pytest.approx(total - c.transfer_s, rel=1e-9)
    assert c.formula == "tpsim.cost.collectives.nvls_tree_time"


def test_nvls_tree_network_bound_deeper_than_two_nodes():
    """4 nodes, NICs cut to 1 x 25 GB/s: k = 2, the network moves 2 bytes per byte at 25 GB/s.
    Chunk 64 KiB (at most 64 KiB from 4 nodes), m = 2^29 / 2^23 = 64; a = 1 + 188.74368 us,
    b = 2 * 2^23 / 25e9 = 671.08864 us paces; 2 switch and 2 log2(4) = 4 network stages; latency
    5 + 2 * 2 * 10 = 45 us: t = 45 us + 63 b + 2 a + 4 b; transfer = 2 * 2^29 / 25e9 = 42949.673 us."""
    topo = make_topology([SHARP, dict(IB, nics_per_node=1)])
    c = collective_time("all-reduce", 2**29, 32, topo, "nvls_tree")
    assert c.time_s == pytest.approx(45e-6 + 67 * 671.08864e-6 + 2 * 189.74368e-6, rel=1e-9)
    assert c.transfer_s == pytest.approx(2 * 2**29 / 25e9, rel=1e-12)


def test_nvls_tree_chunk_follows_nccls_rule():
    """ops = 128, NCCL_NVLS_CHUNKSIZE 128 KiB: 128 KiB from ops x 128 KiB x 4 = 64 MiB, 64 KiB from
    ops x 64 KiB = 8 MiB, 32 KiB below; from 4 nodes at most 64 KiB."""
    for nbytes, nodes, chunk in ((2**26, 2, 2**17), (2**26 - 1, 2, 2**16), (2**23, 2, 2**16),
                                 (2**23 - 1, 2, 2**15), (2**30, 4, 2**16), (2**22, 4, 2**15)):
        assert nvls_tree_chunk_bytes(nbytes, 128, 2**17, nodes) == chunk


def test_auto_picks_the_fastest_ncc_algorithm():
    topo = make_topology([SHARP, IB])
    for n, size in ((16, 1e3), (16, 1e9), (32, 1e6), (8, 1e9), (8, 1e3)):
        best = collective_time("all-reduce", size, n, topo)
        for a in applicable_algorithms("all-reduce", n, topo):
            if a != "hierarchical":
                assert best.time_s <= collective_time("all-reduce", size, n, topo, a).time_s


def test_one_rank_costs_nothing():
    c = collective_time("all-reduce", 1e6, 1, make_topology([NODE]))
    assert c.time_s == 0 and c.algorithm == "none"


def test_bad_algorithm_and_op_are_config_errors():
    topo = make_topology([NODE])
    with pytest.raises(ConfigError, match="tree"):
        collective_time("all-reduce", 1e6, 8, topo, "tree")   # single node: no tree
    with pytest.raises(ConfigError, match="one of all-reduce"):
        collective_time("gather", 1e6, 8, topo)   # alltoall: nccl-tests' all-to-all
    with pytest.raises(ConfigError, match="at most 8"):
        collective_time("all-reduce", 1e6, 9, topo)


def test_protocols_closed_form_and_auto_choice():
    """Simple launch 8 us; LL launch 3 us, hop 0.5 us, quarter bandwidth. N=4, alpha=5 us,
    B=100 GB/s. LL: 3 + 6*0.5 + 1.5*S/25e9. Simple: 8 + 30 + 1.5*S/1e11.
    S=1e4: LL 6.6 us < Simple 38.15 us. S=1e8: LL 6006 us > Simple 1538 us."""
    topo = make_topology([dict(NODE, hop_latency_us={"ring": {"ll": 0.5}})], {
        "collective_protocols": {"simple": {"launch_us": 8},
                                 "ll": {"launch_us": 3, "bandwidth_fraction": 0.25}}})
    small = collective_time("all-reduce", 1e4, 4, topo)
    assert (small.protocol, small.time_s) == ("ll", pytest.approx(6e-6 + 1.5e4 / 25e9))
    big = collective_time("all-reduce", 1e8, 4, topo)
    assert (big.protocol, big.time_s) == ("simple", pytest.approx(38e-6 + 1.5e-3))
    forced = collective_time("all-reduce", 1e8, 4, topo, "ring", "ll")
    assert forced.time_s == pytest.approx(6e-6 + 1.5e8 / 25e9)


def test_protocols_and_hop_tables_must_be_known():
    with pytest.raises(ConfigError, match="simple"):
        make_topology([NODE], {"collective_protocols": {"ll": {"launch_us": 1}}})
    with pytest.raises(ConfigError, match="collective_protocols.ll256"):
        make_topology([NODE], {"collective_protocols": {"simple": {}, "ll256": {}}})
    with pytest.raises(ConfigError, match="--protocol"):
        collective_time("all-reduce", 1e6, 4, make_topology([NODE]), protocol="ll")
    with pytest.raises(ConfigError, match="hop_latency_us.butterfly"):
        make_topology([dict(NODE, hop_latency_us={"butterfly": {"ll": 1}})])
    with pytest.raises(ConfigError, match="hop_latency_us.ring.ll64"):
        make_topology([dict(NODE, hop_latency_us={"ring": {"ll64": 1}})])
    with pytest.raises(ConfigError, match="hop_latency_us.ring.ll"):
        make_topology([dict(NODE, hop_latency_us={"ring": {"ll": -1}})])


# ---------------------------------------------------------------- invariants (hypothesis)

import dataclasses  # noqa: E402
import math  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tpsim.cost.collectives import bus_factor  # noqa: E402
from tpsim.cluster.topology import load_topology, shipped_topologies  # noqa: E402

SHIPPED = sorted(shipped_topologies())
TOPOS = {name: load_topology(name) for name in SHIPPED}
ops = st.sampled_from(["all-reduce", "reduce-scatter", "all-gather", "broadcast"])
sizes = st.integers(min_value=1, max_value=2**34)


@st.composite
def placements(draw):
    topo = TOPOS[draw(st.sampled_from(SHIPPED))]
    ranks = draw(st.integers(min_value=2, max_value=min(topo.max_ranks, 128)))
    return topo, ranks


def _levels(topo, changes):
    return dataclasses.replace(topo, levels=tuple(dataclasses.replace(lv, **changes(lv))
                                                  for lv in topo.levels))


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes, sizes)
def test_more_bytes_never_faster(pl, op, a, b):
    topo, n = pl
    lo, hi = sorted((a, b))
    assert collective_time(op, lo, n, topo).time_s <= collective_time(op, hi, n, topo).time_s


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes, st.floats(min_value=1.01, max_value=10))
def test_more_bandwidth_never_slower(pl, op, nbytes, factor):
    topo, n = pl
    faster = _levels(topo, lambda lv: {"bandwidth_Bps": lv.bandwidth_Bps * factor})
    assert collective_time(op, nbytes, n, faster).time_s <= collective_time(op, nbytes, n, topo).time_s


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes, st.floats(min_value=1.01, max_value=10))
def test_more_latency_never_faster(pl, op, nbytes, factor):
    """Every latency term (per-hop tables, NVLS step, device scale) longer: never faster."""
    topo, n = pl
    slower = _levels(topo, lambda lv: {
        "latency_s": lv.latency_s * factor, "nvls_step_s": lv.nvls_step_s * factor,
        "hop_latencies": {a: {p: v * factor for p, v in ps.items()}
                          for a, ps in (lv.hop_latencies or {}).items()} or None})
    dev = dataclasses.replace(slower.device, collective_latency_scale=(
        topo.device.collective_latency_scale * factor))
    slower = dataclasses.replace(slower, device=dev)
    assert collective_time(op, nbytes, n, slower).time_s >= collective_time(op, nbytes, n, topo).time_s


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SHIPPED), ops, sizes, st.integers(2, 8), st.integers(2, 8))
def test_more_ranks_in_one_node_never_faster_on_a_ring(name, op, nbytes, a, b):
    """A ring's steps and its bus factor both grow with the ranks it joins on one level (NVLS is
    the exception: each GPU's traffic (1 + 1/n) S shrinks as the node fills)."""
    topo = TOPOS[name]
    lo, hi = sorted((min(a, topo.devices_per_node), min(b, topo.devices_per_node)))
    assert collective_time(op, nbytes, lo, topo, "ring").time_s <= \
        collective_time(op, nbytes, hi, topo, "ring").time_s


@settings(max_examples=150, deadline=None)
@given(placements(), ops, sizes)
def test_never_below_the_bandwidth_bound(pl, op, nbytes):
    """No algorithm beats line rate: a ring moves bus_factor * S through some link, never faster
    than the fastest link in the topology; NVLS still sends each GPU's S through its own link."""
    topo, n = pl
    c = collective_time(op, nbytes, n, topo)
    fastest = max(lv.bandwidth_Bps * (lv.nics_per_node or lv.size) for lv in topo.levels)
    per_device_best = max(lv.bandwidth_Bps for lv in topo.levels[:1])
    bound = (nbytes / per_device_best if c.algorithm.startswith("nvls")
             else bus_factor(op, n) * nbytes / max(per_device_best, fastest))
    assert c.time_s >= bound
    assert math.isfinite(c.busbw_Bps) and c.busbw_Bps > 0
    assert c.time_s == pytest.approx(c.launch_s + c.latency_s + c.transfer_s + c.pipeline_s
                                     + c.copy_s, rel=1e-12)
