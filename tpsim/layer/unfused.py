"""Megatron-LM's unfused attention core, forward and backward, with its layout copies.

The code is Megatron-core's ``DotProductAttention.forward``
(megatron/core/transformer/dot_product_attention.py) fed by ``SelfAttention``'s
``get_query_key_value_tensors`` (megatron/core/transformer/attention.py), and the kernels
autograd runs for its backward. Per rank, with T = s b tokens, q = heads d and kv = kv_heads d
the query and key/value widths, B the activations' bytes per element, g = heads / kv_heads:

forward
* the fused QKV output (T, kv_heads (g + 2) d) is viewed as (s, b, kv_heads, (g + 2) d) and
  split into views; ``query.reshape(s, b, heads, d)`` then ``query.reshape(s, b heads, d)``
  are views for g = 1, and for one kv head with b = 1; otherwise one of them copies (T, q)
  (the query heads of a group, or of a token's groups, are not one stride apart):
  ``fwd.attn.query``, 2 T q B bytes.
* grouped-query attention repeats k and v to every query head (``repeat_interleave``): read
  kv, write q elements a token each (:func:`tpsim.layer.eager.repeat_kv`).
* the scores, ``torch.baddbmm`` on transposed views (no copy; the scale in its alpha), the
  scale-mask-softmax, attention dropout, the context ``torch.bmm``. The two GEMMs keep their
  operands for the backward: the query and the key as repeated, (T, q) each, and the value as
  repeated, (T, q): 3 T q B bytes, k and v at q columns with grouped queries, not kv
  (:func:`kept`; Megatron's selective checkpoint keeps the core's inputs instead, q + 2 kv:
  :func:`core_inputs`).
* ``context.permute(2, 0, 1, 3).contiguous()``: a copy of (T, q), 2 T q B bytes
  (:func:`tpsim.layer.eager.contiguous`).

backward
* the context copy's gradient is a view; the two GEMMs of the context bmm, dropout's and the
  softmax's backward; the two GEMMs of the scores.
* autograd's baddbmm backward scales each product by alpha (``maybe_multiply(grad.bmm(...),
  alpha)``, alpha = 1/sqrt(d) != 1): one kernel over dQ and one over dK, (T, q) each (dK of
  the repeated keys), 2 T q B bytes each: ``bwd.attn.scale.dq``, ``bwd.attn.scale.dk``.
* grouped-query attention sums the repeated dK and dV back (the same bytes as the repeat).
* the split's backward concatenates dQ, dK, dV into the gradient of the QKV output
  (``torch.cat``; Transformer Engine's ``SplitAlongDim`` falls back to it when the gradients
  are separate tensors): read and write (T, q + 2 kv), 2 T (q + 2 kv) B bytes: ``bwd.attn.cat``.

The scale-mask-softmax is Megatron's ``FusedScaleMaskSoftmax``
(megatron/core/fusions/fused_softmax.py; megatron/model/fused_softmax.py in Megatron-DeepSpeed):
one fused kernel each way, reading and writing the scores (2 B bytes an element forward; the
output and its gradient read, the gradient written backward, 3 B), where
``is_kernel_available`` holds: 16-bit scores, 16 < s <= 4096 (a later Megatron-core allows
8192), s % 4 == 0 and b heads % batch_per_block == 0 (the kernel's ``get_batch_per_block``
for a causal mask: 4 sequences of keys a 128-thread block past 128 keys, 8 up to 128).
Elsewhere it falls back to ``forward_torch_softmax``, PyTorch kernels one by one over the
(b heads s, s) scores (:func:`softmax_bytes`): with the query-key layer scaling
(``Dims.layer_scaling``: ``attention_softmax_in_fp32`` and the layer-number ``scale``) the
scores cast to fp32 (B read, 4 written), times the scale (4 + 4), ``masked_fill_`` (4 + 4),
softmax (4 + 4), cast back (4 + B): 2 B + 28 bytes an element forward; their five autograd
nodes backward, the casts' (B + 4, 4 + B), the softmax's (its output and gradient read, 12),
the mask's and the scale's (4 + 4 each): 2 B + 36; the fp32 output kept (4 bytes an
element). Without it (Megatron-core's default) ``masked_fill_`` and softmax in 16-bit, 2 B
each, 4 B forward; backward 3 B and 2 B, 5 B. The (s, s) mask every row reads is not counted. The calls past the first are bare torch calls, each priced as a launch
(``launches``, :mod:`tpsim.sim.launches`); their kernels' fixed costs are not added. With TP 8
a 16-head model at micro-batch 1 (2 heads a rank) falls back: vTrain's TP 8 runs at
micro-batch 1 on one A100 node (``bench/vtrain_megatron.py``).

Each copy is a memory-bound kernel priced by its bytes
(:func:`tpsim.cost.compute.elementwise_time`; none, at no cost, where it is a view). The query
copy and the repeats count no host issue (``host_ops`` 0): without grouped queries Megatron
runs no repeat and the reshape is a view; with them, their host time is left out. Nor do the
alpha scalings: autograd issues them inside the scores' backward node, from C++, with its two
GEMMs (which count). Under
``--eager-kernels`` rope's ``repeat_kv`` stands for the repeat. The softmax's in-place mask fill and its
backward are part of the softmax op.
"""
from __future__ import annotations

from . import eager


def fused_softmax(d) -> bool:
    """Megatron's fused scale-mask-softmax runs (``is_kernel_available``, module docstring)."""
    per_block = 4 if d.s > 128 else 8
    return d.bpe == 2 and 16 < d.s <= 4096 and d.s % 4 == 0 and d.b * d.heads % per_block == 0


def softmax_bytes(d, backward: bool) -> float:
    """Bytes an element of the scores the softmax moves (module docstring): fused 2 B forward,
    3 B backward; PyTorch's fallback 2 B + 28 and 2 B + 36 in fp32, 4 B and 5 B in 16-bit."""
    if fused_softmax(d):
        return (3 if backward else 2) * d.bpe
    if d.layer_scaling:
        return 2 * d.bpe + (36 if backward else 28)
    return (5 if backward else 4) * d.bpe


def _softmax_calls(d) -> int:
    """The fallback's torch calls past the op's own: 4 in fp32, 1 in 16-bit; fused, none."""
    return 0 if fused_softmax(d) else 4 if d.layer_scaling else 1


def _softmax_kept(d) -> float:
    """What the softmax keeps for its backward: its output, fp32 in the fp32 fallback."""
    rows = _scores(d)[2]
    return rows * (4 if d.layer_scaling and not fused_softmax(d) else d.bpe)


def _scores(d):
    """The (b heads s, s) score matrices: rows, columns, elements."""
    return d.b * d.heads * d.s, d.s, d.b * d.heads * d.s * d.s


def _scores_gemm(d):
    """Q K^T and its backward's dprobs, per (sequence, head): (s x d) @ (d x s)."""
    return d.s, d.s, d.d, d.b * d.heads, False, d.s


def _context_gemm(d):
    """P V and the backward's dV, dQ, dK, per (sequence, head): (s x s) @ (s x d)."""
    return d.s, d.d, d.s, d.b * d.heads, False, d.s


def _query_copy(d):
    """``query.reshape`` copies with grouped queries unless one kv head and one sequence."""
    grouped = d.heads > d.kv_heads and (d.kv_heads > 1 or d.b > 1)
    return eager.copy_size(d, d.q) if grouped else (d.T, d.q, 0)


def kept(d) -> dict:
    """What the scores and context GEMMs keep: Q and K repeated to every query head, 2 T q B;
    V repeated, T q B."""
    return {"fwd.attn.scores": 2 * d.T * d.q * d.bpe, "fwd.attn.av": d.T * d.q * d.bpe}


def core_inputs(d) -> dict:
    """The core's inputs, before the repeat, as a checkpoint of the core keeps them: q and k,
    T (q + kv) B, at the scores; v, T kv B, at the context GEMM."""
    return {"fwd.attn.scores": d.T * (d.q + d.kv) * d.bpe, "fwd.attn.av": d.T * d.kv * d.bpe}


def core_fwd(B, qkv: str, dropout: bool) -> str:
    """The unfused core's forward (module docstring); returns the context copy's name."""
    q = B.eltwise("fwd.attn.query", _query_copy, (qkv,), host_ops=0)
    kv = qkv if B.eager else eager.repeat_kv(B, "fwd.attn.repeat_kv", q, host_ops=0)
    x = B.gemm("fwd.attn.scores", _scores_gemm, (q, kv),
               saved=lambda d: kept(d)["fwd.attn.scores"])
    x = B.eltwise("fwd.attn.softmax",
                  lambda d: (*_scores(d)[:2], _scores(d)[2] * softmax_bytes(d, False)), (x,),
                  saved=_softmax_kept, arith=lambda d: "softmax", launches=_softmax_calls)
    if dropout:
        x = B.eltwise("fwd.attn.dropout",
                      lambda d: (*_scores(d)[:2], _scores(d)[2] * (2 * d.bpe + 1)),
                      (x,), saved=lambda d: _scores(d)[2] * (1 + d.bpe))
    x = B.gemm("fwd.attn.av", _context_gemm, (x, kv), saved=lambda d: kept(d)["fwd.attn.av"])
    return eager.contiguous(B, x)


def core_bwd(B, grad, dropout: bool) -> str:
    """The unfused core's backward (module docstring): twice the forward's GEMM FLOPs, the
    softmax's backward, then the layout kernels; returns the concatenation's name."""
    av = "fwd.attn.av"
    x = B.gemm("bwd.attn.av.dprobs", _scores_gemm, (grad,), forward_of=av)
    dv = B.gemm("bwd.attn.av.dv", _context_gemm, (grad,), forward_of=av)
    if dropout:
        x = B.eltwise("bwd.attn.dropout",
                      lambda d: (*_scores(d)[:2], _scores(d)[2] * (2 * d.bpe + 1)),
                      (x,), forward_of="fwd.attn.dropout")
    x = B.eltwise("bwd.attn.softmax",
                  lambda d: (*_scores(d)[:2], _scores(d)[2] * softmax_bytes(d, True)), (x,),
                  forward_of="fwd.attn.softmax", arith=lambda d: "softmax_backward",
                  launches=_softmax_calls)
    dq, dk = (B.gemm(f"bwd.attn.scores.{n}", _context_gemm, (x,), forward_of="fwd.attn.scores")
              for n in ("dq", "dk"))
    dq, dk = (B.eltwise(f"bwd.attn.scale.{n}", lambda d: eager.copy_size(d, d.q), (x,),
                        forward_of="fwd.attn.scores", host_ops=0)
              for n, x in (("dq", dq), ("dk", dk)))
    dkv = (dk, dv) if B.eager else eager.repeat_kv(B, "bwd.attn.repeat_kv", (dk, dv),
                                                   "fwd.attn.repeat_kv", 0)
    return B.eltwise("bwd.attn.cat", lambda d: eager.copy_size(d, d.q + 2 * d.kv), (dq, dkv),
                     forward_of="fwd.qkv")
