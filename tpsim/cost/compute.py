"""Compute cost model: what one kernel costs on one device. Pure functions, seconds out.

Every kernel is a roofline: the longer of its FLOPs at the device's sustained rate for that
kernel and its bytes at the sustained memory bandwidth, plus a launch. The rates are device
parameters in the topology YAML, each with its source (the GEMM and attention efficiencies of the
shipped GPUs are fitted on published kernel benchmarks: tests/data/published_compute,
``python bench/compute_published.py``); ``tpsim.calibrate.fitting`` refits them on your machine.
"""
from __future__ import annotations

from ..cluster.sustained import kernel_clock
from ..cluster.topology import BYTES_PER_ELEMENT, Device
from ..spec.precision import LOW_PRECISION
from .mmha import mmha_s
from .gemm_tiles import FP4, max_efficiency, tile_wave_efficiency  # noqa: F401 (FP4 re-exported)

# FlashAttention-2's backward runs five matmuls against the forward's two, recomputing the
# scores: 2.5x the forward's FLOPs (Dao 2023, "FlashAttention-2", section 4.1 benchmarks).
FLASH_BACKWARD_FACTOR = 2.5
FP32_ACCUMULATE_BYTES = 8    # read and write one fp32 output element


def gemm_efficiency(m: float, n: float, k: float, device: Device, batch: int = 1,
                    dtype: str = "bf16") -> float:
    """Fraction of peak a GEMM of size (m, n, k), ``batch`` times, reaches.

    eff = best[dtype] * m/(m + h) * n/(n + h) * tile_wave_efficiency(m, n, k, batch, dtype)

    best = ``gemm_max_efficiency`` (``gemm_max_efficiency_fp8`` for fp8 and mxfp8,
    ``gemm_max_efficiency_fp4`` for nvfp4, each defaulting to the one before), h =
    ``gemm_half_efficiency_dim`` (a smooth size curve; 0 on GPUs, whose size effect is the
    tiles'); the tiles, waves and k loop (``gemm_k_half_dim``, ``gemm_k_half_dim_fp8`` for the
    low-precision dtypes: each tile's fixed prologue and epilogue) are
    :func:`tile_wave_efficiency`'s. tpsim's own model; its GPU parameters are
    fitted on published GEMM benchmarks.

    FP4 has a best of its own because Blackwell's FP4 GEMMs keep less of their (twice fp8's)
    peak than fp8 GEMMs do (cuBLAS at 8192^3 on B200: MXFP4 58%, MXFP8 86%; published_compute):
    the same tile's k loop runs twice as fast while its fixed prologue and epilogue do not, and
    each k block also loads and copies into tensor memory the scales of both operands (one
    E4M3 byte per 16 elements for NVFP4, the second level of its two-level scaling, the fp32
    per-tensor scale, applied once in the epilogue). tpsim does not price these apart: one
    measured factor holds them; the scales' bytes are in :func:`gemm_bytes` (QUANTIZED_BYTES).
    """
    h = device.gemm_half_efficiency_dim
    return max_efficiency(device, dtype) * (m / (m + h)) * (n / (n + h)) * \
        tile_wave_efficiency(m, n, k, batch, device, dtype)


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


def _memory_s(nbytes: float, device: Device) -> float:
    return nbytes / (device.memory_bandwidth_Bps * device.memory_efficiency)


def gemm_time(m: float, n: float, k: float, device: Device, dtype: str, batch: int = 1,
              accumulate: bool = False) -> float:
    """One (batched) GEMM on a roofline with a size-dependent efficiency.

    t = kernel_launch + max(c, mem) + serial * min(c, miss)
    c = batch * 2mnk / (peak[dtype] * eff * clock(eff)),  eff = gemm_efficiency(m, n, k, batch)
    clock: :func:`tpsim.cluster.sustained.kernel_clock` (1 but on a training step's device)
    mem = B / (mem_bw * mem_eff),  B = gemm_bytes(m, n, k, batch, accumulate)
    miss = max(0, B - cache) / (mem_bw * mem_eff)

    ``batch`` > 1 is one strided-batched kernel (the unfused attention's QK^T and AV, one GEMM
    per head): one launch, ``batch`` times the work. serial = ``gemm_memory_serial`` and cache
    = ``gemm_cache_MiB`` are a CPU's (0 on GPUs, the default: the roofline alone). A CPU core's
    GEMM (MKL sgemm, one thread) waits on the operand bytes its cache does not hold (``serial``
    passes over them; packing copies both operands, so it can exceed 1). That costs little where
    each byte feeds many FLOPs (a square d^3 GEMM: d / 6 FLOP per fp32 byte) and most in the
    attention core's GEMMs, one of whose dimensions is the head dimension: each element of the
    (s x s) scores is written, or read, for 2 head_dim FLOPs, at most 32 FLOP per fp32 byte at
    head_dim 64 however long the sequence. Measured on the validation CPU, one thread, warm
    operands: 2048 x 2048 x 64 and 2048 x 64 x 2048 fp32 matmuls (18 MB) run 14% and 22% below
    a 1024 x 1024 x 64's rate (5 MB), the extra time their bytes at 21 and 12 GB/s; the strided
    batched form (torch.bmm, baddbmm on transposed views) runs at the rate of the same GEMMs
    one by one (validate/gemm_probe.py; docs/measurements/cpu-gloo-2rank).
    """
    flops = batch * 2.0 * m * n * k
    eff = gemm_efficiency(m, n, k, device, batch, dtype)
    compute = flops / (device.peak(dtype) * eff * kernel_clock(device, eff, dtype))
    nbytes = gemm_bytes(m, n, k, dtype, batch, accumulate)
    memory = _memory_s(nbytes, device)
    t = device.kernel_launch_s + max(compute, memory)
    if device.gemm_memory_serial:
        miss = _memory_s(max(0.0, nbytes - device.gemm_cache_bytes), device)
        t += device.gemm_memory_serial * min(compute, miss)
    return t


def grouped_gemm_time(m: float, n: float, k: float, device: Device, dtype: str, groups: int,
                      streams: int, accumulate: bool = False) -> float:
    """``groups`` GEMMs of one size issued one by one over ``streams`` streams, as Transformer
    Engine's grouped GEMM runs the experts of a MoE layer (``nvte_multi_stream_cublas_gemm``
    in ``transformer_engine/common/gemm/cublaslt_gemm.cu``: a loop of cuBLAS GEMMs spread over
    its 4 compute streams, ``common/util/multi_stream.cpp``): floor(groups / streams) rounds of
    ``streams`` GEMMs, then one round of the r = groups mod streams left. A round of j GEMMs
    side by side takes the better of their tiles packed together (the tiles and waves of j
    GEMMs, :func:`tile_wave_efficiency`, one launch) and the j GEMMs back to back (each with
    its own split-K share of idle SMs and its launch):

        round(j) = min(gemm_time(m, n, k, batch=j), j * gemm_time(m, n, k))
        t = floor(groups / streams) * round(streams) + round(r)

    tpsim's own model of the loop.
    """
    def round_s(j: int) -> float:
        if not j:
            return 0.0
        return min(gemm_time(m, n, k, device, dtype, j, accumulate),
                   j * gemm_time(m, n, k, device, dtype, 1, accumulate))
    full, left = divmod(groups, streams)
    return full * round_s(streams) + round_s(left)


def elementwise_time(nbytes: float, device: Device, arith: str = "",
                     elements: float = 0.0, kernels: int = 1) -> float:
    """An elementwise kernel (norm, activation, dropout, residual add, softmax, reduction), or
    ``kernels`` of them run back to back over its bytes, each with its launch:

    t = kernels * kernel_launch + max(nbytes / (mem_bw * mem_eff), elements * element_s[arith])
    t = 0 for nbytes = 0 (no kernel: the operation is a view of its input)

    ``element_s`` (the device's ``elementwise_ns_per_element``, by the kernel's arithmetic:
    ``gelu``, ``softmax_backward``...) is the time one element's arithmetic (exp, erf) takes
    on the device's cores; a kind it does not list, or a device with none (every GPU preset:
    their elementwise kernels are bound by memory), costs 0, so t is the memory term alone.
    The larger of the two, not their sum: an out-of-order core computes on the cache lines its
    hardware prefetcher has already brought while it streams the next ones (ATen's vectorised
    CPU loops touch each element once), so a kernel waits on the slower of the two.
    """
    if not nbytes:   # moves nothing: an op that returns its input (a view) launches nothing
        return 0.0
    per = (device.elementwise_element_s or {}).get(arith, 0.0) if arith else 0.0
    return kernels * device.kernel_launch_s + max(_memory_s(nbytes, device), elements * per)


def memory_bound(time_s: float, nbytes: float, device: Device) -> bool:
    """Whether a kernel taking ``time_s`` is set by its bytes: time_s <= elementwise_time(nbytes)
    (to 1e-9; the memory term of every roofline here), else by its FLOPs."""
    return time_s <= elementwise_time(nbytes, device) * (1 + 1e-9)


def decode_attention_time(nbytes: float, device: Device, cuda_core_group: int = 0,
                          l2_bytes: float = 0.0, instructions: tuple[float, ...] = ()) -> float:
    """A decode attention call (FlashDecoding, FlashInfer's and FlashAttention's split-KV
    decode): one query per sequence reads the KV cache once, so its time is its bytes, plus the
    fixed part of a split-KV kernel (the per-split combine, each CTA's pipeline fill of its
    first K/V tiles), which no byte count shows:

        t = kernel_launch + nbytes / (mem_bw * mem_eff) + decode_fixed

    ``decode_fixed`` is the device's attention kernel's ``decode_fixed_us``
    (:class:`~tpsim.cluster.attention.AttentionKernel`; 0 where the device lists none); the
    H100 and A100 presets' values are fitted on published decode-kernel timings (their YAML
    comments name them).

    ``cuda_core_group`` g > 0: FlashInfer's CUDA-core batch decode kernel, which computes
    q.K and p.V for the g query heads of each KV head on the CUDA cores (FlashInfer <= 0.1.6
    runs it for g in 1, 2, 4, 8; its tensor-core decode otherwise). Its work per KV byte grows
    with g, so past a few heads its cores, not the memory, bound it (flashinfer.ai,
    "Accelerating Self-Attentions for LLM Serving with FlashInfer", 2024-02-02, Figure 9: at
    g = 8 it reads the cache at 42-51% of an H100's HBM peak, its tensor-core decode at
    61-89%):

        t = kernel_launch + max(nbytes / (mem_bw * mem_eff), nbytes * g / (8 R8)) + decode_fixed

    R8 the kernel's ``cuda_core_decode_GBps`` (its rate at g = 8; where the device lists
    none, the memory term alone). The query and output bytes are taken at that rate too
    (under 0.1% of a cache of 100 tokens).

    ``l2_bytes`` or ``instructions`` > 0: TensorRT-LLM's masked multi-head attention (MMHA,
    its decode kernel for GQA before v0.8's XQA), one CTA per (query head, sequence), each
    loading its KV head's keys and values itself (HBM moves ``nbytes``, the L2 serves
    ``l2_bytes``, :func:`tpsim.layer.infer_graph.mmha_l2_bytes`) and converting and
    multiply-adding every element on its CUDA cores (``instructions``, by pipe,
    :func:`tpsim.cost.mmha.mmha_instructions`):

        t = kernel_launch + max(nbytes / (mem_bw mem_eff), t_l2, t_cores) + decode_fixed

    t_l2 and t_cores: :func:`tpsim.cost.mmha.mmha_s` (each 0 where the device lists no rate).
    """
    mem = elementwise_time(nbytes, device)
    rate = cuda_core_decode_Bps(device) if cuda_core_group else None
    if rate:
        mem = max(mem, device.kernel_launch_s + nbytes * cuda_core_group / (8 * rate))
    if l2_bytes or instructions:
        mem = max(mem, device.kernel_launch_s + mmha_s(l2_bytes, instructions, device))
    return mem + decode_fixed_s(device)


def listed_attention_kernel(device: Device, kernel: str | None = None):
    """The device's ``attention_kernels`` entry named ``kernel``, by default its
    ``attention_kernel`` (None where it lists none)."""
    return (device.attention_kernels or {}).get(kernel or device.attention_kernel or "")


def decode_fixed_s(device: Device) -> float:
    """``decode_fixed`` of :func:`decode_attention_time`: the device's default attention
    kernel's ``decode_fixed_us``, s (0 where it lists none)."""
    kernel = listed_attention_kernel(device)
    return kernel.decode_fixed_s if kernel else 0.0


def cuda_core_decode_Bps(device: Device) -> float | None:
    """R8 of :func:`decode_attention_time`: the device's default attention kernel's
    ``cuda_core_decode_GBps``, bytes/s (None where it lists none)."""
    kernel = listed_attention_kernel(device)
    return kernel.cuda_core_decode_Bps if kernel else None


def cast_transpose_time(nbytes: float, device: Device, kernels: int = 1) -> float:
    """Transformer Engine's fp8 cast-transpose kernel: reads a 16-bit tensor and writes its fp8
    copy and the copy's transpose (Hopper's fp8 GEMMs take only the TN layout, so the weight
    gradient's operand is stored transposed). A memory-bound kernel whose transposed write
    goes through shared memory tiles, at its own share of the bandwidth; ``kernels`` of them
    (with the per-tensor scales') back to back over the bytes (a grouped GEMM's experts, split
    by split), each with its launch:

        t = kernels * kernel_launch + nbytes / (mem_bw * cast_transpose_efficiency)

    ``cast_transpose_efficiency`` defaults to ``memory_efficiency`` (:func:`elementwise_time`);
    the H100 presets' value is fitted on Transformer Engine's published kernel timings (their
    YAML comment names them).
    """
    eff = device.cast_transpose_efficiency
    if eff is None:
        return elementwise_time(nbytes, device, kernels=kernels)
    return kernels * device.kernel_launch_s + nbytes / (device.memory_bandwidth_Bps * eff)


# the rate of an NVFP4 cast that rounds stochastically, as a share of one rounding to nearest:
# Transformer Engine PR #2412 ("Tuned NVFP4 cast kernel", B300, bf16 in, row-wise and
# column-wise out) measured 4.5 TB/s with stochastic rounding, 6.4 TB/s without
STOCHASTIC_ROUNDING_RATE = 4.5 / 6.4


def stochastic_cast_time(nbytes: float, device: Device, kernels: int = 1) -> float:
    """A block-scaled cast whose rounding is stochastic (NVFP4's gradients: a random number
    drawn per element), at STOCHASTIC_ROUNDING_RATE of a rounding-to-nearest cast's rate,
    ``kernels`` of them back to back (as :func:`cast_transpose_time`):

        t = kernels * kernel_launch
            + nbytes / (mem_bw * memory_efficiency * STOCHASTIC_ROUNDING_RATE)

    The rate is Transformer Engine's tuned NVFP4 cast kernel's (PR #2412: round to nearest
    6.4 TB/s, the B300's 8 TB/s x memory_efficiency 0.8 of :func:`elementwise_time`;
    stochastic 4.5 TB/s), taken for the gradients' Hadamard-fused cast (PR #2555), whose own
    rate is not published: it draws its random bits the same way (Philox, curanddx's
    philox4x32, and Blackwell's ``cvt.rs.satfinite.e2m1x4``;
    hadamard_transform/row_cast_col_hadamard_transform_cast_fusion.cu); the fast math
    Megatron-Bridge's NVFP4 recipes turn on (``NVTE_USE_FAST_MATH``: "up to ~10%" faster
    with stochastic rounding, the same pull request) is not taken.
    """
    if not nbytes:
        return 0.0
    rate = device.memory_bandwidth_Bps * device.memory_efficiency * STOCHASTIC_ROUNDING_RATE
    return kernels * device.kernel_launch_s + nbytes / rate


def attention_exec_flops(flops: float, causal: bool, backward: bool, seq_kv: int = 1,
                         causal_block: float = 0.0, full_flops: float | None = None) -> float:
    """FLOPs a fused (flash) attention kernel executes, from the op's model FLOPs.

    The model FLOPs (:class:`tpsim.layer.ops.Attention`) count the (query, key) pairs a causal model
    needs. A causal kernel also computes the masked half of each diagonal tile:
    x (1 + causal_block / seq_kv), and never more than every pair (``full_flops``: a sequence
    shorter than a tile computes its whole square). Its backward recomputes the scores: 2.5x
    the forward's work (Dao 2023), i.e. 1.25x the model's backward count (twice the forward).
    Sliding-window attention passes the window W as ``seq_kv`` (the keys a query sees): a
    band s W pairs wide has two masked edges of causal_block / 2 keys a query each, the
    s^2 / 2 triangle one, so both execute x (1 + causal_block / keys).
    """
    executed = flops
    if causal:
        executed = flops * (1 + causal_block / seq_kv)
        if full_flops is not None:
            executed = min(executed, full_flops)
    return executed * (FLASH_BACKWARD_FACTOR / 2 if backward else 1.0)


def attention_efficiency(seq_q: int, seq_kv: int, head_dim: int, device: Device,
                         backward: bool = False, kernel: str | None = None,
                         causal: bool = False) -> float:
    """Share of peak a fused attention kernel sustains.

    With an ``attention_kernels`` entry (``kernel``, default ``device.attention_kernel``):
    eff = efficiency[head_dim] * seq_kv / (seq_kv + seq_half_efficiency), times
    causal_efficiency when causal (the backward's own where listed: see
    :class:`tpsim.cluster.topology.AttentionKernel`); without one,
    the GEMM efficiency of its per-head (seq_q x head_dim) @ (head_dim x seq_kv) products.
    """
    kernels = device.attention_kernels
    if not kernels:
        return gemm_efficiency(seq_q, seq_kv, head_dim, device)
    k = kernels[kernel or device.attention_kernel]
    eff = k.at(head_dim, backward) * seq_kv / (seq_kv + k.seq_half_efficiency)
    return eff * k.causal(backward)[0] if causal else eff


def attention_time(exec_flops: float, nbytes: float, seq_q: int, seq_kv: int, head_dim: int,
                   device: Device, dtype: str, backward: bool = False,
                   kernel: str | None = None, causal: bool = False,
                   serial_s: float = 0.0) -> float:
    """A fused (flash) attention kernel on a roofline:

    t = kernel_launch + max((exec_flops / (peak[dtype] * eff) + serial_s) / clock(eff),
                            nbytes / (mem_bw * mem_eff)),  eff = attention_efficiency(...)

    clock: :func:`tpsim.cluster.sustained.kernel_clock` (1 but on a training step's device);
    ``serial_s``: CUDA-core work at the boost clock the kernel's warps do between their
    matmuls, beyond what its efficiency holds (attention dropout:
    :func:`tpsim.cost.attention_dropout.dropout_attention_time`).

    ``exec_flops``: :func:`attention_exec_flops`; ``nbytes``: q, k, v, o (and gradients) once
    (:class:`tpsim.layer.ops.Attention`): decoding against a long KV cache is bound by the second term.
    """
    eff = attention_efficiency(seq_q, seq_kv, head_dim, device, backward, kernel, causal)
    clock = kernel_clock(device, eff, dtype)
    compute = exec_flops / (device.peak(dtype) * eff * clock) + serial_s / clock
    return device.kernel_launch_s + max(compute, _memory_s(nbytes, device))
