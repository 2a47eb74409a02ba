"""Compute cost functions against numbers derived by hand (CONTRACTS.md formulas)."""
from __future__ import annotations

import dataclasses

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cost.compute import (attention_efficiency, attention_exec_flops, attention_time,
                           cast_transpose_time, elementwise_time, gemm_efficiency, gemm_time, grouped_gemm_time,
                           stochastic_cast_time, tile_wave_efficiency)
from tpsim.cluster.topology import load_topology
from tpsim.cost.stream_k import stream_k_share, wave_steps
from tpsim.layer.ops import Attention, Gemm

from tests.conftest import make_topology

LEVEL = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]


def device(**kw):
    base = {"gemm_max_efficiency": 0.5, "gemm_half_efficiency_dim": 100, "memory_efficiency": 0.5,
            "kernel_launch_us": 2}
    return make_topology(LEVEL, {**base, **kw}).device


def test_gemm_efficiency_by_hand():
    """eff = 0.5 * 100/200 * 300/400 * 900/1000 = 0.16875."""
    assert gemm_efficiency(100, 300, 900, device()) == pytest.approx(0.16875)


def test_gemm_best_efficiency_per_dtype_family():
    """best: gemm_max_efficiency for bf16, the fp8 one for fp8 and mxfp8, the fp4 one for nvfp4;
    an unset fp4 falls back to fp8's, an unset fp8 to bf16's. Shape factor 0.16875 / 0.5 above."""
    shape = 0.16875 / 0.5
    d = device(gemm_max_efficiency_fp8=0.4, gemm_max_efficiency_fp4=0.3)
    got = {dt: gemm_efficiency(100, 300, 900, d, dtype=dt) for dt in ("bf16", "fp8", "mxfp8", "nvfp4")}
    assert got == pytest.approx({"bf16": 0.5 * shape, "fp8": 0.4 * shape, "mxfp8": 0.4 * shape,
                                 "nvfp4": 0.3 * shape})
    assert gemm_efficiency(100, 300, 900, device(gemm_max_efficiency_fp8=0.4), dtype="nvfp4") \
        == pytest.approx(0.4 * shape)
    assert gemm_efficiency(100, 300, 900, device(), dtype="nvfp4") == pytest.approx(0.5 * shape)


def test_gemm_time_compute_bound():
    """m = n = k = 900 on 100 TFLOP/s bf16: eff = 0.5 * 0.9^3 = 0.3645;
    2 * 900^3 / (100e12 * 0.3645) = 1.458e9 / 3.645e13 = 40 us; bytes 3 * 810000 * 2 = 4.86 MB at
    1000 GB/s * 0.5 = 9.72 us < 40 us; plus 2 us launch = 42 us."""
    assert gemm_time(900, 900, 900, device(), "bf16") == pytest.approx(42e-6)


def test_skinny_gemm_runs_far_below_peak():
    """m = 1, n = k = 900: eff = 0.5 * 1/101 * 0.81 = 0.00401; 1.62e6 FLOP / (100e12 * 0.00401)
    = 4.04 us, above the 3.2472 us of its (900 + 810000 + 900) * 2 bytes at 500 GB/s: + 2 us."""
    assert gemm_time(1, 900, 900, device(), "bf16") == pytest.approx(2e-6 + 4.04e-6)


def test_gemm_time_memory_bound_and_batched():
    """With a flat curve (eff 1): m = 1, n = k = 900 is 0.0162 us of FLOPs but
    (900 + 810000 + 900) * 2 = 1,623,600 bytes at 500 GB/s = 3.2472 us. Batched x4: one launch,
    4x the work: 2 + 12.9888 us."""
    d = device(gemm_max_efficiency=1.0, gemm_half_efficiency_dim=0)
    assert gemm_time(1, 900, 900, d, "bf16") == pytest.approx(2e-6 + 3.2472e-6)
    assert gemm_time(1, 900, 900, d, "bf16", batch=4) == pytest.approx(2e-6 + 12.9888e-6)


def test_cpu_gemm_waits_on_the_bytes_past_its_cache():
    """gemm_memory_serial 2, gemm_cache_MiB 1: t = launch + max(c, mem) + 2 min(c, miss).
    900^3 (above): c = 40 us, 4.86 MB of which 4,860,000 - 1,048,576 = 3,811,424 bytes miss,
    7.622848 us at 500 GB/s: 2 + 40 + 15.245696 us. m = 1 on the flat curve: c = 0.0162 us is
    below its miss ((1,623,600 - 1,048,576) bytes, 1.150048 us): 2 + 3.2472 + 0.0324 us. A cache
    that holds every byte, or serial 0 (the default), leaves the roofline."""
    cpu = device(gemm_memory_serial=2.0, gemm_cache_MiB=1.0)
    assert gemm_time(900, 900, 900, cpu, "bf16") == pytest.approx(57.245696e-6)
    flat = device(gemm_max_efficiency=1.0, gemm_half_efficiency_dim=0, gemm_memory_serial=2.0,
                  gemm_cache_MiB=1.0)
    assert gemm_time(1, 900, 900, flat, "bf16") == pytest.approx(5.2796e-6)
    assert gemm_time(900, 900, 900, device(gemm_memory_serial=2.0, gemm_cache_MiB=8.0),
                     "bf16") == pytest.approx(42e-6)
    assert gemm_time(900, 900, 900, device(gemm_cache_MiB=1.0), "bf16") == pytest.approx(42e-6)


def test_grouped_gemm_rounds_by_hand():
    """A loop of 6 GEMMs over 4 streams: one round of 4 side by side, one of the 2 left, each
    with one launch (packed beats back to back on a memory-bound curve). On the flat curve
    above: 2 + 4 * 3.2472 us, then 2 + 2 * 3.2472 us; as many groups as streams is the batched
    kernel."""
    d = device(gemm_max_efficiency=1.0, gemm_half_efficiency_dim=0)
    assert grouped_gemm_time(1, 900, 900, d, "bf16", 6, 4) == pytest.approx(4e-6 + 6 * 3.2472e-6)
    assert grouped_gemm_time(1, 900, 900, d, "bf16", 4, 4) == gemm_time(1, 900, 900, d, "bf16",
                                                                        batch=4)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8192), st.integers(1, 64), st.integers(1, 8))
def test_grouped_gemm_more_groups_never_faster(m, groups, streams):
    """Separate kernels over streams (H100's tiles and waves): one more expert never makes the
    loop faster, and it is never slower than running the GEMMs one at a time."""
    d = device(gemm_tile=[128, 256], sm_count=132, gemm_half_efficiency_dim=0)
    t = grouped_gemm_time(m, 1536, 2048, d, "bf16", groups, streams)
    # (full + 1) x round against full x round + an equal round: equal up to float rounding
    assert grouped_gemm_time(m, 1536, 2048, d, "bf16", groups + 1, streams) >= t * (1 - 1e-12)
    assert t <= groups * gemm_time(m, 1536, 2048, d, "bf16") * (1 + 1e-12)


def test_elementwise_time():
    """1 MB at 1000 GB/s * 0.5: 2 us, plus 2 us launch; nothing moved (a view): no kernel."""
    assert elementwise_time(1e6, device()) == pytest.approx(4e-6)
    assert elementwise_time(0.0, device()) == 0.0
    assert elementwise_time(0.0, device(elementwise_ns_per_element={"gelu": 3.0}), "gelu",
                            1e6) == 0.0


def test_elementwise_time_takes_the_slower_of_memory_and_arithmetic():
    """1 MB at 1000 GB/s * 0.5 is 2 us; 1e6 elements of gelu at 3 ns are 3000 us, of softmax
    at 1e-6 ns 1e-6 us (memory wins); a kind the device does not list, or no kind, costs its
    memory term alone; each plus the 2 us launch."""
    dev = device(elementwise_ns_per_element={"gelu": 3.0, "softmax": 1e-6})
    assert dev.elementwise_element_s == pytest.approx({"gelu": 3e-9, "softmax": 1e-15})
    assert elementwise_time(1e6, dev, "gelu", 1e6) == pytest.approx(2e-6 + 3e-3)
    assert elementwise_time(1e6, dev, "softmax", 1e6) == pytest.approx(4e-6)
    assert elementwise_time(1e6, dev, "swiglu", 1e6) == pytest.approx(4e-6)
    assert elementwise_time(1e6, dev, "", 1e6) == pytest.approx(4e-6)
    assert elementwise_time(1e6, device(), "gelu", 1e6) == elementwise_time(1e6, device())


def test_cast_transpose_time():
    """1 MB at 1000 GB/s * 0.25 (its own efficiency): 4 us, plus 2 us launch; without one it
    is an elementwise kernel (memory_efficiency 0.5: 2 us + 2 us)."""
    assert cast_transpose_time(1e6, device(cast_transpose_efficiency=0.25)) == \
        pytest.approx(6e-6)
    assert cast_transpose_time(1e6, device()) == elementwise_time(1e6, device())


def test_stochastic_cast_time():
    """1 MB at 1000 GB/s * 0.5 * 4.5/6.4 (Transformer Engine PR #2412's stochastic over its
    rounding-to-nearest rate): 2 us x 6.4/4.5, plus 2 us launch; no bytes, no kernel."""
    assert stochastic_cast_time(1e6, device()) == pytest.approx(2e-6 + 2e-6 * 6.4 / 4.5)
    assert stochastic_cast_time(0, device()) == 0.0


@pytest.mark.parametrize("price", [elementwise_time, cast_transpose_time, stochastic_cast_time])
def test_kernels_run_back_to_back_each_pay_their_launch(price):
    """A call that runs k kernels over the same bytes (a grouped GEMM's quantize, expert by
    expert) costs its bytes once and k launches of 2 us."""
    dev = device(cast_transpose_efficiency=0.25)
    assert price(1e6, dev, kernels=24) - price(1e6, dev) == pytest.approx(23 * 2e-6)


def test_gb300_nvfp4_casts_run_at_transformer_engine_rates():
    """GB300 (8 TB/s x memory_efficiency 0.8): a cast of 8192 x 8192 bf16 into both NVFP4
    copies (read 2, write 2 x 9/16 bytes an element) at PR #2412's B300 rates, 6.4 TB/s rounding
    to nearest and 4.5 TB/s stochastically, after the launch."""
    dev = load_topology("gb300-nvl72").device
    nbytes = 8192 * 8192 * (2 + 2 * 9 / 16)
    launch = dev.kernel_launch_s
    assert elementwise_time(nbytes, dev) - launch == pytest.approx(nbytes / 6.4e12)
    assert stochastic_cast_time(nbytes, dev) - launch == pytest.approx(nbytes / 4.5e12)


def test_h100_cast_transpose_matches_transformer_engine_timing():
    """The H100 preset's cast-transpose of 4096 x 4096 fp16 into fp8 and its transpose (read 2,
    write 1 + 1 bytes each) against Transformer Engine PR #101's 51.95 us on H100 SXM, the
    timing its efficiency is fitted on (to the fit's two digits)."""
    from tpsim.cluster.topology import load_topology
    dev = load_topology("dgx-h100").device
    assert cast_transpose_time(4096 * 4096 * 4, dev) == pytest.approx(51.95e-6, rel=0.01)


def test_attention_exec_flops():
    """The op's FLOPs are the causal pairs the model needs; the kernel adds its diagonal tiles,
    (1 + 128/1024) = 1.125x at seq 1024 with a 128-key block; flash backward: 2.5x the
    forward's work = 1.25x the model's 2x count."""
    assert attention_exec_flops(100.0, causal=True, backward=False, seq_kv=1024,
                                causal_block=128) == 112.5
    assert attention_exec_flops(200.0, causal=True, backward=True, seq_kv=1024,
                                causal_block=128) == 200 * 1.125 * 1.25
    assert attention_exec_flops(100.0, causal=False, backward=False) == 100.0


def test_attention_model_flops_count_causal_pairs():
    """s = 4 queries and keys, causal: 4 + 3 + 2 + 1 = 10 pairs (s(s+1)/2); 4 b heads d pairs
    forward: 4 * 2 * 3 * 8 * 10 = 1920, backward 3840; decoding 1 query against 4 keys: 4 pairs;
    an unfused scores GEMM (4x8 @ 8x4, causal over 4 keys) runs 2*4*4*8 = 256 FLOPs of which the
    model needs (4 + 1)/(2*4) = 5/8: 160."""
    assert Attention(2, 3, 3, 4, 4, 8, "bf16").flops == 1920
    assert Attention(2, 3, 3, 4, 4, 8, "bf16", backward=True).flops == 3840
    assert Attention(2, 3, 3, 1, 4, 8, "bf16").pairs == 4
    assert Attention(2, 3, 3, 4, 4, 8, "bf16", causal=False).pairs == 16
    g = Gemm(4, 4, 8, "bf16", causal=4)
    assert (g.executed_flops, g.flops) == (256, 160)


def test_tile_and_wave_quantization_by_hand():
    """Tiles 128 x 256 on 4 SMs: m = n = 256 -> 2 x 1 tiles (one wave of 4 slots, half empty):
    u = 256*256 / (1 * 4 * 128*256) = 0.5; the other orientation (256 x 128) also 2 tiles;
    m = 300, n = 256: 3 x 1 tiles, 1 wave: 300*256 / (4 * 32768) = 0.5859;
    m = 1024, n = 256: 8 tiles, 2 waves: 1024*256 / (2 * 4 * 32768) = 1."""
    d = device(gemm_tile=[128, 256], sm_count=4, gemm_half_efficiency_dim=0)
    assert tile_wave_efficiency(256, 256, 512, 1, d) == 0.5
    assert tile_wave_efficiency(300, 256, 512, 1, d) == pytest.approx(300 * 256 / (4 * 32768))
    assert tile_wave_efficiency(1024, 256, 512, 1, d) == 1.0
    assert tile_wave_efficiency(1024, 256, 512, 1, device()) == 512 / 612  # CPUs: k loop alone


def test_blackwell_pair_tile_waves_by_hand():
    """dgx-b200: 256 x 256 tiles, each on a pair of SMs (gemm_tile_sms 2): 148 / 2 = 74 at a
    time. m = 1152, n = 8192, k = 4096: ceil(1152/256) * 32 = 160 tiles, ceil(160/74) = 3 waves
    data-parallel (split_k): u = 1152*8192 / (3 * 74 * 65536) = 0.6486, x k/(k + k_half).
    Hopper's 128 x 256 tile per SM packs the same GEMM in 9 * 32 = 288 tiles, 2 waves of 148:
    u = 1152*8192 / (296 * 32768). The shipped stream_k spreads the tail (12 tiles, under half
    of 74) with the second wave: 4096 + k_half + 86/74 x 4096 + 2 k_half k steps."""
    b200 = load_topology("dgx-b200").device
    assert (b200.gemm_tile, b200.gemm_tile_sms, b200.sm_count) == ((256, 256), 2, 148)
    k_half = b200.gemm_k_half_dim
    steps = 4096 + k_half + 86 / 74 * 4096 + 2 * k_half
    assert tile_wave_efficiency(1152, 8192, 4096, 1, b200) == pytest.approx(
        1152 * 8192 * 4096 / (74 * 65536 * steps))
    b200 = dataclasses.replace(b200, gemm_decomposition="split_k")
    keep = 4096 / (4096 + k_half)
    assert tile_wave_efficiency(1152, 8192, 4096, 1, b200) == pytest.approx(
        1152 * 8192 / (3 * 74 * 65536) * keep)
    hopper_tiles = dataclasses.replace(b200, gemm_tile=(128, 256), gemm_tile_sms=1)
    assert tile_wave_efficiency(1152, 8192, 4096, 1, hopper_tiles) == pytest.approx(
        1152 * 8192 / (296 * 32768) * keep)
    # a power-of-two shape fills both alike: 2048^2 is 64 pair tiles or 128 single ones, one wave
    assert tile_wave_efficiency(2048, 2048, 4096, 1, b200) == pytest.approx(
        tile_wave_efficiency(2048, 2048, 4096, 1, hopper_tiles))


def test_low_precision_k_half_by_hand():
    """gemm_k_half_dim_fp8 = 1024 (bf16's 512): one 128 x 256 tile on 1 SM, k = 1024 keeps
    1024 / 1536 in bf16 and 1024 / 2048 in fp8, mxfp8 and nvfp4; unset, fp8 keeps bf16's."""
    d = device(gemm_tile=[128, 256], sm_count=1, gemm_half_efficiency_dim=0, gemm_k_half_dim=512)
    assert tile_wave_efficiency(128, 256, 1024, 1, d, "fp8") == pytest.approx(1024 / 1536)
    d = dataclasses.replace(d, gemm_k_half_dim_fp8=1024.0)
    got = {dt: tile_wave_efficiency(128, 256, 1024, 1, d, dt)
           for dt in ("bf16", "fp8", "mxfp8", "nvfp4")}
    assert got == pytest.approx({"bf16": 1024 / 1536, "fp8": 0.5, "mxfp8": 0.5, "nvfp4": 0.5})
    assert gemm_efficiency(128, 256, 1024, d, dtype="fp8") == pytest.approx(0.5 * 0.5)


def test_split_k_fills_idle_sms_by_hand():
    """256 x 256 is 2 tiles of 128 x 256. On 8 SMs they fill a quarter: with k = 4096 the k
    loop shares min(8 / 2, 4096 / 1024) = 4 ways: u = 256*256*4 / (8 * 32768) = 1; with
    k = 1536, 1.5 ways: 0.375. On 4 SMs they fill half: with gemm_decomposition data_parallel
    (Hopper's cuBLAS, CUTLASS's stream-K heuristic) they run unsplit: u = 256*256 /
    (4 * 32768) = 0.5 whatever k; with split_k, they split 2 ways: 1. A skinny m = 1 GEMM
    (n = 512: 2 tiles) loses only its tiles' padding: 512 / 65536. With a k half-dim of 1024,
    each of the 4 shares' k loop keeps (k/s) / (k/s + 1024): 1024 / 2048."""
    d = device(gemm_tile=[128, 256], sm_count=8, gemm_half_efficiency_dim=0)
    assert tile_wave_efficiency(256, 256, 4096, 1, d) == 1.0
    assert tile_wave_efficiency(256, 256, 1536, 1, d) == 0.375
    assert tile_wave_efficiency(1, 512, 4096, 1, d) == pytest.approx(512 / (2 * 32768))
    half = device(gemm_tile=[128, 256], sm_count=4, gemm_half_efficiency_dim=0,
                  gemm_decomposition="data_parallel")
    assert tile_wave_efficiency(256, 256, 4096, 1, half) == 0.5
    assert tile_wave_efficiency(256, 256, 1536, 1, half) == 0.5
    half = dataclasses.replace(half, gemm_decomposition="split_k")
    assert tile_wave_efficiency(256, 256, 4096, 1, half) == 1.0
    d = device(gemm_tile=[128, 256], sm_count=8, gemm_half_efficiency_dim=0, gemm_k_half_dim=1024)
    assert tile_wave_efficiency(256, 256, 4096, 1, d) == pytest.approx(1024 / 2048)


def test_stream_k_share_by_hand():
    """P = 132: 96 tiles fill more than half (2 x 96 >= 132): 1 share; 65 tiles fill less:
    min(132 / 65, k / 1024) shares, 2.03 at k = 8192 and 1.5 at k = 1536; never under 1.
    stream_k keeps the 96 whole too; split_k splits them: min(132 / 96, 7168 / 1024) = 1.375."""
    assert stream_k_share(96, 132, 7168) == 1.0
    assert stream_k_share(96, 132, 7168, "stream_k") == 1.0
    assert stream_k_share(96, 132, 7168, "split_k") == 1.375
    assert stream_k_share(66, 132, 7168) == 1.0
    assert stream_k_share(65, 132, 8192) == pytest.approx(132 / 65)
    assert stream_k_share(65, 132, 1536) == 1.5
    assert stream_k_share(65, 132, 512) == 1.0


def test_wave_steps_by_hand():
    """P = 74 (B200's SM pairs), k 4096, k_half 355, bf16: 96 tiles leave a tail of 22, under
    half a wave: stream_k spreads all 96 over the 74 (no full wave before them): 96 / 74 x
    4096 + 2 x 355; data-parallel, 2 waves of 4451. 111 tiles (tail 37, half a wave) and 148
    (no tail) run whole waves; k = 512 (8 k tiles of 64) is not split; 160 tiles (2 full waves,
    tail 12) run one wave data-parallel, then 86 tiles' k loops over the 74."""
    assert wave_steps(96, 74, 4096, 355, 2) == pytest.approx(96 / 74 * 4096 + 710)
    assert wave_steps(96, 74, 4096, 355, 2, "data_parallel") == 2 * 4451
    assert wave_steps(96, 74, 4096, 355, 2, "split_k") == 2 * 4451
    assert wave_steps(111, 74, 4096, 355, 2) == 2 * 4451
    assert wave_steps(148, 74, 4096, 355, 2) == 2 * 4451
    assert wave_steps(96, 74, 512, 355, 2) == 2 * 867
    assert wave_steps(96, 74, 1024, 355, 1) == 2 * 1379        # fp8: 8 k tiles of 128
    assert wave_steps(160, 74, 4096, 355, 2) == pytest.approx(4451 + 86 / 74 * 4096 + 710)


def test_stream_k_tail_by_hand():
    """B200's QKV GEMM at m 1024 (n 6144, k 4096, bf16): 4 x 24 = 96 tiles of 256 x 256 on
    74 SM pairs, k_half 355: stream_k keeps u = 1024 x 6144 x 4096 / (74 x 65536 x
    (96 / 74 x 4096 + 710)) of the tensor cores, data-parallel (split_k) 96 / 148 x 4096 / 4451."""
    d = device(gemm_tile=[256, 256], gemm_tile_sms=2, sm_count=148, gemm_half_efficiency_dim=0,
               gemm_k_half_dim=355, gemm_decomposition="stream_k")
    steps = 96 / 74 * 4096 + 710
    assert tile_wave_efficiency(1024, 6144, 4096, 1, d) == pytest.approx(
        1024 * 6144 * 4096 / (74 * 65536 * steps))
    d = dataclasses.replace(d, gemm_decomposition="split_k")
    assert tile_wave_efficiency(1024, 6144, 4096, 1, d) == pytest.approx(96 / 148 * 4096 / 4451)


def test_skinny_gemm_has_no_wave_tail_by_hand():
    """Tiles 128 x 256 on 4 SMs, m = 1: a skinny GEMM keeps m / Tm = 1/128 of the tensor cores
    whatever its tile count, as many tiles as SMs or more (n = 1280: 5 tiles; a wave count
    would make it 1280 / (2 waves x 4 x 32768) = 1/204.8): it runs split evenly over the SMs."""
    d = device(gemm_tile=[128, 256], sm_count=4, gemm_half_efficiency_dim=0)
    for tiles in (1, 3, 4, 5, 8, 9):
        assert tile_wave_efficiency(1, 256 * tiles, 4096, 1, d) == pytest.approx(1 / 128)
    assert tile_wave_efficiency(1, 1280, 4096, 1, d) == pytest.approx(1280 / (5 * 32768))


def test_attention_kernel_efficiency_by_hand():
    """efficiency 0.6 at d = 128 (0.5 at 64), seq_half 1000: at seq 1000, d 128: 0.6 * 0.5 =
    0.3; causal x 0.9: 0.27; d = 100 takes the nearest listed (128); backward 0.4 * 0.5."""
    kernels = {"k": {"efficiency": {64: 0.5, 128: 0.6}, "backward_efficiency": {128: 0.4},
                     "seq_half_efficiency": 1000, "causal_efficiency": 0.9}}
    d = device(attention_kernels=kernels, attention_kernel="k")
    assert attention_efficiency(1000, 1000, 128, d) == pytest.approx(0.3)
    assert attention_efficiency(1000, 1000, 128, d, causal=True) == pytest.approx(0.27)
    assert attention_efficiency(1000, 1000, 100, d) == pytest.approx(0.3)
    assert attention_efficiency(1000, 1000, 128, d, backward=True) == pytest.approx(0.2)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 20000), st.integers(1, 20000), st.integers(1, 64),
       st.sampled_from(["dgx-a100", "dgx-h100", "pcie-l40s"]))
def test_gemm_never_beats_the_peak_or_grows_faster(m, n, k, batch, topo):
    """Every GEMM takes at least its FLOPs at peak and its bytes at the memory bandwidth, and
    one more row of output never makes it faster (tile quantization keeps time monotone)."""
    from tpsim.cluster.topology import load_topology
    d = load_topology(topo).device
    t = gemm_time(m, n, k, d, "bf16", batch)
    assert t >= 2.0 * m * n * k * batch / d.peak("bf16")
    assert t >= (m * k + k * n + m * n) * batch * 2 / d.memory_bandwidth_Bps
    for bigger in ((m + 1, n, k), (m, n + 1, k), (m, n, k + 1), (m, n, 2 * k)):
        assert gemm_time(*bigger, d, "bf16", batch) >= t * (1 - 1e-12)


def test_attention_time_by_hand():
    """seq 900 x 900, head_dim 100: eff = 0.5 * 0.9 * 0.9 * 0.5 = 0.2025; 2.025e9 FLOP at
    100e12 * 0.2025 = 100 us (memory 1 MB = 2 us smaller), plus 2 us launch."""
    assert attention_time(2.025e9, 1e6, 900, 900, 100, device(), "bf16") == pytest.approx(102e-6)


@pytest.mark.parametrize("m", [1, 64, 1024])
def test_more_work_never_faster(m):
    d = device()
    assert gemm_time(m, 512, 512, d, "bf16") <= gemm_time(2 * m, 512, 512, d, "bf16")
