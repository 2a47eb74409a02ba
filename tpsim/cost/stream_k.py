"""How a GEMM with fewer output tiles than the SMs shares its k loop (split-K / stream-K).

Pure: numbers in, a share count out (:func:`tpsim.cost.compute.tile_wave_efficiency` uses it).
"""
from __future__ import annotations

SPLIT_K_MIN = 1024   # the shortest k a split-K / stream-K share gets (assumed; must exceed 512:
                     # H100's 1024^3 matmul runs unsplit, tests/data/published_compute)


def stream_k_share(tiles: int, sms: int, k: float, persistent: bool = True) -> float:
    """Shares of its k loop each output tile of a GEMM with ``tiles`` < P tiles gets:

        s = 1                                   if persistent and 2 tiles >= P (data-parallel)
        s = max(1, min(P / tiles, k / SPLIT_K_MIN))  otherwise (split over the SMs)

    ``persistent``: the device runs its GEMMs as persistent kernels (``persistent_kernels``
    lists gemm: Hopper's cuBLAS/CUTLASS sm90 GEMMs, one CTA an SM), whose stream-K tile
    scheduler decides the split. Other devices keep the split alone (no source gives their
    libraries' rule: Ampere's cuBLAS picks among its split-K kernels by its own heuristics).

    CUTLASS's stream-K scheduler in its default ``DecompositionMode::Heuristic`` splits a
    one-wave GEMM's tiles only when they fill less than half the SMs (``get_num_sk_tiles`` in
    include/cutlass/gemm/kernel/tile_scheduler_params.h, v4.7.0: "prefer data-parallel
    decomposition if ... the tail wave is more than half full", ``if (2 * tail_tiles >=
    ctas_per_wave) return 0`` stream-K tiles, the tail being every tile when there is no full
    wave; else all of them are stream-K tiles over min(P, k tiles / 8) units): a fractional split
    (P / tiles under 2) is not run, because every split tile pays its partials' fp32
    workspace round trip and the owner's wait for them (Osama et al. 2023, arXiv
    2301.03598, the "fixup"). The GEMM then runs one partly filled wave.
    """
    if persistent and 2 * tiles >= sms:
        return 1.0
    return max(1.0, min(sms / tiles, k / SPLIT_K_MIN))
