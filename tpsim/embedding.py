"""The ends of the model on one TP rank: the vocab-parallel embedding and the output layer.

Megatron's ``VocabParallelEmbedding`` holds vocab/tp rows per rank: each rank looks up the
tokens it owns, zeroes the others, and an all-reduce (reduce-scatter with SP) sums the partial
embeddings. The output layer is a column-parallel GEMM over the (padded) vocabulary followed
by the vocab-parallel cross-entropy, which all-reduces three (b*s) fp32 vectors (the row max,
the sum of exponentials and the target logit) instead of gathering the logits. Built as
:class:`~tpsim.template.Template` s like a layer; priced and scheduled the same way.
"""
from __future__ import annotations

from .dims import sp_reduce_op
from .linears import column_parallel_bwd, input_saved
from .template import Builder, Template

CE_REDUCTIONS = ("max", "sum-exp", "target")   # Megatron's _VocabParallelCrossEntropy
FP32 = 4

_TEMPLATES: dict[tuple, Template] = {}


def embedding_template(tp_group: bool, sp: bool, dropout: bool) -> Template:
    """Lookup (read b*s rows, write them), partial-sum collective, optional dropout; backward.

    Backward: dropout backward, (SP: all-gather of the gradient), and the weight gradient's
    scatter-add of b*s rows (read the gradient, read and write the rows: 3 b s h bpe bytes).
    """
    key = ("embedding", tp_group, sp, dropout)
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    B = Builder(sp)
    B.block = "embedding"
    x = B.eltwise("fwd.embedding", lambda d: (d.T, d.h, 2 * d.T * d.h * d.bpe))
    op = sp_reduce_op(sp)
    x = B.collective(f"fwd.embedding.{op}", op, (x,))
    dropout_size = lambda d: (d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1))   # noqa: E731
    if dropout:
        x = B.eltwise("fwd.embedding.dropout", dropout_size, (x,), saved=lambda d: d.Tn * d.h)
    B.phase = "backward"
    if dropout:
        x = B.eltwise("bwd.embedding.dropout", dropout_size, (x,),
                      forward_of="fwd.embedding.dropout")
    if sp:
        x = B.collective("bwd.embedding.all-gather", "all-gather", (x,),
                         forward_of="fwd.embedding.reduce-scatter")
    B.eltwise("bwd.embedding", lambda d: (d.T, d.h, 3 * d.T * d.h * d.bpe), (x,),
              forward_of="fwd.embedding")
    tpl = _TEMPLATES[key] = B.compile({"tp": 2 if tp_group else 1})
    return tpl


def _ce_reduction(d):
    """One of the cross-entropy's all-reduces: b*s fp32 values."""
    return d.T * FP32, (d.T,), "fp32"


def output_template(tp_group: bool, sp: bool, norm: bool = True) -> Template:
    """Final norm, (SP all-gather), logits GEMM (b*s x h) @ (h x V/tp), cross-entropy; backward.

    Cross-entropy in fp32 as Megatron runs it by default: read the logits, write the fp32
    softmax it keeps for backward (b*s*V/tp*(bpe + 4) bytes), three all-reduces of b*s fp32;
    backward reads the softmax and writes the logits' gradient. The logits GEMM is a
    column-parallel linear: its backward is that of a layer's (dgrad, the all-reduce or SP
    reduce-scatter of the input gradient overlapping the wgrad, SP's re-gather of the input).
    ``d.vocab`` is the padded vocabulary per rank.
    """
    key = ("output", tp_group, sp, norm)
    if key in _TEMPLATES:
        return _TEMPLATES[key]
    B = Builder(sp)
    B.block = "output"
    x = None
    norm_size = lambda d, rw: (d.Tn, d.h, rw * d.Tn * d.h * d.bpe)   # noqa: E731
    if norm:
        x = B.eltwise("fwd.final_norm", lambda d: norm_size(d, 2),
                      saved=lambda d: d.Tn * d.h * d.bpe)
    if sp:
        x = B.collective("fwd.logits.all-gather", "all-gather", (x,))
    x = B.gemm("fwd.logits", lambda d: (d.T, d.vocab, d.h), (x,), saved=input_saved)
    ce_size = lambda d: (d.T, d.vocab, d.T * d.vocab * (d.bpe + FP32))   # noqa: E731
    x = B.eltwise("fwd.cross_entropy", ce_size, (x,), saved=lambda d: d.T * d.vocab * FP32)
    for r in CE_REDUCTIONS:
        x = B.collective(f"fwd.cross_entropy.{r}", "all-reduce", (x,), size=_ce_reduction)
    B.phase = "backward"
    x = B.eltwise("bwd.cross_entropy", ce_size, (x,), forward_of="fwd.cross_entropy")
    x, _ = column_parallel_bwd(B, "logits", lambda d: (d.T, d.vocab, d.h), (x,), bias=False,
                               is_linear=False)
    if norm:
        B.eltwise("bwd.final_norm", lambda d: norm_size(d, 3), (x,), forward_of="fwd.final_norm")
    tpl = _TEMPLATES[key] = B.compile({"tp": 2 if tp_group else 1})
    return tpl
