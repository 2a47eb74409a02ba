"""Tile and wave quantization of a GPU GEMM, over the tile shapes its library picks among.

Pure: numbers in, a share of the tensor cores out (:func:`tpsim.cost.compute.gemm_efficiency`
multiplies it in). The tiles' last wave (split-K / stream-K) is :mod:`tpsim.cost.stream_k`'s.
"""
from __future__ import annotations

import functools
import math

from ..cluster.topology import BYTES_PER_ELEMENT, Device
from ..spec.precision import LOW_PRECISION
from .stream_k import stream_k_share, wave_steps

FP4 = ("nvfp4",)             # the dtypes Blackwell's FP4 tensor cores run (gemm_max_efficiency_fp4)


def max_efficiency(device: Device, dtype: str) -> float:
    """The share of peak a dtype's large GEMMs reach: ``gemm_max_efficiency``, or
    ``gemm_max_efficiency_fp8`` for fp8 and MXFP8, ``gemm_max_efficiency_fp4`` for NVFP4, each
    defaulting to the one before."""
    best = device.gemm_max_efficiency
    if dtype in LOW_PRECISION and device.gemm_max_efficiency_fp8 is not None:
        best = device.gemm_max_efficiency_fp8
    if dtype in FP4 and device.gemm_max_efficiency_fp4 is not None:
        best = device.gemm_max_efficiency_fp4
    return best


def tile_shapes(device: Device) -> tuple[tuple[int, int, int], ...]:
    """The device's GEMM tiles as (rows, cols, SMs): ``gemm_tile`` on ``gemm_tile_sms`` SMs
    first (the reference tile: ``gemm_k_half_dim`` is in its k steps), then each
    ``gemm_tiles`` entry "RxC": SMs. Empty without ``gemm_tile`` (CPUs)."""
    if not device.gemm_tile:
        return ()
    extra = tuple(sorted((device.gemm_tiles or {}).items()))
    return _shapes(tuple(device.gemm_tile), device.gemm_tile_sms, extra)


@functools.lru_cache(maxsize=64)
def _shapes(tile: tuple[int, ...], sms: int, extra: tuple) -> tuple[tuple[int, int, int], ...]:
    out = [(tile[0], tile[1], sms)]
    for name, pair in extra:
        rows, cols = (int(x) for x in name.split("x"))
        if (rows, cols, int(pair)) not in out:
            out.append((rows, cols, int(pair)))
    return tuple(out)


def tile_wave_efficiency(m: float, n: float, k: float, batch: int, device: Device,
                         dtype: str = "bf16") -> float:
    """Share of the tensor cores a GEMM's output tiles keep busy (tile and wave quantization),
    with the best of the device's tiles (:func:`tile_shapes`), as cuBLAS's heuristic picks
    among its kernels per shape (NVIDIA, "Matrix Multiplication Background User's Guide",
    sections 2.3 and 3.1: cuBLAS's tile sizes and tile quantization); CUTLASS has several per
    architecture (python/cutlass_library/generator.py, sm90_shapes.py, v4.7.0; the presets'
    YAML lists each device's):

        u = max over tiles (Tm, Tn, S) and both orientations of u_tile(Tm, Tn, P = sm_count / S)

    Each tile runs its k loop at the large GEMMs' rate, or at the rate its operands come
    from L2, whichever is lower: a Tm x Tn tile reads (Tm + Tn) k elements for 2 Tm Tn k FLOPs
    (the same guide, section 2.3: a larger tile reuses more data, so needs less bandwidth),
    so with every SM busy, at the device's measured all-SM L2 read rate (``l2_bandwidth_GBps``)

        rate = min(1, L2 * 2 Tm Tn / ((Tm + Tn) bytes per element) / (peak[dtype] * best[dtype]))

    multiplies u_tile (1 without an L2 rate). Every tile has the same fixed prologue and
    epilogue time: ``gemm_k_half_dim`` (k_half) is in k steps of the reference ``gemm_tile``
    (area A0 = Tm0 Tn0 / S0 an SM), so a tile of area A = Tm Tn / S an SM pays k_half A0 / A
    of its own shorter k steps, and wins only where it fills the waves better.

    u_tile, for a GEMM computing its (m x n) output ``batch`` times in tiles of Tm x Tn, P at a
    time (Blackwell's tcgen05 MMA computes one tile on a pair of SMs: CUTLASS example
    70_blackwell_gemm, "the tile computed by tcgen05 MMA, could be across 2 SMs"); a partly
    filled tile costs as much as a full one. With tiles = ceil(m/Tm) ceil(n/Tn) batch >= P, in
    the time t of :func:`~tpsim.cost.stream_k.wave_steps` (whole waves, or the last full wave
    and a partly filled one spread over the SMs by stream-K, by ``gemm_decomposition``):

        u = m n batch k / (P Tm Tn t),  t = ceil(tiles / P) (k + k_half) with whole waves

    A GEMM with fewer tiles than P shares its k loop over the idle SMs (split-K / stream-K) in
    s = :func:`~tpsim.cost.stream_k.stream_k_share` shares: u = m n batch s / (P Tm Tn); one
    with m or n under one tile (decoding's m = batch) is spread over them all (s = P / tiles):
    u = m n batch / (tiles Tm Tn). A skinny one, m or n under the tile's shorter side (the
    reference tile's: a skinny GEMM is priced on ``gemm_tile`` alone, whatever others), keeps
    that u whatever its tile count: with more tiles than P it has no wave tail either, because
    cuBLAS runs it with kernels that split its work evenly over the SMs (split-K / stream-K,
    Osama et al. 2023) and its time is its weight reads, not a second compute-bound wave:
    cuBLAS's skinny GEMMs stream their weights at 77-90% of the HBM peak (A100 1.56-1.66 TB/s
    at m 16-64, n = k = 16384, ml-explore/mlx PR 3255; H100 2.75-3.0 TB/s at m 16-128, n 12288
    and 43008, k 5376, vLLM PR 49363; both check rows of tests/data/published_compute).
    Each share runs k / s of the k loop with its tile's fixed prologue and epilogue:
    x (k/s) / (k/s + k_half), continuous in k. Without a tile (CPUs): k / (k + k_half) alone.
    fp8, MXFP8 and NVFP4 take ``gemm_k_half_dim_fp8`` where set: the same fixed time per tile
    is more k steps of a faster k loop (Blackwell's presets: twice bf16's, the fp8 rate).
    """
    k_half = device.gemm_half_efficiency_dim if device.gemm_k_half_dim is None \
        else device.gemm_k_half_dim
    if dtype in LOW_PRECISION and device.gemm_k_half_dim_fp8 is not None:
        k_half = device.gemm_k_half_dim_fp8
    shapes = tile_shapes(device)
    if not shapes or not device.sm_count:
        return k / (k + k_half)
    feed = 0.0
    if device.l2_bandwidth_Bps and dtype in device.peak_flops:
        feed = device.l2_bandwidth_Bps / (device.peak(dtype) * max_efficiency(device, dtype))
    return _best_tile(m, n, k, batch, shapes, device.sm_count, k_half,
                      BYTES_PER_ELEMENT[dtype], device.gemm_decomposition, feed)


@functools.lru_cache(maxsize=1 << 16)
def _best_tile(m, n, k, batch, shapes, sm_count, k_half, bpe, mode, feed) -> float:
    """:func:`tile_wave_efficiency`'s maximum over ``shapes`` (memoised: scalars and tuples)."""
    tm0, tn0, s0 = shapes[0]
    best = 0.0
    for tm, tn, s in shapes if min(m, n) >= min(tm0, tn0) else shapes[:1]:
        half = k_half * (tm0 * tn0 / s0) / (tm * tn / s)
        rate = min(1.0, feed * 2 * tm * tn / ((tm + tn) * bpe)) if feed else 1.0
        if rate * k / (k + half) <= best:   # u_tile <= k / (k + half) in every branch
            continue
        best = max(best, rate * _one_tile(m, n, k, batch, (tm, tn), max(1, sm_count // s),
                                          half, bpe, mode))
    return best


def _one_tile(m, n, k, batch, tile, sms, k_half, bpe, mode) -> float:
    """u of one tile shape, the better of its two orientations (:func:`tile_wave_efficiency`)."""
    best = 0.0
    skinny = min(m, n) < min(tile)
    for tm, tn in (tile, tile[::-1]):
        tiles = math.ceil(m / tm) * math.ceil(n / tn) * batch
        if tiles >= sms and not skinny:
            steps = wave_steps(tiles, sms, k, k_half, bpe, mode)
            best = max(best, m * n * batch * k / (sms * tm * tn * steps))
            continue
        if m < tm or n < tn:
            share = max(1.0, sms / tiles)
            u = m * n * batch / (tiles * tm * tn)
        else:
            share = stream_k_share(tiles, sms, k, mode)
            u = m * n * batch * share / (sms * tm * tn)
        best = max(best, u * (k / share) / (k / share + k_half))
    return best
