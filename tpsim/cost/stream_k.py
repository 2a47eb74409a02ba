"""How a GEMM's output tiles share the SMs' last wave (split-K / stream-K).

Pure: numbers in, a share count or a time in k steps out (:func:`tpsim.cost.compute.
tile_wave_efficiency` uses them). A device's ``gemm_decomposition`` names its libraries' rule:

    split_k        a one-wave GEMM (tiles < P) splits its k loop over the idle SMs; more tiles
                   run in whole waves, the last partly filled (tpsim's rule where no source
                   gives the library's: Ampere's cuBLAS picks among its split-K kernels by its
                   own heuristics)
    data_parallel  as split_k, but a one-wave GEMM whose tiles fill half the SMs or more runs
                   unsplit: the one-wave half of CUTLASS's stream-K heuristic (Hopper's
                   cuBLAS: microsoft/vidur's H100 GEMMs run their multi-wave tails whole)
    stream_k       CUTLASS's stream-K scheduler in its default ``DecompositionMode::Heuristic``
                   (the ``decomposition_mode`` its Arguments default to), the one-wave rule
                   and a tail under half a wave spread over the SMs with the last full wave

from ``get_num_sk_tiles`` and ``get_num_sk_units`` in
include/cutlass/gemm/kernel/tile_scheduler_params.h (v4.7.0), the parameters of
PersistentTileSchedulerSm90StreamK and of Blackwell's PersistentTileSchedulerSm100StreamK
(sm100_tile_scheduler_stream_k.hpp, whose params and Arguments wrap the sm90 ones), in units
of the P tiles a wave runs (a 2-SM cluster's CTA pair counts its two CTA tiles as one tile:
the rule's ``2 * tail_tiles >= ctas_per_wave`` is the same on pairs).
"""
from __future__ import annotations

import math

SPLIT_K_MIN = 1024   # the shortest k a split-K / stream-K share gets (assumed; must exceed 512:
                     # H100's 1024^3 matmul runs unsplit, tests/data/published_compute)
# CUTLASS's min_iters_per_sk_unit_ (8 k tiles, tile_scheduler_params.h v4.7.0) of 128 bytes each
# (the k tile of its sm90 / sm100 TMA GEMMs: 64 bf16, 128 fp8 elements, one 128-byte swizzle row)
SK_MIN_K_BYTES = 8 * 128


def stream_k_share(tiles: int, sms: int, k: float, mode: str = "data_parallel") -> float:
    """Shares of its k loop each output tile of a GEMM with ``tiles`` < P tiles gets:

        s = 1                         if 2 tiles >= P, but in split_k mode (data-parallel)
        s = max(1, min(P / tiles, k / SPLIT_K_MIN))  otherwise (split over the SMs)

    CUTLASS's heuristic splits a one-wave GEMM's tiles only when they fill less than half the
    SMs (``get_num_sk_tiles``: "prefer data-parallel decomposition if ... the tail wave is more
    than half full", ``if (2 * tail_tiles >= ctas_per_wave) return 0`` stream-K tiles, the tail
    being every tile when there is no full wave; else all of them are stream-K tiles over
    min(P, k tiles / 8) units): a fractional split (P / tiles under 2) is not run, because
    every split tile pays its partials' fp32 workspace round trip and the owner's wait for them
    (Osama et al. 2023, arXiv 2301.03598, the "fixup"). The GEMM then runs one partly filled
    wave.
    """
    if mode != "split_k" and 2 * tiles >= sms:
        return 1.0
    return max(1.0, min(sms / tiles, k / SPLIT_K_MIN))


def wave_steps(tiles: int, sms: int, k: float, k_half: float, bytes_per_element: float,
               mode: str = "stream_k") -> float:
    """Time of a GEMM of ``tiles`` >= P output tiles, in k steps of one tile's k loop (a full
    tile takes k + k_half: its k loop and its fixed prologue and epilogue, ``gemm_k_half_dim``):

        full, tail = divmod(tiles, P)
        t = ceil(tiles / P) (k + k_half)                           data-parallel
        t = (full - 1) (k + k_half) + (P + tail) / P k + 2 k_half   stream-K

    Stream-K in ``stream_k`` mode where the tail is under half a wave (0 < 2 tail < P:
    ``get_num_sk_tiles``, "prefer data-parallel decomposition if we have more than one wave
    and the tail wave is more than half full") and each tile has more than 8 k tiles (k >
    SK_MIN_K_BYTES / bytes per element; ``if (... k_tiles_per_output_tile <=
    min_iters_per_sk_unit_) return 0``). CUTLASS then runs full - 1 data-parallel waves and
    spreads the last full wave's tiles and the tail's over P stream-K units (``sk_tiles =
    output_tiles - dp_tiles``, dp_waves = full - 1; ``get_num_sk_units``: min(P, their k tiles
    / 8) = P units): each unit runs (P + tail) / P tiles' k loops, which cross one tile
    boundary, so it pays two tiles' prologue and epilogue (the partial tile's fp32 fixup,
    Osama et al. 2023, is not priced apart, as in :func:`stream_k_share`). The other modes run
    every wave data-parallel.
    """
    full, tail = divmod(tiles, sms)
    if mode != "stream_k" or not 0 < 2 * tail < sms or k * bytes_per_element <= SK_MIN_K_BYTES:
        return math.ceil(tiles / sms) * (k + k_half)
    return (full - 1) * (k + k_half) + (sms + tail) / sms * k + 2 * k_half
