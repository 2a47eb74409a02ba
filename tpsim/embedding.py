"""The ends of the model on one TP rank: the vocab-parallel embedding and the output layer.

Megatron's ``VocabParallelEmbedding`` holds vocab/tp rows per rank: each rank looks up the
tokens it owns, zeroes the others, and an all-reduce (reduce-scatter with SP) sums the partial
embeddings. The output layer is a column-parallel GEMM over the (padded) vocabulary followed
by the vocab-parallel cross-entropy, which all-reduces three (b*s) fp32 vectors (the row max,
the sum of exponentials and the target logit) instead of gathering the logits. Same node
attributes as :mod:`tpsim.graph`; priced and scheduled the same way.
"""
from __future__ import annotations

import networkx as nx

from .graph import Dims, OpBuilder, linear_backward

CE_REDUCTIONS = ("max", "sum-exp", "target")   # Megatron's _VocabParallelCrossEntropy
FP32 = 4


def embedding_graph(dims: Dims, dropout: bool) -> nx.DiGraph:
    """Lookup (read b*s rows, write them), partial-sum collective, optional dropout; backward.

    Backward: dropout backward, (SP: all-gather of the gradient), and the weight gradient's
    scatter-add of b*s rows (read the gradient, read and write the rows: 3 b s h bpe bytes).
    """
    d = dims
    B = OpBuilder(d)
    B.block = "embedding"
    n = d.T * d.h * d.bpe
    x = B.eltwise("fwd.embedding", d.T, d.h, 2 * n)
    op = "reduce-scatter" if d.sp else "all-reduce"
    x = B.collective(f"fwd.embedding.{op}", op, (x,))
    if dropout:
        x = B.eltwise("fwd.embedding.dropout", d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1), (x,),
                      saved=d.Tn * d.h)
    B.phase = "backward"
    if dropout:
        x = B.eltwise("bwd.embedding.dropout", d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1), (x,),
                      forward_of="fwd.embedding.dropout")
    if d.sp:
        x = B.collective("bwd.embedding.all-gather", "all-gather", (x,),
                         forward_of="fwd.embedding.reduce-scatter")
    B.eltwise("bwd.embedding", d.T, d.h, 3 * n, (x,), forward_of="fwd.embedding")
    return B.graph(dims=d)


def output_graph(dims: Dims, vocab_per_rank: int, norm: bool = True) -> nx.DiGraph:
    """Final norm, (SP all-gather), logits GEMM (b*s x h) @ (h x V/tp), cross-entropy; backward.

    Cross-entropy in fp32 as Megatron runs it by default: read the logits, write the fp32
    softmax it keeps for backward (b*s*V/tp*(bpe + 4) bytes), three all-reduces of b*s fp32;
    backward reads the softmax and writes the logits' gradient. The logits GEMM's backward is
    a dgrad and a wgrad, with the conjugate all-reduce (SP: reduce-scatter) of the input
    gradient overlapping the wgrad, as in a layer.
    """
    d = dims
    B = OpBuilder(d)
    B.block = "output"
    v = vocab_per_rank
    x = None
    if norm:
        x = B.eltwise("fwd.final_norm", d.Tn, d.h, 2 * d.Tn * d.h * d.bpe, saved=d.Tn * d.h * d.bpe)
    if d.sp:
        x = B.collective("fwd.logits.all-gather", "all-gather", (x,))
    x = B.gemm("fwd.logits", d.T, v, d.h, (x,), saved=d.T * d.h * d.bpe)
    ce_bytes = d.T * v * (d.bpe + FP32)
    x = B.eltwise("fwd.cross_entropy", d.T, v, ce_bytes, (x,), saved=d.T * v * FP32)
    for r in CE_REDUCTIONS:
        x = B.collective(f"fwd.cross_entropy.{r}", "all-reduce", (x,), nbytes=d.T * FP32,
                         shape=f"{d.T} fp32")
    B.phase = "backward"
    x = B.eltwise("bwd.cross_entropy", d.T, v, ce_bytes, (x,), forward_of="fwd.cross_entropy")
    dgrad, wgrad = linear_backward(B, "logits", d.T, v, d.h, (x,))
    op = "reduce-scatter" if d.sp else "all-reduce"
    x = B.collective(f"bwd.logits.{op}", op, (dgrad,),
                     forward_of="fwd.logits.all-gather" if d.sp else "fwd.logits")
    if norm:
        B.eltwise("bwd.final_norm", d.Tn, d.h, 3 * d.Tn * d.h * d.bpe, (x,),
                  forward_of="fwd.final_norm", order=(wgrad,))
    return B.graph(dims=d)
