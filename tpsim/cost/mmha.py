"""TensorRT-LLM's masked multi-head attention (MMHA) decode kernel on the CUDA cores.

Before XQA (v0.8), TensorRT-LLM decodes one token per sequence with MMHA
(``cpp/tensorrt_llm/kernels/decoderMaskedMultiheadAttention/
decoderMaskedMultiheadAttentionTemplate.h`` and ``decoderMaskedMultiheadAttentionUtils.h``,
NVIDIA/TensorRT-LLM: the index here holds one later revision, commit 02519b0c, read for this;
the v0.5.0 and v0.6.1 tags could not be fetched, so their loops are assumed the same, as
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
v0.5/v0.6). So a token costs

    N(Dh, c) = 2 Dh (c + 1) + tk (Dh / tk - 1 + 2 log2 tk + KEY_EPILOGUE + LOAD)
               + tv VALUE_OVERHEAD + SOFTMAX

(Dh = 128: 1,066 for a 16-bit cache, 1,450 for fp8: 4.2 and 5.7 an element of K and V), and
a call b heads L N. Priced at one thread instruction a lane a clock on the FP32 lanes, beside
the L2's share (:func:`mmha_s`):

    t_cores = b heads L N / (peak_fp32 / 2),    t_l2 = l2_bytes / l2_bw

peak_fp32: the device's ``peak_tflops.fp32``, SMs x FP32 lanes x 2 FLOPs x boost clock (H100
SXM 132 x 128 x 2 x 1.98 GHz = 66.9 TFLOP/s, A100 108 x 64 x 2 x 1.41 GHz = 19.5; the NVIDIA
H100 and A100 whitepapers). l2_bytes: each CTA loads its KV head's keys and values itself, so
a KV byte is requested once per query head (:func:`tpsim.layer.infer_graph.mmha_l2_bytes`);
the g CTAs of a group are adjacent (blockIdx.x = head) and launched together, so the first
miss brings a line from HBM and the others hit it in the L2, at the device's
``l2_bandwidth_GBps`` (a measured read rate).

Assumed: every instruction, integer, shuffle and conversion included, takes one FP32 lane's
slot (Hopper issues one warp instruction a clock a scheduler, 128 threads a clock an SM, its
FP32 rate; Ampere issues as many but has 64 FP32 lanes, so there integer work could run
beside the FMAs and this over-counts); the half-to-fp32 conversions issue as ``HADD2.F32``
and the fp8 pair's as one instruction at that rate (were they at the CUDA C++ Programming
Guide's "all other type conversions" rate, 16 a clock an SM, N would be ~3x on H100 FP8 and
~1.7x on A100 FP16: unverified, not priced); the kernel's occupancy (4 CTAs an SM by its
launch bounds for an fp8 cache at Dh = 128, shared memory 4-6 B a token) hides the latency;
the last wave's quantization is not priced. Not fitted: bench/trtllm_mmha_published.py
compares N with what TensorRT-LLM v0.5.0's own tables imply (docs/serving.md).
"""
from __future__ import annotations

import math

from ..cluster.topology import Device

VECTOR_BYTES = 16       # a thread's K and V loads, in the 16-bit compute type (LDG.128)
COMPUTE_BYTES = 2       # T: fp16 or bf16 (the kernel's math runs in fp32 from it)
KEY_EPILOGUE = 8        # a thread's instructions a key after its dot product (docstring)
LOAD = 4                # a thread's instructions to address and load one K vector
VALUE_OVERHEAD = 7      # a thread's instructions a value row beyond its elements' FMAs
SOFTMAX = 10            # instructions a token in the softmax (exp, sum, normalise)
WARP = 32


def conversions_per_element(kv_bytes: int) -> float:
    """c: the instructions that bring one cached element to fp32 (module docstring): an 8-bit
    cache 2.5 (a pair to f16x2, each to fp32, the scale), a 16-bit one 1, fp32 none."""
    return {1: 2.5, 2: 1.0}.get(kv_bytes, 0.0)


def token_instructions(head_dim: int, kv_bytes: int) -> float:
    """N(Dh, c): the thread instructions one query head's CTA spends on one cached token."""
    dh_max = max(WARP, 1 << (head_dim - 1).bit_length())
    tk = min(WARP, dh_max * COMPUTE_BYTES // VECTOR_BYTES)
    tv = dh_max * COMPUTE_BYTES // VECTOR_BYTES
    c = conversions_per_element(kv_bytes)
    per_key = dh_max // tk - 1 + 2 * math.log2(tk) + KEY_EPILOGUE + LOAD
    return 2 * head_dim * (c + 1) + tk * per_key + tv * VALUE_OVERHEAD + SOFTMAX


def mmha_instructions(batch: int, heads: int, attended: int, head_dim: int,
                      kv_bytes: int) -> float:
    """A call's thread instructions: b heads L N(Dh, c) (module docstring)."""
    return batch * heads * attended * token_instructions(head_dim, kv_bytes)


def cuda_core_rate(device: Device) -> float | None:
    """Thread instructions a second on the FP32 lanes: peak_tflops.fp32 / 2 (an FFMA is two
    FLOPs); None where the device lists no fp32 peak."""
    fp32 = (device.peak_flops or {}).get("fp32")
    return fp32 / 2 if fp32 else None


def cuda_core_s(instructions: float, device: Device) -> float:
    """t_cores = instructions / cuda_core_rate (0 where the device lists no fp32 peak)."""
    rate = cuda_core_rate(device)
    return instructions / rate if instructions and rate else 0.0


def mmha_s(l2_bytes: float, instructions: float, device: Device) -> float:
    """max(t_l2, t_cores) (module docstring), s; a term whose rate the device does not list
    is 0."""
    l2 = l2_bytes / device.l2_bandwidth_Bps if l2_bytes and device.l2_bandwidth_Bps else 0.0
    return max(l2, cuda_core_s(instructions, device))
