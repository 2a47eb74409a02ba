"""Shipped topologies against published NCCL measurements (tests/data).

* dgx-a100 vs the vTrain A100 all-reduce tables (tests/data/vtrain_a100, 2-8 GPUs, 1 MiB-1 GiB),
  the one table set dgx-a100's copy bandwidth is fitted on: median error over sizes >= 8 MiB
  within 10% for every rank count.
* Every shipped 8-GPU node vs nccl-tests curves used in no fit (tests/data/published_collectives,
  roles in index.csv; bench/collectives_published.py prints the same numbers): the goals are a
  median |error| <= 15% from 8 KiB to 1 MiB and <= 10% from 1 MiB to 8 GiB. The tests hold them
  with margin (12% and 8%), through the ``auto`` path wherever the run used NCCL's defaults.
  Below 1 MiB the goal applies to runs timed one process per GPU, as a TP job runs: with one
  host thread driving 8 GPUs (``all_reduce_perf -g 8``) the host's launches set the floor there.
* Across nodes, each curve on its cluster (index.csv's ``ll_host_latency_us``, fitted on one
  curve of the cluster): the same goals on the curves not fitted.
"""
from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from tpsim.cost.collectives import collective_time
from tpsim.cluster.topology import load_topology

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from collectives_published import A2A_NEIGHBOUR, a2a_curves, band_errors, curves  # noqa: E402

VTRAIN = REPO / "tests" / "data" / "vtrain_a100"
CURVES = {c["file"]: c for c in curves()}
CHECKS = [f for f, c in CURVES.items() if c["role"] == "check"]


def vtrain_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, out-of-place seconds) of AR_GPU{n}."""
    with open(VTRAIN / f"AR_GPU{n}_1M_1024M_LUT.csv") as f:
        rows = list(csv.reader(f))[1:]
    return (np.array([float(r[0]) for r in rows]), np.array([float(r[3]) * 1e-9 for r in rows]))


@pytest.mark.parametrize("ranks", range(2, 9))
def test_dgx_a100_reproduces_vtrain_allreduce(ranks):
    topo = load_topology("dgx-a100")
    sizes, measured = vtrain_table(ranks)
    keep = sizes >= 8 * 2**20
    predicted = np.array([collective_time("all-reduce", s, ranks, topo).time_s for s in sizes[keep]])
    err = np.abs(predicted / measured[keep] - 1)
    assert np.median(err) <= 0.10, f"{ranks} ranks: median error {np.median(err):.1%}"
    # the 1 GiB point pins the large-message bus bandwidth (197 GB/s at 2 ranks, 229 at 8)
    assert err[-1] <= 0.10


def test_two_rank_deficit_is_modelled_not_averaged_away():
    """The tables show 2-rank busbw ~14% below 8-rank at 1 GiB; the model must show it too."""
    topo = load_topology("dgx-a100")
    bw = {n: collective_time("all-reduce", 2**30, n, topo).busbw_Bps for n in (2, 8)}
    measured = {n: vtrain_table(n)[0][-1] / vtrain_table(n)[1][-1] * 2 * (n - 1) / n for n in (2, 8)}
    assert bw[2] / bw[8] == pytest.approx(measured[2] / measured[8], abs=0.03)


@pytest.mark.parametrize("name", CHECKS)
def test_published_curve_used_in_no_fit(name):
    curve = CURVES[name]
    errors = band_errors(curve)
    large = errors["1MiB-8GiB"]
    assert np.median(large) <= 0.08, f"{name}: median {np.median(large):.1%} from 1 MiB"
    assert large.max() <= 0.20, f"{name}: max {large.max():.1%} from 1 MiB"
    small = errors["8KiB-1MiB"]
    if curve["harness"] == "process per GPU":
        assert np.median(small) <= 0.12, f"{name}: median {np.median(small):.1%} below 1 MiB"
        assert small.max() <= 0.20, f"{name}: max {small.max():.1%} below 1 MiB"


def test_the_fit_curve_is_not_counted_as_a_check():
    roles = {c["role"] for c in CURVES.values()}
    assert {"check", "fit"} <= roles
    assert all(CURVES[f]["role"] != "fit" for f in CHECKS)
    assert any(CURVES[f]["algorithm"] == "auto" and CURVES[f]["topology"] == "dgx-h100"
               and CURVES[f]["harness"] == "process per GPU" for f in CHECKS)


@pytest.mark.parametrize("name", ["dgx-h100", "dgx-h200"])
def test_hopper_auto_follows_nccls_choice(name):
    """NCCL 2.26.2 on an HGX H100 (nccl-tests issue #309): "8B~1MB: RING/LL; 2MB~16GB:
    NVLS/SIMPLE". tpsim's auto agrees except at 2 MiB, where it prices Ring/LL below NVLS
    (38 vs 47 us; the AWS p5 run measured 43 us)."""
    topo = load_topology(name)
    for k in range(3, 21):
        c = collective_time("all-reduce", 2**k, 8, topo)
        assert (c.algorithm, c.protocol) == ("ring", "ll"), 2**k
    for k in range(22, 35):
        c = collective_time("all-reduce", 2**k, 8, topo)
        assert (c.algorithm, c.formula) == ("nvls", "tpsim.cost.collectives.nvls_time"), 2**k


def test_nvls_bus_bandwidth_climbs_with_size():
    """NVLS busbw measured on 8x H100 (AWS p5): 237 GB/s at 16 MiB, 360 at 64 MiB, 442 at
    1 GiB, 480 at 8 GiB. The chunked pipeline gives a few hundred GB/s below 32 MiB and its
    plateau only from ~1 GiB."""
    topo = load_topology("dgx-h100")
    bus = {s: collective_time("all-reduce", s, 8, topo).busbw_Bps / 1e9
           for s in (2**24, 2**26, 2**30, 2**33)}
    assert bus[2**24] < 300 < bus[2**26] < 400 < bus[2**30] < bus[2**33]
    assert bus[2**33] == pytest.approx(480, rel=0.05)


@pytest.mark.parametrize("ranks", range(2, 9))
def test_dgx_h100_ring_busbw(ranks):
    """Ring all-reduce busbw ~365-370 GB/s at every rank count 2-8 (NCCL issue #1455)."""
    c = collective_time("all-reduce", 4 * 2**30, ranks, load_topology("dgx-h100"), "ring")
    assert c.busbw_Bps / 1e9 == pytest.approx(367.5, rel=0.05)


@pytest.mark.parametrize("ranks,busbw", [(5, 420), (6, 440), (7, 460), (8, 480)])
def test_dgx_h100_nvls_busbw_by_rank_count(ranks, busbw):
    """NVLS busbw at 4 GiB measured on 5-8 H100s (NCCL issue #1455); the model: 397/428/451/469."""
    c = collective_time("all-reduce", 4 * 2**30, ranks, load_topology("dgx-h100"))
    assert c.algorithm == "nvls"
    assert c.busbw_Bps / 1e9 == pytest.approx(busbw, rel=0.07)


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_dgx_h100_auto_keeps_ring_where_nvls_does_not_pay(ranks):
    """NVLS moves (1+1/n)S per GPU: at 2-4 GPUs that is no better than a ring (NCCL #1455)."""
    assert collective_time("all-reduce", 4 * 2**30, ranks, load_topology("dgx-h100")).algorithm == "ring"


@pytest.mark.parametrize("ranks,busbw", [(16, 468.5), (32, 364.9)])
def test_ndr_cluster_large_all_reduce(ranks, busbw):
    """2 and 4 nodes of 8 H100 with 8x NDR 400 Gb/s each, 8 GiB (nccl-tests issue #309, NCCL
    2.26.2): busbw 468.5 and 364.9 GB/s. NVLS-tree (NVLS in the node, a tree of nodes) at two
    nodes; at four the model's ring and NVLS-tree both sit at the NICs' 368 GB/s."""
    c = collective_time("all-reduce", 8 * 2**30, ranks, load_topology("dgx-h100-ndr-cluster"))
    assert c.busbw_Bps / 1e9 == pytest.approx(busbw, rel=0.10)
    if ranks == 16:
        assert c.algorithm == "nvls_tree"


ACROSS = [f for f, c in CURVES.items() if c["role"] == "multi-node"]


@pytest.mark.parametrize("name", ACROSS)
def test_published_curve_across_nodes(name):
    """2 H100 nodes (NDR), used in no fit (its cluster's ll_host_latency_us is fitted on the
    4-node curve): median |error| <= 10% from 1 MiB and <= 15% below it (the goals)."""
    errors = band_errors(CURVES[name])
    assert np.median(errors["1MiB-8GiB"]) <= 0.10, name
    assert np.median(errors["8KiB-1MiB"]) <= 0.15, name


def test_two_node_tree_sizes_meet_nccls_tree_caps():
    """2 H100 nodes (nccl-tests #309, NCCL 2.26.2), 2-16 MiB, where tpsim runs the tree on
    LL128 (then a ring): each within 10% with NCCL's per-channel tree caps, 293.6 GB/s bus
    bandwidth on LL128 (8 MiB was 14% fast at the NICs' 339)."""
    from collectives_published import predicted
    c = CURVES["h100x16_ndr_xe9680_nccl2.26.2.csv"]
    keep = (c["sizes"] >= 2 * 2**20) & (c["sizes"] <= 16 * 2**20)
    err = predicted(c)[keep] / c["times"][keep] - 1
    assert len(err) == 4 and np.abs(err).max() <= 0.10, err


def test_ll_host_latency_is_what_its_fit_curve_gives():
    """index.csv's ll_host_latency_us of each multi-node cluster is the least-squares value on
    that cluster's fit curve (to the 0.01 us written), and every curve of the cluster carries it."""
    pytest.importorskip("scipy")
    from collectives_published import fit_ll_host
    fits = [c for c in CURVES.values() if c["role"] == "fit" and c["ranks"] > 8]
    assert fits
    for fit in fits:
        assert fit_ll_host(fit)[0] == pytest.approx(float(fit["ll_host_latency_us"]), abs=0.05)
        same = [c for c in CURVES.values() if c["topology"] == fit["topology"]
                and c["gpus"].split("(")[-1] == fit["gpus"].split("(")[-1]]
        assert {c["ll_host_latency_us"] for c in same} == {fit["ll_host_latency_us"]}


A2A = {c["file"]: c for c in a2a_curves()}


def test_b200_all_to_all_curve():
    """nccl-tests alltoall_perf on 8 B200 of one node (tests/data/published_collectives,
    alltoall_index.csv; used in no fit), priced as NCCL 2.25 (the release it most likely ran:
    B200 support from 2.25, LL to 512 KiB a peer to 2.28; bench/collectives_published.py).
    Below 1 MiB median 8.3% (max 13.4%): NCCL's p2p LL (LL to 512 KiB a peer, each part at its
    receiving warps' share of a ring CTA's LL rate, llMaxBws / 32 CTAs: nothing fitted here).
    From 1 MiB median 4.9%: NCCL's p2p pipeline (tpsim.cost.p2p_pipeline: 4 channels a peer, 28
    CTAs at the SM's 22.1 GB/s, fitted on DeepEP's B200 curve) holds 32 MiB-2 GiB within 6%;
    1-4 MiB on LL within 8%; from 4 GiB 10% slow."""
    c = A2A["b200_alltoall_vultr.csv"]
    errors = band_errors(c)
    assert np.median(errors["8KiB-1MiB"]) <= 0.15 and errors["8KiB-1MiB"].max() <= 0.15
    assert np.median(errors["1MiB-8GiB"]) <= 0.10
    from collectives_published import predicted
    err = predicted(c) / c["times"] - 1
    s = c["sizes"]
    ll = err[(s >= 1 * 2**20) & (s <= 4 * 2**20)]
    assert len(ll) == 3 and np.abs(ll).max() <= 0.08, ll
    mid = err[(s >= 32 * 2**20) & (s <= 2 * 2**30)]
    assert len(mid) == 7 and np.abs(mid).max() <= 0.06, mid
    big = err[s >= 4 * 2**30]
    assert len(big) == 3 and np.abs(big).max() <= 0.11, big


def test_b200_all_to_all_needs_the_releases_ll_rule():
    """Priced with LL to 16 KiB a peer (NCCL 2.18-2.21, 2.29-2.30, the shipped files) the same
    curve misses at 4 MiB by 31% and at 512 KiB by 43%: its run ran LL to 512 KiB a peer."""
    c = next(c for c in a2a_curves(A2A_NEIGHBOUR) if c["file"] == "b200_alltoall_vultr.csv")
    assert band_errors(c)["8KiB-1MiB"].max() > 0.30 and band_errors(c)["1MiB-8GiB"].max() > 0.30


NVLS_CHECKS = [f for f in CHECKS if CURVES[f]["algorithm"] == "nvls"]


@pytest.mark.parametrize("name", NVLS_CHECKS)
def test_forced_nvls_curve_below_1mib_as_its_nccl_runs_it(name):
    """The NVLS-forced checks (NCCL 2.18.5 on H100, 2.20.5 on H200; ``-g 8``), each priced as
    its release runs NVLS (tpsim.cluster.nccl, from NCCL's code; nothing fitted on them):
    median |error| 5.0% and 3.1% from 8 KiB to 1 MiB (2.18.5: 17.9% priced as 2.21+ runs it)."""
    assert CURVES[name]["nccl"] in ("2.18.5", "2.20.5")
    assert np.median(band_errors(CURVES[name])["8KiB-1MiB"]) <= 0.12, name


def test_the_nvls_layout_tells_2_18_from_2_20():
    """Priced with the other release's layout each NVLS check misses below 1 MiB (22.6% and
    20.2%): the fixed grid fits the 2.18.5 curve's step at 64 KiB, the even split the 2.20.5
    curve's flat 31 us, so the difference is the release's, not the GPU's."""
    from tpsim.cluster.nccl import with_nccl
    for name, other in (("h100_azure_nd_h100_v5_nccl2.18.5.csv", "2.20"),
                        ("h200_azure_nd_h200_v5_nccl2.20.5.csv", "2.18")):
        topo = with_nccl(load_topology(CURVES[name]["topology"]), other)
        assert np.median(band_errors(CURVES[name], topo)["8KiB-1MiB"]) > 0.15, name
