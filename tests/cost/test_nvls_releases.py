"""NVLS as each NCCL release runs it (tpsim.cluster.nccl): the release table against the values
read from NCCL's code, and the fixed chunk grid of 2.18-2.19 against closed forms on the toy
NVSwitch node of tests/cost/test_collectives.py (B eff 5e10 B/s, step 1 us, latency 5 us)."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError, TpsimError
from tpsim.cluster.nccl import NCCL_NVLS, nccl_release, with_nccl
from tpsim.cluster.topology import load_topology
from tpsim.cost.collectives import collective_time

from tests.conftest import make_topology
from tests.cost.test_collectives import SHARP

US = 1e-6
GRID = dict(SHARP, nvls_fixed_grid=True)


def test_release_table_holds_the_codes_values():
    """src/graph/tuning.cc: baseLat[NVLS][Simple] + hwLat[NVLINK][NVLS][Simple] = 23.0 + 0 at
    v2.18.5-1, 0 + 23 at v2.19.3-1 and v2.20.5-1, 0 + 25 at v2.21.5-1 and v2.26.2-1;
    hwLat[NET][NVLSTree][Simple] 19 at v2.18.5-1, 14 from v2.19.3-1 to v2.27.7-1. The fixed
    grid (``offset = gridOffset + bid*nHeads*chunkSize``) is the kernel of v2.18.5-1 and
    v2.19.3-1; the even split (``oneNode``) that of v2.20.3-1 on."""
    assert NCCL_NVLS["2.18"] == (23.0 + 0.0, 19.0, True)
    assert NCCL_NVLS["2.19"] == (0.0 + 23.0, 14.0, True)
    assert NCCL_NVLS["2.20"] == (23.0, 14.0, False)
    assert all(NCCL_NVLS[f"2.{m}"] == (25.0, 14.0, False) for m in range(21, 28))
    assert set(NCCL_NVLS) == {f"2.{m}" for m in range(18, 31)} | {"2.28.3", "2.28.7"}


def test_2_28_to_2_30_hold_the_codes_values():
    """src/graph/tuning.cc from v2.28.3-1 keeps the latencies in ``.baseLatencies`` and
    ``.hwLatencies`` (v2.30: ``ncclTunerConstantsDefaults``): NVLS {0, 0, 0} + NVLINK NVLS
    {0, 0, 25} at every tag v2.28.3-1 .. v2.30.7-1; NET NVLSTree {0, 0, 14} at v2.28.3-1 and
    v2.28.7-1, {0, 0, 20.9} from v2.28.9-1; the oneNode path (src/device/all_reduce.h)
    throughout."""
    nvlink_nvls = 0.0 + 25.0
    for key in ("2.28.3", "2.28.7"):
        assert NCCL_NVLS[key] == (nvlink_nvls, 14.0, False)
    for key in ("2.28", "2.29", "2.30"):
        assert NCCL_NVLS[key] == (nvlink_nvls, 20.9, False)


def test_a_2_28_patch_names_its_own_values():
    """2.28 is v2.28.9-1 (its last patch, 20.9 us); v2.28.3-1 and v2.28.7-1 keep 14 us."""
    assert [nccl_release(x) for x in ("2.28", "2.28.9", "v2.28.9-1", "2.28.7", "v2.28.3-1",
                                      "2.29.7", "v2.30.3-1")] == [
        "2.28", "2.28", "2.28", "2.28.7", "2.28.3", "2.29", "2.30"]
    net = load_topology("dgx-h100-ndr-cluster").network
    assert with_nccl(load_topology("dgx-h100-ndr-cluster"), "v2.28.7-1").network == net
    later = with_nccl(load_topology("dgx-h100-ndr-cluster"), "2.28.9").network
    assert later.hop_latency_s("nvls_tree", "simple") == pytest.approx(20.9 * US)


@pytest.mark.parametrize("name", ["dgx-h100", "dgx-h200", "dgx-h100-ndr-cluster"])
def test_shipped_topologies_hold_a_2_21_to_2_27_release(name):
    """The shipped files' NVLS latencies are NCCL 2.21-2.27's: --nccl 2.26 changes nothing."""
    topo = load_topology(name)
    assert with_nccl(topo, "2.26").levels == topo.levels
    assert with_nccl(topo, "topology") is topo and with_nccl(topo, None) is topo


def test_with_nccl_sets_the_releases_values():
    topo = with_nccl(load_topology("dgx-h100-ndr-cluster"), "v2.18.5-1")
    inner, net = topo.levels[0], topo.network
    assert inner.hop_latency_s("nvls", "simple") == pytest.approx(23 * US)
    assert inner.nvls_fixed_grid and not net.nvls_fixed_grid
    assert net.hop_latency_s("nvls_tree", "simple") == pytest.approx(19 * US)
    assert inner.hop_latency_s("ring", "ll") == load_topology("dgx-h100").levels[0].hop_latency_s(
        "ring", "ll")
    assert topo.path == load_topology("dgx-h100-ndr-cluster").path


def test_release_names():
    assert [nccl_release(x) for x in ("2.18.5", "v2.18.5-1", "2.18", "2.26.2-1")] == [
        "2.18", "2.18", "2.18", "2.26"]
    for bad in ("2.17", "2.31", "3.1", "latest", ""):
        with pytest.raises(ConfigError, match="--nccl"):
            with_nccl(load_topology("dgx-h100"), bad)
    assert issubclass(ConfigError, TpsimError)


def test_grid_puts_a_small_message_on_one_channel():
    """S = 64 KiB on 8 GPUs x 16 channels, 16 KiB chunks: 2.18's grid gives channel 0 all of it
    (8 heads x 8 KiB), at 1/16 of the GPU's NVLS rate: 2 (1 us + 1.125 x 2^16 x 16 / 5e10 s)
    = 2 (1 + 23.593) us; 2.20's even split: 2 (1 us + 1.125 x 2^16 / 5e10 s)."""
    grid = collective_time("all-reduce", 2**16, 8, make_topology([GRID]), "nvls")
    even = collective_time("all-reduce", 2**16, 8, make_topology([SHARP]), "nvls")
    assert grid.time_s == pytest.approx(5 * US + 2 * (1 * US + 1.125 * 2**16 * 16 / 5e10))
    assert even.time_s == pytest.approx(5 * US + 2 * (1 * US + 1.125 * 2**16 / 5e10))
    assert grid.transfer_s == even.transfer_s == pytest.approx(1.125 * 2**16 / 5e10)


def test_grid_is_flat_from_one_full_channel_to_one_loop():
    """From 8 heads x 16 KiB = 128 KiB to a loop of 16 channels (2 MiB) every busy channel carries
    128 KiB: 2 (1 us + 1.125 x 2^17 x 16 / 5e10 s) = 2 (1 + 47.186) us, whatever S; from a loop on
    the grid and the even split are one formula (2^22: 2 loops, 3 steps of that)."""
    topo = make_topology([GRID])
    step = 1 * US + 1.125 * 2**17 * 16 / 5e10
    for s in (2**17, 2**19, 2**21):
        assert collective_time("all-reduce", s, 8, topo, "nvls").time_s == pytest.approx(
            5 * US + 2 * step)
    for s in (2**22, 2**26, 2**30):
        assert collective_time("all-reduce", s, 8, topo, "nvls").time_s == pytest.approx(
            collective_time("all-reduce", s, 8, make_topology([SHARP]), "nvls").time_s)
    assert collective_time("all-reduce", 2**22, 8, topo, "nvls").time_s == pytest.approx(
        5 * US + 3 * step)


def test_grid_never_faster_for_more_bytes():
    topo = make_topology([GRID])
    times = [collective_time("all-reduce", 2**k, 8, topo, "nvls").time_s for k in range(3, 34)]
    assert all(b >= a * (1 - 1e-12) for a, b in zip(times, times[1:]))
