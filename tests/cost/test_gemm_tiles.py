"""The GEMM tile choice (tpsim.cost.gemm_tiles): the best of a device's tiles, each with its own
waves, its fixed time in the reference tile's k steps and its operands' L2 feed."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.cost.gemm_tiles import tile_shapes, tile_wave_efficiency

from tests.conftest import make_topology

LEVEL = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]


def device(**kw):
    base = {"gemm_max_efficiency": 0.5, "gemm_half_efficiency_dim": 0, "gemm_k_half_dim": 0,
            "gemm_tile": [128, 256], "sm_count": 4, "gemm_decomposition": "data_parallel"}
    return make_topology(LEVEL, {**base, **kw}).device


def test_a_smaller_tile_fills_the_sms_the_large_one_leaves_idle():
    """256 x 256 on 4 SMs: two 128 x 256 tiles fill half (one data-parallel wave, u 0.5), four
    128 x 128 tiles fill all four (u 1)."""
    assert tile_wave_efficiency(256, 256, 4096, 1, device()) == 0.5
    assert tile_wave_efficiency(256, 256, 4096, 1, device(gemm_tiles={"128x128": 1})) == 1.0
    assert tile_shapes(device(gemm_tiles={"128x128": 1})) == ((128, 256, 1), (128, 128, 1))


def test_each_tile_pays_the_same_fixed_time_in_its_own_k_steps():
    """k_half 512 steps of the 128 x 256 tile are 1024 of a 128 x 128 one (half its area):
    the large tile 0.5 x 1024 / 1536, the small one 1024 / 2048."""
    d = device(gemm_k_half_dim=512)
    assert tile_wave_efficiency(256, 256, 1024, 1, d) == pytest.approx(1 / 3)
    d = device(gemm_k_half_dim=512, gemm_tiles={"128x128": 1})
    assert tile_wave_efficiency(256, 256, 1024, 1, d) == pytest.approx(0.5)


def test_the_l2_feed_caps_a_small_tile():
    """At 600 GB/s of L2 and 100 TFLOP/s x 0.5: a 128 x 256 tile's 85.3 FLOP a byte feed 51.2
    TFLOP/s (no cap), a 128 x 128 one's 64 feed 38.4 (0.768 of the 50 it would run at)."""
    d = device(gemm_tiles={"128x128": 1}, l2_bandwidth_GBps=600)
    assert tile_wave_efficiency(256, 256, 4096, 1, d) == pytest.approx(0.768)
    assert tile_wave_efficiency(256, 256, 4096, 1, device(l2_bandwidth_GBps=600)) == 0.5


@pytest.mark.parametrize("tiles, key", [({"128-128": 1}, "gemm_tiles.128-128"),
                                        ({"128x128": 1.5}, "gemm_tiles.128x128")])
def test_a_bad_tile_names_its_key(tiles, key):
    with pytest.raises(ConfigError, match=key):
        device(gemm_tiles=tiles)


def test_tiles_need_the_reference_tile():
    with pytest.raises(ConfigError, match="gemm_tiles"):
        device(gemm_tile=None, gemm_tiles={"128x128": 1})


H100 = load_topology("dgx-h100").device


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8192), st.integers(1, 8192), st.integers(64, 16384))
def test_more_tiles_are_never_slower(m, n, k):
    """The preset's tiles against its reference tile alone: the choice includes it."""
    one = dataclasses.replace(H100, gemm_tiles=None)
    assert tile_wave_efficiency(m, n, k, 1, H100) >= tile_wave_efficiency(m, n, k, 1, one)


def test_h100_prices_1024_cubed_with_a_smaller_tile():
    """32 of CUTLASS's 128 x 256 tiles leave 100 of the 132 SMs idle; its 128 x 128 and
    64-row tiles fill them (each at its L2 feed), so 1024^3 runs faster than on one tile."""
    one = dataclasses.replace(H100, gemm_tiles=None)
    assert tile_wave_efficiency(1024, 1024, 1024, 1, H100) > \
        1.5 * tile_wave_efficiency(1024, 1024, 1024, 1, one)
