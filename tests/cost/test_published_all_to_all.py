"""The two-level MoE dispatch against DeepEP's published H800 bandwidths (used in no fit).

tests/data/published_collectives/deepep_h800_normal.csv and its README section give the
setting. The topology is the shipped dgx-h100-ndr-cluster with the H800's NVLink line rate
(200 GB/s per direction instead of 450); the efficiencies stay the shipped ones: NDR's ring
0.92 (fitted on no DeepEP number) and NVLink's ``efficiency.deepep`` 0.639, carried over from
DeepEP's B200 curve (``bench/deepep_published.py``). Tokens are routed as DeepEP's benchmark
routes them: |N(0,1)| + 1 scores, the top min(nodes, 4) nodes by their best expert, then the
top 8 experts among those nodes' experts (seeded; 4096 tokens), on its test's 24 SMs.

Stated tolerance: every point within 10% (EP 8 -6% / -8%, EP 16 +2% / +3%, EP 32 +4% / +7%,
EP 64 +2% / +5%). At NCCL's 0.82 of the NVLink line rate the NVLink-bound points ran 18-32%
fast.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest

from tpsim.base.schema import from_mapping, load_yaml
from tpsim.cluster.topology import Topology, shipped_topologies
from tpsim.cost.all_to_all import hierarchical_dispatch_time, uniform_fanout

from tests.conftest import REPO

DATA = REPO / "tests" / "data" / "published_collectives" / "deepep_h800_normal.csv"
TOKENS, HIDDEN, TOP_K, EXPERTS = 4096, 7168, 8, 256
SMS = 24                                          # tests/legacy/test_intranode.py: `for i in (24, )`
BYTES = {"dispatch": HIDDEN * (1 + 4 / 128), "combine": 2 * HIDDEN}   # FP8 + scales; BF16


def h800_cluster() -> Topology:
    mapping = load_yaml(shipped_topologies()["dgx-h100-ndr-cluster"])
    mapping["levels"][0]["bandwidth_GBps"] = 200        # H800: 8 NVLink4 links x 25 GB/s
    return from_mapping(Topology, mapping, "h800 (test)")


def deepep_routing(nodes: int, seed: int = 0) -> np.ndarray:
    """Expert ids (tokens x 8) chosen as DeepEP's test_internode.py chooses them."""
    rng = np.random.default_rng(seed)
    scores = np.abs(rng.standard_normal((TOKENS, EXPERTS))) + 1
    per_node = scores.reshape(TOKENS, nodes, -1)
    keep = np.argsort(-per_node.max(axis=2), axis=1)[:, :min(nodes, 4)]
    mask = np.full((TOKENS, nodes), -np.inf)
    np.put_along_axis(mask, keep, 0.0, axis=1)
    masked = (per_node + mask[:, :, None]).reshape(TOKENS, EXPERTS)
    return np.argsort(-masked, axis=1)[:, :TOP_K]


def predicted_GBps(ep: int, phase: str) -> float:
    """The benchmark's metric from tpsim's time: intranode T R b / t (all a rank receives);
    internode T N b / t (N = nodes per token, the rank's own counted)."""
    topo, b, nodes = h800_cluster(), BYTES[phase], ep // 8
    if nodes == 1:
        remote, ranks = uniform_fanout(EXPERTS, TOP_K, ep, 8)
        d = hierarchical_dispatch_time(TOKENS, b, topo.place(ep), topo, remote, ranks, "deepep", SMS)
        return TOKENS * ranks * b / d.time_s / 1e9
    experts = deepep_routing(nodes)      # the tokens of a rank on node 0
    rank_sets = [set(r) for r in experts // (EXPERTS // ep)]
    node_sets = [set(r) for r in experts // (EXPERTS // nodes)]
    ranks = np.mean([len(s) for s in rank_sets])
    per_token = np.mean([len(s) for s in node_sets])
    remote = np.mean([len(s - {0}) for s in node_sets])
    d = hierarchical_dispatch_time(TOKENS, b, topo.place(ep), topo, remote, ranks, "deepep", SMS)
    return TOKENS * per_token * b / d.time_s / 1e9


def published() -> list[dict]:
    with open(DATA) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", published(), ids=lambda r: f"ep{r['ep']}-{r['phase']}")
def test_deepep_bottleneck_bandwidth_within_stated_tolerance(row):
    ep, measured = int(row["ep"]), float(row["bottleneck_GBps"])
    err = predicted_GBps(ep, row["phase"]) / measured - 1
    assert abs(err) <= 0.10, f"EP {ep} {row['phase']}: {err:+.1%}"


def test_the_network_bounds_the_larger_deployments_and_nvlink_the_smaller():
    """The shape DeepEP reports: at EP 32 and 64 the NIC sets the pace (the metric falls from
    EP 32 to 64 as fewer of a token's nodes are its own), inside a node NVLink does."""
    topo = h800_cluster()
    assert hierarchical_dispatch_time(TOKENS, 1e4, topo.place(8), topo,
                                      *uniform_fanout(EXPERTS, TOP_K, 8, 8)).bottleneck == "nvlink"
    assert predicted_GBps(32, "dispatch") > predicted_GBps(64, "dispatch")


@pytest.mark.parametrize("nbytes,measured_us", [(128, 10.59), (1024, 10.80), (4096, 11.13)])
def test_small_nccl_all_to_all_in_a_hopper_node(nbytes, measured_us):
    """nccl-tests ``alltoall_perf`` on 8 H20 of one node (NVLink4, 18 links, as dgx-h100's),
    out-of-place: 128 B 10.59 us, 1 KiB 10.80, 4 KiB 11.13 (deepseek-ai/DeepEP issue #303).
    A peer's slice is at most 512 B: NCCL's LL (collective_launch + LL's baseLat + one LL
    hop, 10.2 us); Simple priced them at 14.8 (+33% to +40%). Within 10%."""
    from tpsim.cluster.topology import load_topology
    from tpsim.cost.collectives import collective_time
    c = collective_time("all-to-all", nbytes, 8, load_topology("dgx-h100"))
    assert c.protocol == "ll"
    assert c.time_s * 1e6 == pytest.approx(measured_us, rel=0.10)


@pytest.mark.parametrize("nbytes,measured_busbw", [(2**30, 37.80), (4 * 2**30, 37.81)])
def test_nic_bound_all_to_all_across_two_ampere_nodes(nbytes, measured_busbw):
    """nccl-tests ``alltoall_perf`` on 2 x 8 A100 (Azure NDmv4: NVSwitch, 8 HDR 200 Gb/s NICs a
    node), NCCL 2.17.1, in-place busbw 37.80 GB/s at 1 GiB and 37.81 at 4 GiB
    (microsoft/mscclpp ``docs/performance-ndmv4.md``, commit 7f3f366; used in no fit). Half of
    what a rank sends leaves its node, each rank on its own NIC: busbw = (n-1)/n x 2 x the NIC's
    rate x efficiency.ring (0.92, from nccl-tests issue #119, not from this run): 41.3 GB/s, +9%.
    Within 10%."""
    from tpsim.cluster.topology import load_topology
    from tpsim.cost.collectives import bus_factor, collective_time
    c = collective_time("all-to-all", nbytes, 16, load_topology("dgx-a100-hdr-cluster"))
    busbw = nbytes * bus_factor("all-to-all", 16) / c.time_s / 1e9
    assert busbw == pytest.approx(measured_busbw, rel=0.10)


def test_nic_bound_all_to_all_across_two_hopper_nodes():
    """2 x 8 H100 on NDR (one 400 Gb/s NIC a GPU) at 1 GiB: busbw inside 40-120 GB/s, the bar
    the model is held to across two NDR nodes (NCCL's maintainers: 46-48 GB/s a NIC, and on two
    nodes an all-to-all's busbw about twice a NIC's, NVIDIA/nccl-tests issues #130, #267, #290).
    And a reported point, not a curve: "the CPU-proxy bandwidth can reach 80GB" at 4 GiB on
    2 x 8 H100 with 8 ConnectX-7 each (NVIDIA/nccl-tests issue #355, NCCL release not stated),
    taken as busbw, held within 10%: tpsim 86.2 GB/s, +7.8% (read as algbw, +15%)."""
    from tpsim.cluster.topology import load_topology
    from tpsim.cost.collectives import bus_factor, collective_time
    topo = load_topology("dgx-h100-ndr-cluster")
    for nbytes, lo, hi in ((2**30, 40.0, 120.0), (4 * 2**30, 72.0, 88.0)):
        c = collective_time("all-to-all", nbytes, 16, topo)
        busbw = nbytes * bus_factor("all-to-all", 16) / c.time_s / 1e9
        assert lo <= busbw <= hi, (nbytes, busbw)
