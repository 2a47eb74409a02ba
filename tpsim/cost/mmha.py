"""TensorRT-LLM's masked multi-head attention (MMHA) decode kernel on the CUDA cores.

Before XQA (v0.8), TensorRT-LLM decodes one token per sequence with MMHA
(``cpp/tensorrt_llm/kernels/decoderMaskedMultiheadAttention/
decoderMaskedMultiheadAttentionTemplate.h`` and ``decoderMaskedMultiheadAttentionUtils.h``,
NVIDIA/TensorRT-LLM, read at a later revision, commit 02519b0c; the v0.5.0 and v0.6.1 tags
were not read, so their loops are assumed the same, as
inherited from FasterTransformer's kernel: grid (heads, batch), 256 threads a CTA, 16-byte
vectors, fp32 accumulators; the one difference counted is below). No tensor core: every
query head's CTA converts and multiply-adds every key and value element of its KV head on
the CUDA cores, so its work grows with the query heads, its HBM bytes with the KV heads. What one
cached token costs one query head's CTA, in thread instructions (head dim Dh, 16-bit compute
type T, ``MMHA_USE_FP32_ACCUM_FOR_FMA`` and ``..._FOR_OUT``: fp32 accumulators):

* K (``qk_dot_``): THREADS_PER_KEY tk = min(32, Dh x 2 B / 16 B) threads a key (16 at
  Dh = 128), each a 16-byte vector of Dh / tk elements (8 bytes of an fp8 cache): per element
  c conversions to fp32 (q's, loop-invariant, hoisted) and one FFMA; per thread and key the
  sum of its Dh / tk products (Dh / tk - 1 FADD), the reduction across the tk threads
  (log2 tk ``__shfl_xor_sync`` and FADD), the key's epilogue (the 1 / sqrt(Dh) FMUL, the ALiBi
  term ``linear_bias_slope * (t - tlength) + bias``: IADD, I2F, FFMA, FADD; the is_active
  compare; FMNMX and STS of the leader, predicated: 8) and the vector's load (IMNMX of the
  time index, the cache offset's IMAD and IADD, LDG: 4);
* softmax: per token, exp (FADD, FMUL, MUFU), the sum's FADD, the normalisation (FMUL, the
  conversion to T) and the shared-memory traffic (2 LDS, 2 STS): 10, in one thread;
* V (``Logit_value_fma``): THREADS_PER_VALUE tv = Dh x 2 / 16 threads a value row, each
  V_VEC = 8 elements into fp32 accumulators: per element c conversions and one FFMA; per
  thread and token the logit's LDS and conversion, the mask's compare and select, the load's
  IMNMX, IMAD and LDG (7).

c per element (``vec_conversion``, ``fma(uint4, fp8_8_t, Float8_)``): a 16-bit cache 1 (half
or bf16 to fp32); fp32 none; an 8-bit one 2.5: one ``cvt.rn.f16x2.e4m3x2`` a pair
(``float2(fp8_2_t)``, cuda_fp8.hpp on sm_89+: 0.5 an element), two half-to-fp32 conversions
a pair (1) and the dequantizing scale's FMUL (1): ``qk_scale_dot_``'s ``mul(k_scale, k)``
and ``Logit_value_fma``'s ``mul(v_scale, v)``, the path the revision read keeps for int8 and
for fp8 without ``MMHA_FP8_SCALE_Q_INSTEAD_OF_K`` / ``..._P_INSTEAD_OF_V``, flags it added
later "to reduce number of instructions for dequantizing KV cache" (assumed absent from
v0.5/v0.6). An earlier revision (03cff08f, ``cpp/tensorrt_llm/kernels/
decoderMaskedMultiheadAttentionUtils.h``) scales in T instead (``kv_cache_scale_type_t<half,
__nv_fp8_e4m3>`` is ``uint16_t``: one HMUL2 a pair, c = 2); which v0.5.0 ships is not
established, and the fp32 FMUL is counted. So a token costs

    N(Dh, c) = 2 Dh (c + 1) + tk (Dh / tk - 1 + 2 log2 tk + KEY_EPILOGUE + LOAD)
               + tv VALUE_OVERHEAD + SOFTMAX

(Dh = 128: 1,066 for a 16-bit cache, 1,450 for fp8: 4.2 and 5.7 an element of K and V), and
a call b heads L N.

Pipes. Each instruction issues to one pipe of its SM sub-partition (Nsight Compute Kernel
Profiling Guide, "Pipelines"): ``fma`` (FFMA, FADD, FMUL, IMAD), ``fp16`` (HADD2, HFMA2 and,
on Volta, Turing and GA100, "a fast FP32-to-FP16 and FP16-to-FP32 converter"; "starting with
GA10x chips, this functionality is part of the FMA pipeline"), ``alu`` (integer add, compare,
min/max, select, logic, and on Ampere the fast FP32-to-FP16 conversion), ``xu`` (MUFU and
"int-to-float, and float-to-int type conversions") and ``lsu`` (LDG, LDS, STS and shuffles).
The kernel's ``half_to_float`` is ``cvt.f32.f16``, which ptxas emits as ``HADD2.F32 Rd, -RZ,
Rs.H0_H0`` on sm_80 and sm_90 (public SASS listings), the fp16 pipe's converter, not the
XU's F2F: it is not one of the CUDA C++ Programming Guide's "all other type conversions" at
16 a clock an SM. Each counted instruction's pipe (:data:`PIPES_OF`): the FFMA, the K sum's
and the reduction's FADD, the epilogue's FMUL, FFMA and FADD, the addresses' IMAD, the
softmax's arithmetic and the fp8 scale's FMUL on ``fma``; the half-to-fp32 conversions on
``fp16``; IADD, IMNMX, compares, selects, FMNMX and the softmax's fp32-to-T conversion on
``alu``; MUFU, the ALiBi I2F and the fp8 pair's ``cvt.rn.f16x2.e4m3x2`` (F2FP, its pipe
unpublished: put at the conversion unit's 16 a clock, the slowest reading, which binds no
case here) on ``xu``; loads, stores and ``__shfl_xor_sync`` on ``lsu``.

Each pipe's rate, thread instructions a clock an SM (the device's ``cuda_core_pipes``; CUDA
C++ Programming Guide, "Throughput of Native Arithmetic Instructions", compute capability 8.0
and 9.0): ``fma`` the 32-bit floating-point add/multiply/multiply-add row (A100 64, H100
128); ``fp16`` the 16-bit row's 256 results = 128 HFMA2 (A100: its own pipe, NVIDIA's
forum answer "On GA100 (SM8.0) Shared pipe handles Tensor, FP16, and FP64"; H100: no entry,
"FP16x2 operations are dual-issued to both FMAheavy and FMAlite pipe", so they share the
``fma`` rate); ``alu`` the 32-bit integer add/compare/min/max rows (64); ``xu`` the
"all other type conversions" and 32-bit reciprocal/exp2 rows (16); ``lsu`` the warp
shuffle row (32; loads and stores assumed at that MIO rate); and ``issue``, the issue
slots: 4 schedulers x 1 warp instruction a clock = 128 on both (A100 and H100
whitepapers). The pipes run concurrently (an A100 scheduler alternates FFMA, 2 clocks a warp
on 16 lanes, with other pipes: NVIDIA's forum answer on GV100's dispatch), so

    t_cores = max over p of  b heads L N_p / (rate_p SMs f),    N_issue = sum of N_p

SMs f = peak_fp32 / (2 rate_fma): the device's ``peak_tflops.fp32`` (H100 SXM 66.9, A100
19.5 TFLOP/s: 132 x 128 x 2 x 1.98 GHz and 108 x 64 x 2 x 1.41 GHz, the whitepapers). At Dh
= 128 the issue slots bind on both: A100 fp16 8.33 clocks a token an SM against ``fma``'s
8.06; H100 fp8 11.3 against ``xu``'s 9.1 and ``fma``'s 8.2. A device with no
``cuda_core_pipes`` prices every instruction at peak_fp32 / 2 (one FP32 lane's slot).

Beside the L2's share (:func:`mmha_s`): t_l2 = l2_bytes / l2_bw. l2_bytes: each CTA loads its
KV head's keys and values itself, so a KV byte is requested once per query head
(:func:`tpsim.layer.infer_graph.mmha_l2_bytes`); the g CTAs of a group are adjacent
(blockIdx.x = head) and launched together, so the first miss brings a line from HBM and the
others hit it in the L2, at the device's ``l2_bandwidth_GBps`` (a measured read rate).

Assumed: the kernel's occupancy (4 CTAs an SM by its launch bounds for an fp8 cache at Dh =
128, shared memory 4-6 B a token) hides the latency; the last wave's quantization is not
priced. Not fitted: bench/trtllm_mmha_published.py compares the cores term with what
TensorRT-LLM v0.5.0's own tables imply (docs/serving.md).
"""
from __future__ import annotations

import math

from ..cluster.topology import CUDA_CORE_PIPES, Device

VECTOR_BYTES = 16       # a thread's K and V loads, in the 16-bit compute type (LDG.128)
COMPUTE_BYTES = 2       # T: fp16 or bf16 (the kernel's math runs in fp32 from it)
WARP = 32
PIPES = CUDA_CORE_PIPES[1:]    # fma, fp16, alu, xu, lsu (issue: their sum)
# Each counted group's instructions by pipe (module docstring); their sums are the counts.
PIPES_OF = {
    "key_epilogue": {"fma": 3, "alu": 3, "xu": 1, "lsu": 1},  # FMUL FFMA FADD; IADD ISETP FMNMX; I2F; STS
    "load": {"fma": 1, "alu": 2, "lsu": 1},                  # IMAD; IMNMX IADD; LDG
    "value_overhead": {"fma": 1, "fp16": 1, "alu": 3, "lsu": 2},  # IMAD; logit cvt; ISETP SEL IMNMX; LDS LDG
    "softmax": {"fma": 4, "alu": 1, "xu": 1, "lsu": 4},     # FADD FMUL FADD FMUL; F2FP; MUFU; 2 LDS 2 STS
}
KEY_EPILOGUE, LOAD, VALUE_OVERHEAD, SOFTMAX = (sum(PIPES_OF[k].values()) for k in (
    "key_epilogue", "load", "value_overhead", "softmax"))   # 8, 4, 7, 10
# c, an element's conversions to fp32, by pipe: a 16-bit cache's HADD2.F32; an 8-bit one's
# half F2FP (cvt.rn.f16x2.e4m3x2 a pair), HADD2.F32 and the scale's FMUL.
CONVERSION_PIPES = {1: {"xu": 0.5, "fp16": 1.0, "fma": 1.0}, 2: {"fp16": 1.0}}


def _geometry(head_dim: int) -> tuple[int, int, int]:
    """(padded Dh, tk threads a key, tv threads a value row) of the kernel's launch."""
    dh_max = max(WARP, 1 << (head_dim - 1).bit_length())
    tk = min(WARP, dh_max * COMPUTE_BYTES // VECTOR_BYTES)
    return dh_max, tk, dh_max * COMPUTE_BYTES // VECTOR_BYTES


def token_pipes(head_dim: int, kv_bytes: int) -> dict[str, float]:
    """N_p(Dh, c): one query head's CTA's thread instructions a cached token, by pipe."""
    dh_max, tk, tv = _geometry(head_dim)
    steps = math.log2(tk)
    n = dict.fromkeys(PIPES, 0.0)
    n["fma"] += 2 * head_dim + tk * (dh_max // tk - 1 + steps)   # FFMA; K sums and reduction FADD
    n["lsu"] += tk * steps                                        # the reduction's shuffles
    for pipe, k in CONVERSION_PIPES.get(kv_bytes, {}).items():
        n[pipe] += 2 * head_dim * k
    for group, times in (("key_epilogue", tk), ("load", tk), ("value_overhead", tv),
                         ("softmax", 1)):
        for pipe, k in PIPES_OF[group].items():
            n[pipe] += times * k
    return n


def token_instructions(head_dim: int, kv_bytes: int) -> float:
    """N(Dh, c): the thread instructions one query head's CTA spends on one cached token."""
    return sum(token_pipes(head_dim, kv_bytes).values())


def mmha_instructions(batch: int, heads: int, attended: int, head_dim: int,
                      kv_bytes: int) -> tuple[float, ...]:
    """A call's thread instructions by pipe, in :data:`PIPES` order: b heads L N_p."""
    calls = batch * heads * attended
    return tuple(calls * n for n in token_pipes(head_dim, kv_bytes).values())


def cuda_core_rate(device: Device) -> float | None:
    """Thread instructions a second on the FP32 lanes: peak_tflops.fp32 / 2 (an FFMA is two
    FLOPs); None where the device lists no fp32 peak."""
    fp32 = (device.peak_flops or {}).get("fp32")
    return fp32 / 2 if fp32 else None


def pipe_rates(device: Device) -> dict[str, float] | None:
    """Each pipe's thread instructions a second, and ``issue``'s: rate_p SMs f, SMs f =
    peak_fp32 / (2 rate_fma) (module docstring); a pipe the device does not list (H100's
    fp16) shares ``fma``; None where it lists no ``cuda_core_pipes`` or no fp32 peak."""
    lanes, pipes = cuda_core_rate(device), device.cuda_core_pipes
    if not lanes or not pipes:
        return None
    return {p: lanes / pipes["fma"] * r for p, r in pipes.items()}


def cuda_core_s(instructions: tuple[float, ...], device: Device) -> float:
    """t_cores (module docstring): the slowest pipe's or the issue slots' time; where the
    device lists no ``cuda_core_pipes``, all of them at cuda_core_rate (0 with no fp32 peak)."""
    total = sum(instructions)
    rates, lanes = pipe_rates(device), cuda_core_rate(device)
    if not total or not lanes:
        return 0.0
    if rates is None:
        return total / lanes
    counts = dict(zip(PIPES, instructions))
    for pipe in [p for p in PIPES if p not in rates]:    # unlisted: on the fma pipe
        counts["fma"] += counts.pop(pipe)
    return max(total / rates["issue"], *(n / rates[p] for p, n in counts.items()))


def mmha_s(l2_bytes: float, instructions: tuple[float, ...], device: Device) -> float:
    """max(t_l2, t_cores) (module docstring), s; a term whose rate the device does not list
    is 0."""
    l2 = l2_bytes / device.l2_bandwidth_Bps if l2_bytes and device.l2_bandwidth_Bps else 0.0
    return max(l2, cuda_core_s(instructions, device))
