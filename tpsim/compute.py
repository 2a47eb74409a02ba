"""Compute cost model: what one kernel costs on one device. Pure functions, seconds out.

The formulas are the contract with ``tpsim.calibrate`` (docs/dev/CONTRACTS.md), which fits the
device parameters they read (``gemm_max_efficiency``, ``gemm_half_efficiency_dim``,
``memory_efficiency``, ``kernel_launch_us``); they live in the topology YAML with their source.
"""
from __future__ import annotations

from .topology import BYTES_PER_ELEMENT, Device

# FlashAttention-2's backward runs five matmuls against the forward's two, recomputing the
# scores: 2.5x the forward's FLOPs (Dao 2023, "FlashAttention-2", section 4.1 benchmarks).
FLASH_BACKWARD_FACTOR = 2.5
# A causal kernel that skips fully masked tiles executes about half the score FLOPs.
CAUSAL_FRACTION = 0.5


def size_efficiency(m, n, k, half, best=1.0):
    """best * prod_{d in (m, n, k)} d / (d + half): the share of the device's peak that a GEMM
    of size (m, n, k) keeps when ``best`` is its largest GEMMs' share. Plain arithmetic, so
    ``tpsim.calibrate`` evaluates the same curve on numpy arrays of shapes."""
    return best * (m / (m + half)) * (n / (n + half)) * (k / (k + half))


def gemm_efficiency(m: float, n: float, k: float, device: Device) -> float:
    """Fraction of peak a GEMM of size (m, n, k) reaches.

    eff = gemm_max_efficiency * prod_{d in (m, n, k)} d / (d + gemm_half_efficiency_dim)

    A saturating curve per dimension: large GEMMs approach the device's best sustained fraction;
    a dimension equal to ``gemm_half_efficiency_dim`` alone halves it (a skinny GEMM fills few
    tensor-core tiles). tpsim's own model, fitted per device by ``tpsim.calibrate``.
    """
    return size_efficiency(m, n, k, device.gemm_half_efficiency_dim, device.gemm_max_efficiency)


FP32_ACCUMULATE_BYTES = 8    # read and write one fp32 output element


def gemm_bytes(m: float, n: float, k: float, dtype: str, batch: int = 1,
               accumulate: bool = False) -> float:
    """Memory traffic of ``batch`` GEMMs (m x k) @ (k x n): read both operands, write the output.

    bytes = batch * ((m*k + k*n) * bytes_per_element + m*n * out)
    out = bytes_per_element, or 8 with ``accumulate`` (C += A B into fp32: Megatron's
    gradient_accumulation_fusion reads and writes the fp32 main gradient).
    """
    bpe = BYTES_PER_ELEMENT[dtype]
    out = FP32_ACCUMULATE_BYTES if accumulate else bpe
    return batch * ((m * k + k * n) * bpe + m * n * out)


def gemm_time(m: float, n: float, k: float, device: Device, dtype: str, batch: int = 1,
              accumulate: bool = False) -> float:
    """One (batched) GEMM on a roofline with a size-dependent efficiency (CONTRACTS.md).

    t = kernel_launch + max(batch * 2mnk / (peak[dtype] * eff(m, n, k)),
                            batch * (mk + kn + mn) * bytes_per_element / (mem_bw * mem_eff))

    ``batch`` > 1 is one strided-batched kernel (the unfused attention's QK^T and AV, one GEMM
    per head): one launch, ``batch`` times the work.
    """
    flops = batch * 2.0 * m * n * k
    compute = flops / (device.peak(dtype) * gemm_efficiency(m, n, k, device))
    memory = gemm_bytes(m, n, k, dtype, batch, accumulate) / (device.memory_bandwidth_Bps
                                                   * device.memory_efficiency)
    return device.kernel_launch_s + max(compute, memory)


def elementwise_time(nbytes: float, device: Device) -> float:
    """A memory-bound kernel (norm, activation, dropout, residual add, softmax).

    t = kernel_launch + nbytes / (mem_bw * mem_eff)      (CONTRACTS.md)
    """
    return device.kernel_launch_s + nbytes / (device.memory_bandwidth_Bps * device.memory_efficiency)


def attention_exec_flops(flops: float, causal: bool, backward: bool) -> float:
    """FLOPs a fused (flash) attention kernel executes, from the conventional count.

    The conventional count (Narayanan et al. 2021) is 4 b s^2 (heads*head_dim) forward, full
    square, and twice that backward. A causal flash kernel skips masked tiles (x 0.5), and its
    backward recomputes the scores: 2.5x the forward's work (Dao 2023), i.e. 1.25x the
    conventional backward count.
    """
    executed = flops * (CAUSAL_FRACTION if causal else 1.0)
    return executed * (FLASH_BACKWARD_FACTOR / 2 if backward else 1.0)


def attention_time(exec_flops: float, nbytes: float, seq_q: int, seq_kv: int, head_dim: int,
                   device: Device, dtype: str) -> float:
    """A fused (flash) attention kernel: a roofline with the efficiency of its per-head GEMMs.

    t = kernel_launch + max(exec_flops / (peak[dtype] * eff(seq_q, seq_kv, head_dim)),
                            nbytes / (mem_bw * mem_eff))

    The kernel's tiles are (seq_q x head_dim) @ (head_dim x seq_kv) products, so the GEMM curve
    with those dimensions stands in for the kernel's efficiency (head_dim 128 on H100 gives
    ~0.33 of peak, near FlashAttention-2's ~35-40% there; calibrate refits it).
    """
    eff = gemm_efficiency(seq_q, seq_kv, head_dim, device)
    compute = exec_flops / (device.peak(dtype) * eff)
    memory = nbytes / (device.memory_bandwidth_Bps * device.memory_efficiency)
    return device.kernel_launch_s + max(compute, memory)
