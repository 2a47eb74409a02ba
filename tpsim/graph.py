"""One transformer layer on one tensor-parallel rank: its ops, forward and backward, as a graph.

Megatron-LM's split (Shoeybi et al. 2019): the QKV and MLP-in linears are column-parallel
(``Y = XA, A = [A_1 ... A_t]``, heads/tp and kv_heads/tp per rank), the attention output and
MLP-out linears row-parallel (``Y = sum_i X_i B_i``, then an all-reduce). Backward, the identity
before each column-parallel linear becomes an all-reduce of the input gradient, which Megatron
runs while the weight-gradient GEMM computes. With sequence parallelism (Korthikanti et al.
2022) norms, dropout and residuals work on seq/tp tokens, each forward all-reduce becomes a
reduce-scatter after the row-parallel GEMM plus an all-gather before the next column-parallel
one, and backward mirrors them (all-gather of the output gradient, reduce-scatter of the input
gradient). The gathered input of a column-parallel GEMM is kept for its weight gradient (no
backward re-gather), so SP moves exactly the all-reduce version's bytes.

Each op is written as a function of the per-rank sizes (:class:`Dims`) into a
:class:`~tpsim.template.Builder`: :func:`layer_template` builds a layer's structure once per set
of switches, and the typed ops (:mod:`tpsim.ops`: GEMMs 2mnk FLOPs, attention cores, memory-bound
kernels priced by their bytes, TP collectives of nccl-tests' size) are made for any sizes.
:func:`layer_graph` returns the ``networkx.DiGraph`` of one layer (one node per op, attribute
``op``; edges ``dep="data"``, or ``"order"`` for Megatron's issue order on the backward compute
stream). Construction only: pricing is :mod:`tpsim.price`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops import Attention
from .recompute import apply_recompute
from .template import Builder, Template
from .topology import BYTES_PER_ELEMENT

BLOCKS = ("attention", "mlp")


@dataclass(frozen=True)
class Dims:
    """Per-rank sizes of one layer (widths already divided by tp), and its dtype.

    ``vocab`` is the padded vocabulary one rank holds (the output layer's GEMM width).
    """
    b: int
    s: int
    h: int
    tp: int
    dtype: str
    heads: int      # query heads per rank
    kv_heads: int   # key/value heads per rank
    d: int          # head_dim
    f: int          # ffn_hidden / tp
    sp: bool
    vocab: int = 0

    @property
    def bpe(self) -> int:
        """Bytes per element of ``dtype``."""
        return BYTES_PER_ELEMENT[self.dtype]

    @property
    def T(self) -> int:
        """Tokens of the micro-batch: b * s."""
        return self.b * self.s

    @property
    def Tn(self) -> int:
        """Tokens a norm, dropout or residual sees: b*s, or b*s/tp with sequence parallelism."""
        return self.T // self.tp if self.sp else self.T

    @property
    def q(self) -> int:
        return self.heads * self.d

    @property
    def kv(self) -> int:
        return self.kv_heads * self.d


def sp_reduce_op(sp: bool) -> str:
    """The collective that sums partial activations or gradients over the TP group: all-reduce,
    or reduce-scatter along the sequence with sequence parallelism. It follows every
    row-parallel linear forward and precedes every column-parallel linear backward."""
    return "reduce-scatter" if sp else "all-reduce"


# --------------------------------------------------------------------------- forward

def _norm_fwd(B: Builder, name: str, dep) -> str:
    """Layer/RMS norm on Tn tokens: read x, write y; keeps its input."""
    return B.eltwise(name, lambda d: (d.Tn, d.h, 2 * d.Tn * d.h * d.bpe), (dep,),
                     saved=lambda d: d.Tn * d.h * d.bpe)


def _dropout_residual_fwd(B: Builder, i: int, dep, skip, dropout: bool) -> str:
    """Dropout (read, write, 1-byte mask kept) then residual add (read 2, write 1)."""
    if dropout:
        dep = B.eltwise(f"fwd.dropout{i}", lambda d: (d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1)),
                        (dep,), saved=lambda d: d.Tn * d.h)
    return B.eltwise(f"fwd.residual{i}", lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe), (dep, skip))


def _attention(d: Dims, backward: bool) -> Attention:
    return Attention(d.b, d.heads, d.kv_heads, d.s, d.s, d.d, d.dtype, True, backward)


def _attention_core_fwd(B: Builder, qkv: str, fused: bool, dropout: bool) -> str:
    """Causal attention on heads/tp heads: 4 b s^2 (heads*head_dim)/tp FLOPs forward (QK^T, AV)."""
    if fused:   # read q, k, v; write o; keeps q, k, v
        return B.add("fwd.attn", lambda d: _attention(d, False), "compute", (qkv,),
                     saved=lambda d: d.T * (d.q + 2 * d.kv) * d.bpe)
    x = B.gemm("fwd.attn.scores", lambda d: (d.s, d.s, d.d, d.b * d.heads), (qkv,),
               saved=lambda d: d.T * (d.q + d.kv) * d.bpe)
    x = B.eltwise("fwd.attn.softmax", lambda d: (d.b * d.heads * d.s, d.s,
                                                 2 * d.b * d.heads * d.s * d.s * d.bpe), (x,),
                  saved=lambda d: d.b * d.heads * d.s * d.s * d.bpe)
    if dropout:
        x = B.eltwise("fwd.attn.dropout",
                      lambda d: (d.b * d.heads * d.s, d.s, d.b * d.heads * d.s * d.s * (2 * d.bpe + 1)),
                      (x,), saved=lambda d: d.b * d.heads * d.s * d.s * (1 + d.bpe))
    return B.gemm("fwd.attn.av", lambda d: (d.s, d.d, d.s, d.b * d.heads), (x, qkv),
                  saved=lambda d: d.T * d.kv * d.bpe)


def _attention_fwd(B: Builder, x, bare: bool, fused: bool, dropout: bool) -> str:
    B.block = "attention"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm1", x)
    if B.sp:
        x = B.collective("fwd.qkv.all-gather", "all-gather", (x,))
    x = B.gemm("fwd.qkv", lambda d: (d.T, d.q + 2 * d.kv, d.h), (x,),
               saved=lambda d: d.T * d.h * d.bpe)
    x = _attention_core_fwd(B, x, fused, dropout)
    x = B.gemm("fwd.proj", lambda d: (d.T, d.h, d.q), (x,), saved=lambda d: d.T * d.q * d.bpe)
    x = B.collective(f"fwd.proj.{sp_reduce_op(B.sp)}", sp_reduce_op(B.sp), (x,))
    return x if bare else _dropout_residual_fwd(B, 1, x, skip, dropout)


def _mlp_fwd(B: Builder, x, bare: bool, swiglu: bool, dropout: bool) -> str:
    B.block = "mlp"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm2", x)
    if B.sp:
        x = B.collective("fwd.mlp_in.all-gather", "all-gather", (x,))
    inp = x
    x = B.gemm("fwd.mlp_in", lambda d: (d.T, d.f, d.h), (inp,), saved=lambda d: d.T * d.h * d.bpe)
    if swiglu:   # silu(gate) * up: read 2, write 1; keeps both inputs
        gate = B.gemm("fwd.mlp_gate", lambda d: (d.T, d.f, d.h), (inp,))
        x = B.eltwise("fwd.act", lambda d: (d.T, d.f, 3 * d.T * d.f * d.bpe), (x, gate),
                      saved=lambda d: 2 * d.T * d.f * d.bpe)
    else:        # gelu: read 1, write 1; keeps its input
        x = B.eltwise("fwd.act", lambda d: (d.T, d.f, 2 * d.T * d.f * d.bpe), (x,),
                      saved=lambda d: d.T * d.f * d.bpe)
    x = B.gemm("fwd.mlp_out", lambda d: (d.T, d.h, d.f), (x,), saved=lambda d: d.T * d.f * d.bpe)
    x = B.collective(f"fwd.mlp_out.{sp_reduce_op(B.sp)}", sp_reduce_op(B.sp), (x,))
    return x if bare else _dropout_residual_fwd(B, 2, x, skip, dropout)


# --------------------------------------------------------------------------- backward

def linear_backward(B: Builder, name: str, size, grads, order=()):
    """Backward of the forward GEMM X (m x k) @ W (k x n), ``size(d)`` -> (m, n, k): two GEMMs,
    each 2mnk FLOPs.

    dgrad: dX = dY W^T, (m x n) @ (n x k);   wgrad: dW = X^T dY, (k x m) @ (m x n).
    """
    fwd = f"fwd.{name}"

    def dgrad_size(d):
        m, n, k = size(d)
        return m, k, n

    def wgrad_size(d):
        m, n, k = size(d)
        return k, n, m
    dgrad = B.gemm(f"bwd.{name}.dgrad", dgrad_size, grads, forward_of=fwd, order=order)
    wgrad = B.gemm(f"bwd.{name}.wgrad", wgrad_size, grads, forward_of=fwd)
    return dgrad, wgrad


def _norm_residual_bwd(B: Builder, i: int, grad, order, skip_grad) -> str:
    """Norm backward (read x and dy, write dx), then the residual's gradient sum (read 2, write 1)."""
    size = lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe)   # noqa: E731
    x = B.eltwise(f"bwd.norm{i}", size, (grad,), forward_of=f"fwd.norm{i}", order=order)
    return B.eltwise(f"bwd.residual{i}", size, (x, skip_grad), forward_of=f"fwd.residual{i}")


def _dropout_bwd(B: Builder, i: int, grad) -> str:
    return B.eltwise(f"bwd.dropout{i}", lambda d: (d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1)),
                     (grad,), forward_of=f"fwd.dropout{i}")


def _attention_core_bwd(B: Builder, grad, order, fused: bool, dropout: bool) -> tuple:
    """Backward of the attention core: 8 b s^2 (heads*head_dim)/tp FLOPs (twice the forward)."""
    if fused:   # read q, k, v, o, do; write dq, dk, dv
        return (B.add("bwd.attn", lambda d: _attention(d, True), "compute", (grad,),
                      forward_of="fwd.attn", order=order),)
    av = "fwd.attn.av"
    x = B.gemm("bwd.attn.av.dprobs", lambda d: (d.s, d.s, d.d, d.b * d.heads), (grad,),
               forward_of=av, order=order)
    dv = B.gemm("bwd.attn.av.dv", lambda d: (d.s, d.d, d.s, d.b * d.heads), (grad,), forward_of=av)
    if dropout:
        x = B.eltwise("bwd.attn.dropout", lambda d: (d.b * d.heads * d.s, d.s,
                                                     d.b * d.heads * d.s * d.s * (2 * d.bpe + 1)),
                      (x,), forward_of="fwd.attn.dropout")
    x = B.eltwise("bwd.attn.softmax", lambda d: (d.b * d.heads * d.s, d.s,
                                                 3 * d.b * d.heads * d.s * d.s * d.bpe), (x,),
                  forward_of="fwd.attn.softmax")
    dq = B.gemm("bwd.attn.scores.dq", lambda d: (d.s, d.d, d.s, d.b * d.heads), (x,),
                forward_of="fwd.attn.scores")
    dk = B.gemm("bwd.attn.scores.dk", lambda d: (d.s, d.d, d.s, d.b * d.heads), (x,),
                forward_of="fwd.attn.scores")
    return dq, dk, dv


def row_parallel_bwd(B: Builder, linear: str, size, grad):
    """Backward of a row-parallel linear: (SP: all-gather of the output gradient, the conjugate
    of its forward reduce-scatter) then its dgrad and wgrad GEMMs."""
    if B.sp:
        grad = B.collective(f"bwd.{linear}.all-gather", "all-gather", (grad,),
                            forward_of=f"fwd.{linear}.reduce-scatter")
    return linear_backward(B, linear, size, (grad,))


def column_input_bwd(B: Builder, linear: str, dgrads) -> str:
    """The conjugate of a column-parallel linear's input: all-reduce (SP: reduce-scatter) of its
    input gradient, issued once the dgrad GEMMs end (it overlaps the wgrad GEMMs)."""
    conj = f"fwd.{linear}.all-gather" if B.sp else f"fwd.{linear}"
    op = sp_reduce_op(B.sp)
    return B.collective(f"bwd.{linear}.{op}", op, dgrads, forward_of=conj)


def _attention_bwd(B: Builder, grad, bare: bool, fused: bool, dropout: bool) -> str:
    B.block = "attention"
    out_grad = grad
    if not bare and dropout:
        grad = _dropout_bwd(B, 1, grad)
    dgrad, wgrad = row_parallel_bwd(B, "proj", lambda d: (d.T, d.h, d.q), grad)
    core = _attention_core_bwd(B, dgrad, (wgrad,), fused, dropout)
    dgrad, wgrad = linear_backward(B, "qkv", lambda d: (d.T, d.q + 2 * d.kv, d.h), core)
    x = column_input_bwd(B, "qkv", (dgrad,))
    return x if bare else _norm_residual_bwd(B, 1, x, (wgrad,), out_grad)


def _mlp_bwd(B: Builder, grad, bare: bool, swiglu: bool, dropout: bool) -> str:
    B.block = "mlp"
    out_grad = grad
    if not bare and dropout:
        grad = _dropout_bwd(B, 2, grad)
    dgrad, wgrad = row_parallel_bwd(B, "mlp_out", lambda d: (d.T, d.h, d.f), grad)
    # swiglu: read dy, gate, up; write dgate, dup.  gelu: read dy, x; write dx
    x = B.eltwise("bwd.act", lambda d: (d.T, d.f, (5 if swiglu else 3) * d.T * d.f * d.bpe),
                  (dgrad,), forward_of="fwd.act", order=(wgrad,))
    dgrads, wgrads = zip(*[linear_backward(B, name, lambda d: (d.T, d.f, d.h), (x,))
                           for name in (("mlp_in", "mlp_gate") if swiglu else ("mlp_in",))])
    x = column_input_bwd(B, "mlp_in", dgrads)
    return x if bare else _norm_residual_bwd(B, 2, x, wgrads, out_grad)


# --------------------------------------------------------------------------- public

def layer_dims(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
               sequence_parallel: bool = False) -> Dims:
    """Per-rank sizes, after checking that every sharded dimension divides by ``tp``."""
    model.check_tp(tp, seq_len, sequence_parallel)
    return Dims(b=micro_batch, s=seq_len, h=model.hidden, tp=tp, dtype=dtype,
                heads=model.heads // tp, kv_heads=model.kv_heads // tp, d=model.head_dim,
                f=model.ffn_hidden // tp, sp=sequence_parallel, vocab=model.padded_vocab(tp) // tp)


_TEMPLATES: dict[tuple, Template] = {}


def layer_template(tp_group: bool, sequence_parallel: bool = False,
                   blocks: tuple[str, ...] = BLOCKS, bare: bool = False, dropout: bool = True,
                   fused: bool = True, swiglu: bool = False, recompute: str = "none") -> Template:
    """The structure of one layer for these switches, built once and kept.

    ``tp_group``: the TP group has more than one rank (else no collectives); ``blocks`` picks
    the attention and/or MLP sub-blocks; ``bare`` leaves out norms, dropout and residuals (what a
    lone ParallelMLP / ParallelAttention runs). Backward starts after the forward's last op: the
    output gradient exists only once the output does. ``recompute`` (none|selective|full) adds
    the recomputed ``rcp.`` ops to the backward (:mod:`tpsim.recompute`).
    """
    if not blocks or any(b not in BLOCKS for b in blocks):
        raise ValueError(f"blocks must be a non-empty subset of {BLOCKS}, not {blocks!r}")
    drop = dropout and not bare
    key = (tp_group, sequence_parallel, tuple(blocks), bare, drop, fused, swiglu, recompute)
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        B = Builder(sequence_parallel)
        x = None
        if "attention" in blocks:
            x = _attention_fwd(B, x, bare, fused, drop)
        if "mlp" in blocks:
            x = _mlp_fwd(B, x, bare, swiglu, drop)
        B.phase = "backward"
        if "mlp" in blocks:
            x = _mlp_bwd(B, x, bare, swiglu, drop)
        if "attention" in blocks:
            x = _attention_bwd(B, x, bare, fused, drop)
        apply_recompute(B, recompute)
        tpl = _TEMPLATES[key] = B.compile(
            {"tp": 2 if tp_group else 1}, blocks=tuple(blocks), bare=bare,
            attention="fused" if fused else "unfused", recompute=recompute)
    return tpl


def layer_graph(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
                sequence_parallel: bool = False, blocks: tuple[str, ...] = BLOCKS,
                bare: bool = False, dropout: float | None = None,
                attention: str | None = None, recompute: str = "none"):
    """One layer on one TP rank, forward then backward, as a ``networkx.DiGraph`` of unpriced ops
    (see :func:`layer_template`). ``dropout`` and ``attention`` override the model's."""
    dims = layer_dims(model, tp, micro_batch, seq_len, dtype, sequence_parallel)
    p = model.dropout if dropout is None else dropout
    tpl = layer_template(tp > 1, sequence_parallel, blocks, bare, p > 0,
                         (attention or model.attention) == "fused", model.activation == "swiglu",
                         recompute)
    return tpl.digraph(dims, tp=tp, dropout=p if p > 0 and not bare else 0.0)


def collectives_in(graph) -> list[tuple[str, str, int]]:
    """(phase, op, nbytes) of every collective, in issue order; nbytes as nccl-tests counts it."""
    return [(a["phase"], a["op"].op, int(a["op"].nbytes))
            for _, a in graph.nodes(data=True) if a["kind"] == "collective"]
