"""Multi-head latent attention (DeepSeek-V2/V3) in a serving layer, forward only.

Widths: H heads (H_r = H / tp per rank), h hidden, r_q and r_kv the query and key/value
compression ranks, d_n, d_r, d_v the no-position, rotary and value head widths (DeepSeek-V3
report, section 2.1.1). The TP split is Megatron-core's MLASelfAttention
(``megatron/core/transformer/multi_latent_attention.py``): the down projections
``linear_q_down_proj`` and ``linear_kv_down_proj`` are duplicated (whole on every rank,
TELinear ``parallel_mode="duplicated"``), the up projections column-parallel
(``gather_output=False``), ``linear_proj`` row-parallel, then the all-reduce. Per rank, over T
tokens::

    q_down     GEMM T x r_q x h               (no r_q: q_proj T x H_r (d_n + d_r) x h, split)
    q_norm     memory-bound, T x r_q
    q_up       GEMM T x H_r (d_n + d_r) x r_q
    kv_down    GEMM T x (r_kv + d_r) x h      the compressed latent and the shared rotary key
    kv_norm    memory-bound, T x r_kv
    cache      write the T (r_kv + d_r) latents into the cache (its dtype)

**Prefill** (vLLM and SGLang run MLA's prompt pass un-absorbed): ``kv_up`` GEMM T x H_r
(d_n + d_v) x r_kv decompresses keys and values, then causal flash attention with query/key
head width d_qk = d_n + d_r (192) and value width d_v (128). Its FLOPs, 2 b H_r P (d_qk + d_v),
and bytes, b (2 s H_r (d_qk + d_v)) bpe, are those of :class:`~tpsim.layer.ops.Attention` with
one head width d = (d_qk + d_v) / 2 (160) and as many key/value heads as query heads.

**Decode** (absorbed, as FlashMLA, vLLM's and SGLang's MLA backends run it): W_UK is folded into
the query and W_UV into the output, so attention runs on the latent cache as multi-query
attention with one shared head of width r_kv + d_r (576) for keys and r_kv (512) for values::

    q_absorb   batched GEMM, H_r groups of b x r_kv x d_n      (q_nope W_UK, per head)
    attention  memory-bound: read q (H_r (r_kv + d_r)), write o (H_r r_kv), read the cache
               L (r_kv + d_r) bpe_kv per sequence: bytes = b (H_r (2 r_kv + d_r) bpe
               + L (r_kv + d_r) bpe_kv); FLOPs 2 b H_r L (2 r_kv + d_r)
    o_absorb   batched GEMM, H_r groups of b x d_v x r_kv      (o_latent W_UV, per head)

Every rank caches the whole latent (it is shared by all heads, so TP does not split it):
r_kv + d_r elements per token per layer (:func:`mla_cache_width`). The decode attention's
FLOP per byte, about 2 H_r (the latent is read once for every head), reaches a GPU's ridge
point only at H_r of about 150 (H100, bf16): priced by its bytes, as the GQA decode. RoPE and the
softmax scale are folded into the kernels (not separate ops).
"""
from __future__ import annotations

from .linears import row_linear_fwd
from .ops import Attention, MemoryBound
from .template import Builder


def mla_cache_width(m) -> int:
    """Elements one token caches per layer under MLA: kv_lora_rank + qk_rope_head_dim."""
    return m.kv_lora_rank + m.qk_rope_head_dim


def _queries(B: Builder, x, q_lora: bool) -> str:
    def q_direct(d):
        return d.T, d.heads * (d.dn + d.dr), d.h
    if not q_lora:
        return B.gemm("fwd.q_proj", q_direct, (x,), linear=True)
    q = B.gemm("fwd.q_down", lambda d: (d.T, d.r_q, d.h), (x,), linear=True)
    q = B.eltwise("fwd.q_norm", lambda d: (d.T, d.r_q, 2 * d.T * d.r_q * d.bpe), (q,))
    return B.gemm("fwd.q_up", lambda d: (d.T, d.heads * (d.dn + d.dr), d.r_q), (q,), linear=True)


def mla_prefill_attention(d) -> Attention:
    """The causal core over the prompt: H_r heads of width (d_n + d_r + d_v) / 2."""
    return Attention(d.b, d.heads, d.heads, d.s, d.s, (d.dn + d.dr + d.dv) / 2, d.act_dtype,
                     True, False)


def mla_decode_core(d) -> Attention:
    """The absorbed decode core as an attention (FLOPs only): one query against kv_len
    latents, head width (2 r_kv + d_r) / 2, so 4 b H_r L d = 2 b H_r L (2 r_kv + d_r)."""
    return Attention(d.b, d.heads, 1, 1, d.kv_len, (2 * d.r_kv + d.dr) / 2, d.act_dtype, False,
                     False)


def mla_decode_bytes(d) -> float:
    """b (s H_r (2 r_kv + d_r) bpe + L (r_kv + d_r) bpe_kv) (module docstring; s queries per
    sequence, 1 but in a speculative verification, share one read of the cache)."""
    return d.b * (d.s * d.heads * (2 * d.r_kv + d.dr) * d.bpe
                  + d.kv_len * (d.r_kv + d.dr) * d.kv_bpe)


def _decode_core(d) -> MemoryBound:
    return MemoryBound(mla_decode_bytes(d), (d.b, d.heads, d.kv_len, d.r_kv + d.dr))


def mla_attention_fwd(B: Builder, x, phase: str, q_lora: bool) -> str:
    """The MLA block from the norm's output ``x`` to the row-parallel output projection's
    all-reduce (module docstring); ``q_lora``: the model compresses queries (r_q set)."""
    q = _queries(B, x, q_lora)
    kv = B.gemm("fwd.kv_down", lambda d: (d.T, d.r_kv + d.dr, d.h), (x,), linear=True)
    kv = B.eltwise("fwd.kv_norm", lambda d: (d.T, d.r_kv, 2 * d.T * d.r_kv * d.bpe), (kv,))
    B.eltwise("fwd.kv_cache_write", lambda d: (d.T, d.r_kv + d.dr,
                                               d.T * (d.r_kv + d.dr) * (d.bpe + d.kv_bpe)), (kv,))
    if phase == "prefill":
        kv = B.gemm("fwd.kv_up", lambda d: (d.T, d.heads * (d.dn + d.dv), d.r_kv), (kv,),
                    linear=True)
        o = B.add("fwd.attn", mla_prefill_attention, "compute", (q, kv))
    else:
        q = B.gemm("fwd.q_absorb", lambda d: (d.T, d.r_kv, d.dn, d.heads), (q,), linear=True)
        o = B.add("fwd.attn", _decode_core, "compute", (q, kv))
        o = B.gemm("fwd.o_absorb", lambda d: (d.T, d.dv, d.r_kv, d.heads), (o,), linear=True)
    return row_linear_fwd(B, "proj", o, lambda d: (d.T, d.h, d.heads * d.dv), None)


__all__ = ["mla_attention_fwd", "mla_cache_width", "mla_prefill_attention", "mla_decode_core",
           "mla_decode_bytes"]
