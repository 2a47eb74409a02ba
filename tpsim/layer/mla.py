"""Multi-head latent attention (DeepSeek-V2/V3) in a training layer: forward and backward, as
Megatron-core's MLASelfAttention (``megatron/core/transformer/multi_latent_attention.py``)
splits it over the TP group.

Widths per rank: H_r = heads / tp heads; r_q, r_kv the query and key/value ranks; d_n, d_r,
d_v the no-position, rotary and value head widths (:class:`~tpsim.layer.dims.Dims`). The down
projections are duplicated (whole on every rank, TELinear ``parallel_mode="duplicated"``) and
run on the rank's own Tn tokens; with sequence parallelism their compressed outputs, not the
(T x h) input, are all-gathered before the column-parallel up projections::

    q_down    GEMM Tn x r_q x h            q_norm  Tn x r_q     [SP: all-gather T x r_q]
    q_up      GEMM T x H_r (d_n + d_r) x r_q                    (no r_q: column-parallel q_proj
                                                                  T x H_r (d_n + d_r) x h)
    kv_down   GEMM Tn x (r_kv + d_r) x h   kv_norm Tn x r_kv    [SP: all-gather T x (r_kv + d_r)]
    kv_up     GEMM T x H_r (d_n + d_v) x r_kv
    attention causal flash attention, query/key head width d_n + d_r, value width d_v: the
              FLOPs 2 b H_r P (d_qk + d_v) and bytes of :class:`~tpsim.layer.ops.Attention` with
              one head width (d_n + d_r + d_v) / 2 and H_r key/value heads
    proj      row-parallel T x h x H_r d_v, all-reduce (SP: reduce-scatter)

Backward mirrors it: the output projection's backward, the attention's, then each up
projection's dgrad, the all-reduce (SP: reduce-scatter) of its input gradient (T x r_q,
T x (r_kv + d_r): every rank's heads add to the shared latent's gradient) and its wgrad, the
norms', the down projections' dgrad and wgrad, and the sum of the two branches' input
gradients. The up projections keep their gathered inputs for the weight gradients (no
re-gather). Under SP the duplicated down projections' and norms' weight gradients are partial
sums over the rank's tokens, all-reduced with the other replicated weights'
(:meth:`~tpsim.spec.model.ModelConfig.sp_sync_params`). Fused attention only; RoPE is folded
into the kernels, unless ``B.mla_eager`` (NeMo AutoModel's eager rope and concatenations,
:mod:`tpsim.layer.mla_eager`).
"""
from __future__ import annotations

from . import mla_eager
from .linears import (column_linear_fwd, column_parallel_bwd, fp8_cast, input_saved,
                      linear_backward, norm_cast, row_linear_fwd, row_parallel_bwd)
from .ops import Attention
from .template import Builder


def mla_attention(kernel: str | None, backward: bool):
    """The fused causal core over the micro-batch: H_r heads of width (d_n + d_r + d_v) / 2."""
    return lambda d: Attention(d.b, d.heads, d.heads, d.s, d.s, (d.dn + d.dr + d.dv) / 2,
                               d.dtype, True, backward, kernel)


def _rows(width):
    """The (T x width) tensor a compressed projection's collective carries."""
    return lambda d: (d.T * width(d) * d.bpe, (d.T, width(d)), d.dtype)


def _latent(B: Builder, name: str, x, width, normed, saved=None) -> str:
    """A duplicated down projection (Tn x width x h; ``saved``: it keeps the shared input),
    its norm over ``normed`` columns, and under SP the all-gather of the result (T x width).
    Under FP8 each down projection (a TELinear of its own: Megatron-core builds
    ``linear_q_down_proj`` and ``linear_kv_down_proj`` apart) casts the 16-bit input first
    (:func:`~tpsim.layer.linears.fp8_cast`), and the up projection's fused norm
    (LayerNormColumnParallelLinear) writes its output quantized or casts it apart
    (:func:`~tpsim.layer.linears.norm_cast`)."""
    x = fp8_cast(B, f"fwd.{name}_down.cast", lambda d: (d.Tn, d.h), x)
    y = B.gemm(f"fwd.{name}_down", lambda d: (d.Tn, width(d), d.h), (x,), saved=saved,
               linear=True)
    y = B.eltwise(f"fwd.{name}_norm", lambda d: (d.Tn, normed(d), 2 * d.Tn * normed(d) * d.bpe),
                  (y,), saved=lambda d: d.Tn * normed(d) * d.bpe)
    y = norm_cast(B, f"{name}_up", y, lambda d: (d.T, 0, normed(d)))
    if B.sp:
        y = B.collective(f"fwd.{name}_down.all-gather", "all-gather", (y,), size=_rows(width))
    return y


def mla_fwd(B: Builder, x, q_lora: bool, kernel: str | None) -> str:
    """From the norm's output ``x`` (Tn x h) to the output projection's reduction."""
    q_head = lambda d: d.heads * (d.dn + d.dr)     # noqa: E731
    if q_lora:
        q = _latent(B, "q", x, lambda d: d.r_q, lambda d: d.r_q)
        q = B.gemm("fwd.q_up", lambda d: (d.T, q_head(d), d.r_q), (q,),
                   saved=lambda d: d.T * d.r_q * d.bpe, linear=True)
    else:
        q = column_linear_fwd(B, "q_proj", x, lambda d: (d.T, q_head(d), d.h), input_saved)
    q = mla_eager.query_fwd(B, q) if B.mla_eager else q
    kv = _latent(B, "kv", x, lambda d: d.r_kv + d.dr, lambda d: d.r_kv,
                 saved=lambda d: d.Tn * d.h * d.bpe)
    kv = B.gemm("fwd.kv_up", lambda d: (d.T, d.heads * (d.dn + d.dv), d.r_kv), (kv,),
                saved=lambda d: d.T * (d.r_kv + d.dr) * d.bpe, linear=True)
    kv = mla_eager.key_fwd(B, kv) if B.mla_eager else kv
    o = B.add("fwd.attn", mla_attention(kernel, False), "compute", (q, kv),
              saved=lambda d: d.T * d.heads * (2 * (d.dn + d.dr) + d.dv) * d.bpe)
    return row_linear_fwd(B, "proj", o, lambda d: (d.T, d.h, d.heads * d.dv),
                          lambda d: d.T * d.heads * d.dv * d.bpe)


def _latent_bwd(B: Builder, name: str, up, grad, width, normed) -> str:
    """Backward of an up projection (``up(d)`` -> its forward (m, n, k)), the reduction of
    its input gradient over TP, the norm's and the down projection's backward."""
    op = "reduce-scatter" if B.sp else "all-reduce"

    def reduce(dgrad):
        return B.collective(f"bwd.{name}_up.{op}", op, (dgrad,), size=_rows(width))
    x, _ = linear_backward(B, f"{name}_up", up, (grad,), between=reduce)
    x = B.eltwise(f"bwd.{name}_norm", lambda d: (d.Tn, normed(d), 3 * d.Tn * normed(d) * d.bpe),
                  (x,), forward_of=f"fwd.{name}_norm")
    x, _ = linear_backward(B, f"{name}_down", lambda d: (d.Tn, width(d), d.h), (x,))
    return x


def mla_bwd(B: Builder, grad, q_lora: bool, kernel: str | None) -> str:
    """From the gradient of the block's output to that of the norm's output (Tn x h)."""
    dgrad, _ = row_parallel_bwd(B, "proj", lambda d: (d.T, d.h, d.heads * d.dv), grad, False)
    core = B.add("bwd.attn", mla_attention(kernel, True), "compute", (dgrad,),
                 forward_of="fwd.attn")
    kgrad, qgrad = (mla_eager.key_bwd(B, core), mla_eager.query_bwd(B, core)) if B.mla_eager \
        else (core, core)
    kv = _latent_bwd(B, "kv", lambda d: (d.T, d.heads * (d.dn + d.dv), d.r_kv), kgrad,
                     lambda d: d.r_kv + d.dr, lambda d: d.r_kv)
    if q_lora:
        q = _latent_bwd(B, "q", lambda d: (d.T, d.heads * (d.dn + d.dr), d.r_q), qgrad,
                        lambda d: d.r_q, lambda d: d.r_q)
    else:
        q, _ = column_parallel_bwd(B, "q_proj", lambda d: (d.T, d.heads * (d.dn + d.dr), d.h),
                                   (qgrad,), False)
    return B.eltwise("bwd.mla.add", lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe), (q, kv),
                     forward_of="fwd.attn")


__all__ = ["mla_fwd", "mla_bwd", "mla_attention"]
