"""One transformer layer on one tensor-parallel rank as a ``networkx.DiGraph`` of ops.

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

Nodes are ops; node attributes: ``name, kind`` (gemm|attention|elementwise|collective),
``phase`` (forward|backward), ``stream`` (compute|comm), ``block`` (attention|mlp), ``shape``,
``flops`` (conventional count: backward GEMMs = 2x forward; elementwise ops count 0, they are
priced by bytes), ``bytes`` (device-memory traffic), ``comm_bytes`` (nccl-tests size of a
collective), ``collective`` (op or None), ``forward_of`` (backward ops: the forward op they
differentiate), ``saved_bytes`` (activations a forward op keeps for backward), ``price``
(what the pricing needs), ``time_s`` (None until priced). Edges are data dependencies
(``dep="data"``) plus, on the backward compute stream, Megatron's issue order (``dep="order"``:
a linear's weight-gradient GEMM runs before the next op's kernels). Construction only: pricing
is :mod:`tpsim.price`.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .recompute import apply_recompute
from .topology import BYTES_PER_ELEMENT

BLOCKS = ("attention", "mlp")


@dataclass(frozen=True)
class Dims:
    """Per-rank sizes of one layer. Widths already divided by tp."""
    b: int
    s: int
    h: int
    tp: int
    bpe: int
    dtype: str
    heads: int      # query heads per rank
    kv_heads: int   # key/value heads per rank
    d: int          # head_dim
    f: int          # ffn_hidden / tp
    sp: bool

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

    @property
    def act_bytes(self) -> int:
        """The (b*s, h) activation the collectives move: b * s * h * bytes_per_element."""
        return self.T * self.h * self.bpe


class OpBuilder:
    """Collects ops; ``add`` wires data edges from ``deps`` (names, None skipped).

    Nodes and edges go into the DiGraph in one batch (:meth:`graph`): networkx's per-call
    bookkeeping is most of the cost of building a small graph one node at a time.
    """

    def __init__(self, dims: Dims, phase: str = "forward"):
        self.d = dims
        self.phase = phase
        self.block = ""
        self.nodes: list[tuple[str, dict]] = []
        self.edges: list[tuple[str, str, dict]] = []

    def add(self, name, kind, deps=(), stream="compute", shape="", flops=0.0, nbytes=0.0,
            comm_bytes=0.0, collective=None, forward_of=None, saved=0.0, price=None, order=()):
        self.nodes.append((name, {
            "name": name, "kind": kind, "phase": self.phase, "stream": stream,
            "block": self.block, "shape": shape, "flops": float(flops), "bytes": float(nbytes),
            "comm_bytes": float(comm_bytes), "collective": collective, "forward_of": forward_of,
            "saved_bytes": float(saved), "price": price, "time_s": None}))
        edges = self.edges
        for dep in _flat(deps):
            edges.append((dep, name, {"dep": "data"}))
        for dep in order:
            edges.append((dep, name, {"dep": "order"}))
        if forward_of is not None:
            edges.append((forward_of, name, {"dep": "data"}))
        return name

    def graph(self, **attrs) -> nx.DiGraph:
        """The DiGraph of every op added so far; ``attrs`` go to ``graph.graph``."""
        g = nx.DiGraph(**attrs)
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        return g

    def gemm(self, name, m, n, k, deps=(), batch=1, saved=0.0, forward_of=None, order=()):
        """(m x k) @ (k x n), ``batch`` times: 2mnk FLOPs each."""
        shape = f"{m}x{k} @ {k}x{n}" + (f" x{batch}" if batch > 1 else "")
        bpe = self.d.bpe
        return self.add(name, "gemm", deps, shape=shape, flops=2.0 * m * n * k * batch,
                        nbytes=batch * (m * k + k * n + m * n) * bpe, saved=saved,
                        forward_of=forward_of, price=("gemm", m, n, k, batch), order=order)

    def eltwise(self, name, rows, cols, nbytes, deps=(), saved=0.0, forward_of=None, order=()):
        return self.add(name, "elementwise", deps, shape=f"{rows}x{cols}", nbytes=nbytes,
                        saved=saved, forward_of=forward_of, price=("elementwise",), order=order)

    def collective(self, name, op, deps=(), forward_of=None, nbytes=None, shape=None):
        """A TP-group collective; by default of the (b*s, h) activation: size b*s*h*bpe.

        With tp = 1 there is no group and no op: the deps pass through to the next op.
        """
        d = self.d
        if d.tp == 1:
            return tuple(deps)
        nbytes = d.act_bytes if nbytes is None else nbytes
        return self.add(name, "collective", deps, stream="comm",
                        shape=shape or f"{d.T}x{d.h} {d.dtype}", comm_bytes=nbytes, collective=op,
                        forward_of=forward_of, price=("collective", op, nbytes))


def _flat(deps):
    """Dependency names, with nested tuples (a skipped collective's deps) spread, None dropped."""
    for dep in deps:
        if isinstance(dep, tuple):
            yield from _flat(dep)
        elif dep is not None:
            yield dep


# --------------------------------------------------------------------------- forward

def _norm_fwd(B: OpBuilder, name: str, dep) -> str:
    """Layer/RMS norm on Tn tokens: read x, write y; keeps its input."""
    d = B.d
    n = d.Tn * d.h * d.bpe
    return B.eltwise(name, d.Tn, d.h, 2 * n, (dep,), saved=n)


def _dropout_residual_fwd(B: OpBuilder, i: int, dep, skip, dropout: bool) -> str:
    """Dropout (read, write, 1-byte mask kept) then residual add (read 2, write 1)."""
    d = B.d
    n = d.Tn * d.h
    if dropout:
        dep = B.eltwise(f"fwd.dropout{i}", d.Tn, d.h, n * (2 * d.bpe + 1), (dep,), saved=n)
    return B.eltwise(f"fwd.residual{i}", d.Tn, d.h, 3 * n * d.bpe, (dep, skip))


def _attention_core_fwd(B: OpBuilder, qkv: str, fused: bool, dropout: bool) -> str:
    """Causal attention on heads/tp heads: 4 b s^2 (heads*head_dim)/tp FLOPs forward (QK^T, AV)."""
    d = B.d
    bh, s = d.b * d.heads, d.s
    if fused:
        io = d.T * (2 * d.q + 2 * d.kv) * d.bpe            # read q, k, v; write o
        return B.add("fwd.attn", "attention", (qkv,), flops=4.0 * d.b * s * s * d.q, nbytes=io,
                     shape=f"b={d.b} heads={d.heads} kv={d.kv_heads} s={s} d={d.d} causal",
                     saved=d.T * (d.q + 2 * d.kv) * d.bpe, price=("attention", s, s, d.d, True, False))
    scores = bh * s * s
    x = B.gemm("fwd.attn.scores", s, s, d.d, (qkv,), batch=bh, saved=d.T * (d.q + d.kv) * d.bpe)
    x = B.eltwise("fwd.attn.softmax", bh * s, s, 2 * scores * d.bpe, (x,),
                  saved=scores * d.bpe)
    if dropout:
        x = B.eltwise("fwd.attn.dropout", bh * s, s, scores * (2 * d.bpe + 1), (x,),
                      saved=scores * (1 + d.bpe))
    return B.gemm("fwd.attn.av", s, d.d, s, (x, qkv), batch=bh, saved=d.T * d.kv * d.bpe)


def _attention_fwd(B: OpBuilder, x, bare: bool, fused: bool, dropout: bool) -> str:
    d = B.d
    B.block = "attention"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm1", x)
    if d.sp:
        x = B.collective("fwd.qkv.all-gather", "all-gather", (x,))
    x = B.gemm("fwd.qkv", d.T, d.q + 2 * d.kv, d.h, (x,), saved=d.T * d.h * d.bpe)
    x = _attention_core_fwd(B, x, fused, dropout)
    x = B.gemm("fwd.proj", d.T, d.h, d.q, (x,), saved=d.T * d.q * d.bpe)
    x = B.collective(f"fwd.proj.{_row_op(d)}", _row_op(d), (x,))
    return x if bare else _dropout_residual_fwd(B, 1, x, skip, dropout)


def _mlp_fwd(B: OpBuilder, x, bare: bool, swiglu: bool, dropout: bool) -> str:
    d = B.d
    B.block = "mlp"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm2", x)
    if d.sp:
        x = B.collective("fwd.mlp_in.all-gather", "all-gather", (x,))
    inp = x
    x = B.gemm("fwd.mlp_in", d.T, d.f, d.h, (inp,), saved=d.T * d.h * d.bpe)
    n = d.T * d.f
    if swiglu:   # silu(gate) * up: read 2, write 1; keeps both inputs
        gate = B.gemm("fwd.mlp_gate", d.T, d.f, d.h, (inp,))
        x = B.eltwise("fwd.act", d.T, d.f, 3 * n * d.bpe, (x, gate), saved=2 * n * d.bpe)
    else:        # gelu: read 1, write 1; keeps its input
        x = B.eltwise("fwd.act", d.T, d.f, 2 * n * d.bpe, (x,), saved=n * d.bpe)
    x = B.gemm("fwd.mlp_out", d.T, d.h, d.f, (x,), saved=n * d.bpe)
    x = B.collective(f"fwd.mlp_out.{_row_op(d)}", _row_op(d), (x,))
    return x if bare else _dropout_residual_fwd(B, 2, x, skip, dropout)


def _row_op(d: Dims) -> str:
    """The collective after a row-parallel linear: all-reduce, or reduce-scatter with SP."""
    return "reduce-scatter" if d.sp else "all-reduce"


def _col_op(d: Dims) -> str:
    """Backward conjugate before a column-parallel linear: all-reduce, or reduce-scatter with SP."""
    return "reduce-scatter" if d.sp else "all-reduce"


# --------------------------------------------------------------------------- backward

def linear_backward(B: OpBuilder, name: str, m: int, n: int, k: int, grads, order=()):
    """Backward of the forward GEMM X (m x k) @ W (k x n): two GEMMs, each 2mnk FLOPs.

    dgrad: dX = dY W^T, (m x n) @ (n x k);   wgrad: dW = X^T dY, (k x m) @ (m x n).
    """
    fwd = f"fwd.{name}"
    dgrad = B.gemm(f"bwd.{name}.dgrad", m, k, n, grads, forward_of=fwd, order=order)
    wgrad = B.gemm(f"bwd.{name}.wgrad", k, n, m, grads, forward_of=fwd)
    return dgrad, wgrad


def _norm_residual_bwd(B: OpBuilder, i: int, grad, order, skip_grad) -> str:
    """Norm backward (read x and dy, write dx), then the residual's gradient sum (read 2, write 1)."""
    d = B.d
    n = d.Tn * d.h * d.bpe
    x = B.eltwise(f"bwd.norm{i}", d.Tn, d.h, 3 * n, (grad,), forward_of=f"fwd.norm{i}",
                  order=order)
    return B.eltwise(f"bwd.residual{i}", d.Tn, d.h, 3 * n, (x, skip_grad),
                     forward_of=f"fwd.residual{i}")


def _dropout_bwd(B: OpBuilder, i: int, grad) -> str:
    d = B.d
    n = d.Tn * d.h
    return B.eltwise(f"bwd.dropout{i}", d.Tn, d.h, n * (2 * d.bpe + 1), (grad,),
                     forward_of=f"fwd.dropout{i}")


def _attention_core_bwd(B: OpBuilder, grad, order, fused: bool, dropout: bool) -> tuple:
    """Backward of the attention core: 8 b s^2 (heads*head_dim)/tp FLOPs (twice the forward)."""
    d = B.d
    bh, s = d.b * d.heads, d.s
    if fused:   # read q, k, v, o, do; write dq, dk, dv
        io = d.T * (2 * (d.q + 2 * d.kv) + 2 * d.q) * d.bpe
        return (B.add("bwd.attn", "attention", (grad,), flops=8.0 * d.b * s * s * d.q,
                      nbytes=io, forward_of="fwd.attn", order=order,
                      shape=f"b={d.b} heads={d.heads} kv={d.kv_heads} s={s} d={d.d} causal",
                      price=("attention", s, s, d.d, True, True)),)
    scores = bh * s * s
    av = "fwd.attn.av"
    x = B.gemm("bwd.attn.av.dprobs", s, s, d.d, (grad,), batch=bh, forward_of=av, order=order)
    dv = B.gemm("bwd.attn.av.dv", s, d.d, s, (grad,), batch=bh, forward_of=av)
    if dropout:
        x = B.eltwise("bwd.attn.dropout", bh * s, s, scores * (2 * d.bpe + 1), (x,),
                      forward_of="fwd.attn.dropout")
    x = B.eltwise("bwd.attn.softmax", bh * s, s, 3 * scores * d.bpe, (x,),
                  forward_of="fwd.attn.softmax")
    dq = B.gemm("bwd.attn.scores.dq", s, d.d, s, (x,), batch=bh, forward_of="fwd.attn.scores")
    dk = B.gemm("bwd.attn.scores.dk", s, d.d, s, (x,), batch=bh, forward_of="fwd.attn.scores")
    return dq, dk, dv


def _row_parallel_bwd(B: OpBuilder, k: int, linear: str, in_features: int, grad, bare: bool,
                      dropout: bool):
    """A block's tail, backward: its dropout (full layers), the SP all-gather of the output
    gradient, then the row-parallel linear's dgrad and wgrad."""
    d = B.d
    if not bare and dropout:
        grad = _dropout_bwd(B, k, grad)
    if d.sp:
        grad = B.collective(f"bwd.{linear}.all-gather", "all-gather", (grad,),
                            forward_of=f"fwd.{linear}.reduce-scatter")
    return linear_backward(B, linear, d.T, d.h, in_features, (grad,))


def _column_input_bwd(B: OpBuilder, linear: str, dgrads) -> str:
    """The conjugate of the column-parallel linear's input: all-reduce (SP: reduce-scatter) of
    its input gradient."""
    d = B.d
    conj = f"fwd.{linear}.all-gather" if d.sp else f"fwd.{linear}"
    return B.collective(f"bwd.{linear}.{_col_op(d)}", _col_op(d), dgrads, forward_of=conj)


def _attention_bwd(B: OpBuilder, grad, bare: bool, fused: bool, dropout: bool) -> str:
    d = B.d
    B.block = "attention"
    out_grad = grad
    dgrad, wgrad = _row_parallel_bwd(B, 1, "proj", d.q, grad, bare, dropout)
    core = _attention_core_bwd(B, dgrad, (wgrad,), fused, dropout)
    dgrad, wgrad = linear_backward(B, "qkv", d.T, d.q + 2 * d.kv, d.h, core)
    x = _column_input_bwd(B, "qkv", (dgrad,))
    return x if bare else _norm_residual_bwd(B, 1, x, (wgrad,), out_grad)


def _mlp_bwd(B: OpBuilder, grad, bare: bool, swiglu: bool, dropout: bool) -> str:
    d = B.d
    B.block = "mlp"
    out_grad = grad
    dgrad, wgrad = _row_parallel_bwd(B, 2, "mlp_out", d.f, grad, bare, dropout)
    n = d.T * d.f   # swiglu: read dy, gate, up; write dgate, dup.  gelu: read dy, x; write dx
    x = B.eltwise("bwd.act", d.T, d.f, (5 if swiglu else 3) * n * d.bpe, (dgrad,),
                  forward_of="fwd.act", order=(wgrad,))
    dgrads, wgrads = zip(*[linear_backward(B, name, d.T, d.f, d.h, (x,))
                           for name in (("mlp_in", "mlp_gate") if swiglu else ("mlp_in",))])
    x = _column_input_bwd(B, "mlp_in", dgrads)
    return x if bare else _norm_residual_bwd(B, 2, x, wgrads, out_grad)


# --------------------------------------------------------------------------- public

def layer_dims(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
               sequence_parallel: bool = False) -> Dims:
    """Per-rank sizes, after checking that every sharded dimension divides by ``tp``."""
    model.check_tp(tp, seq_len, sequence_parallel)
    return Dims(b=micro_batch, s=seq_len, h=model.hidden, tp=tp, bpe=BYTES_PER_ELEMENT[dtype],
                dtype=dtype, heads=model.heads // tp, kv_heads=model.kv_heads // tp,
                d=model.head_dim, f=model.ffn_hidden // tp, sp=sequence_parallel)


def layer_graph(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
                sequence_parallel: bool = False, blocks: tuple[str, ...] = BLOCKS,
                bare: bool = False, dropout: float | None = None,
                attention: str | None = None, recompute: str = "none") -> nx.DiGraph:
    """One layer on one TP rank, forward then backward, as a DiGraph of unpriced ops.

    ``blocks`` picks the attention and/or MLP sub-blocks; ``bare`` leaves out norms, dropout
    and residuals (what a lone ParallelMLP / ParallelAttention runs). ``dropout`` and
    ``attention`` override the model's. Backward starts after the forward's last op: the
    output gradient exists only once the output does. ``recompute`` (none|selective|full)
    adds the recomputed ``rcp.`` ops to the backward (:mod:`tpsim.recompute`).
    """
    if not blocks or any(b not in BLOCKS for b in blocks):
        raise ValueError(f"blocks must be a non-empty subset of {BLOCKS}, not {blocks!r}")
    dims = layer_dims(model, tp, micro_batch, seq_len, dtype, sequence_parallel)
    p = model.dropout if dropout is None else dropout
    drop = p > 0 and not bare
    fused = (attention or model.attention) == "fused"
    swiglu = model.activation == "swiglu"
    B = OpBuilder(dims)
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
    return B.graph(dims=dims, tp=tp, blocks=tuple(blocks), bare=bare,
                   dropout=p if drop else 0.0, attention="fused" if fused else "unfused",
                   recompute=recompute)


def collectives_in(graph: nx.DiGraph) -> list[tuple[str, str, int]]:
    """(phase, op, nbytes) of every collective, in issue order; nbytes as nccl-tests counts it."""
    return [(a["phase"], a["collective"], int(a["comm_bytes"]))
            for _, a in graph.nodes(data=True) if a["kind"] == "collective"]
