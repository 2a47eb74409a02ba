"""Microbenchmarks of the compute kernels tpsim prices, each run the way the real layers run it
(torch).

The list of kernels is not written here: it is the op graph tpsim prices for each FIT shape's
blocks (:func:`tpsim.training.predict.predict_block`, forward and backward), so the fit sees every GEMM
(forward ``x W^T``, dgrad ``dY W``, wgrad ``dY^T X``, the attention core's batched GEMMs in
both passes), every elementwise kernel (activation and softmax, forward and backward) and the
fused attention kernels, in the memory layouts autograd uses. Each sample is priced as the graph
prices its op (e.g. the wgrad GEMM with its fp32 accumulation); an op with no kernel here is an
error, so a new op in the graph cannot slip out of the fit.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from tpsim.layer.ops import Gemm, MemoryBound
from tpsim.training.predict import predict_block
from tpsim.cluster.topology import BYTES_PER_ELEMENT, Device, Level, Topology

from bench import Item
from report import model_for

COLD_BYTES = 96 * 2**20      # more than a server CPU's last-level cache share
LINEARS = ("qkv", "proj", "mlp_in", "mlp_out")


def _any_topology(tp: int, dtype: str) -> Topology:
    """A topology that holds ``tp`` ranks and lists ``dtype``: the ops do not depend on it
    (1 TFLOP/s, 1 GiB, 1 GB/s: any values a topology file may hold)."""
    return Topology("ops", "op enumeration", Device("any", {dtype: 1e12}, 2.0**30, 1e9),
                    (Level("any", tp, 1e9, 0.0),))


def graph_ops(shape, block: str, tp: int, dtype: str, attention: str) -> list[tuple]:
    """(name, op) of every compute op tpsim's graph prices for ``block`` of ``shape``, as
    :func:`tpsim.training.predict.predict_block` builds them."""
    p = predict_block(model_for(shape, attention), _any_topology(tp, dtype), tp, block,
                      shape.batch, shape.seq, dtype, attention=attention)
    sim = p.run
    return [(node.name, op) for node, op in zip(sim.template.nodes, sim.ops)
            if op.stream == "compute"]


def _rotating(make, fn):
    """``fn`` on the next of enough input sets (``make()``) to overflow the last-level cache: a
    kernel inside a layer reads what the previous kernel just wrote, not its last call's data."""
    data = [make()]
    nbytes = sum(x.numel() * x.element_size() for x in data[0])
    data += [make() for _ in range(min(16, -(-COLD_BYTES // max(nbytes, 1))) - 1)]
    turn = itertools.cycle(range(len(data)))
    return lambda: fn(*data[next(turn)])


def _gemm(m, n, k, batch, layout, r):
    """C (m, n) = A B: "nt" A (m,k) B^T with B (n,k) stored (x W^T), "nn" as stored, "tn" A^T
    with A (k,m) stored (dY^T X)."""
    lead = (batch,) if batch > 1 else ()
    a = r(*lead, k, m).transpose(-1, -2) if layout == "tn" else r(*lead, m, k)
    b = r(*lead, n, k).transpose(-1, -2) if layout == "nt" else r(*lead, k, n)
    return lambda: torch.matmul(a, b)


class Core:
    """The attention core's tensors as ParallelAttention's unfused path (Megatron's) holds them:
    the QKV output (s, b, ng, (g+2) d) split into views, q, k, v reshaped to (s, b*np, d) and
    transposed into the batched GEMMs, the scores (b*np, s, s), the context (b*np, s, d)."""

    def __init__(self, shape, tp, r):
        self.b, self.s, self.d = shape.batch, shape.seq, shape.head_dim
        self.ng = shape.kv_heads // tp
        self.g = shape.heads // shape.kv_heads
        self.hq = self.ng * self.g
        self.bh = self.b * self.hq
        self.r = r
        self.alpha = self.d ** -0.5

    def _qkv(self):
        """q, k, v (s, b*np, d) as the layer's GEMMs read them, and the split's views."""
        s, b, ng, g, d = self.s, self.b, self.ng, self.g, self.d
        q, k, v = torch.split(self.r(s, b, ng, (g + 2) * d), [g * d, d, d], dim=3)
        views = (q, k, v)
        if g > 1:
            k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
        q = q.reshape(s, b, -1, d).reshape(s, self.bh, d)
        return q, k.reshape(s, self.bh, d), v.reshape(s, self.bh, d), views

    def _grads(self):
        """dQ, dK, dV as the split's backward concatenates them (s, b, ng, .)."""
        s, b, ng, g, d, r = self.s, self.b, self.ng, self.g, self.d, self.r
        dq = r(self.bh, s, d).transpose(0, 1).reshape(s, b, ng, g * d)
        if g > 1:
            return dq, r(s, b, ng, d), r(s, b, ng, d)
        dk = r(self.bh, d, s).transpose(1, 2).transpose(0, 1).reshape(s, b, ng, d)
        return dq, dk, r(self.bh, s, d).transpose(0, 1).reshape(s, b, ng, d)

    def kernels(self) -> dict:
        """The core's kernels as unfused_causal_attention and its autograd run them: the
        softmax op is Megatron's scale-mask-softmax, the in-place mask fill and the softmax
        (backward: softmax's, then the fill's, which zeroes the masked gradients); the layout
        copies of :mod:`tpsim.layer.unfused`."""
        from tpsim.tp.layers import MASKED_SCORE, causal_mask
        bh, s, d, r, g, b, ng = self.bh, self.s, self.d, self.r, self.g, self.b, self.ng
        q, k, v, (qv, kv_, _) = self._qkv()
        qt, kt, vt = (t.transpose(0, 1) for t in (q, k, v))            # (b*np, s, d)
        do = r(s, bh, d).transpose(0, 1)          # the context copy's gradient: a view
        p, ds = r(bh, s, s).softmax(-1), r(bh, s, s)
        mask = causal_mask(s, q.device)
        aten = torch.ops.aten

        def masked_softmax(x):
            x.masked_fill_(mask, MASKED_SCORE)
            return x.softmax(-1)

        def masked_softmax_bwd(dy, y):
            dx = aten._softmax_backward_data(dy, y, -1, y.dtype)
            return dx.masked_fill(mask, 0.0)

        def scale(*shape):
            return (lambda: (r(*shape),), lambda x: x * self.alpha)

        def repeat_sum():
            return (lambda: (r(s, b, ng * g, d),), lambda x: x.view(s, b, ng, g, d).sum(3))
        return {
            "fwd.attn.query": lambda: qv.reshape(s, b, -1, d).reshape(s, bh, d),
            "fwd.attn.repeat_kv.k": lambda: kv_.repeat_interleave(g, dim=2),
            "fwd.attn.repeat_kv.v": lambda: kv_.repeat_interleave(g, dim=2),
            "fwd.attn.scores": lambda: torch.baddbmm(torch.empty_like(p), qt, kt.transpose(1, 2),
                                                     beta=0.0, alpha=self.alpha),
            "fwd.attn.av": lambda: torch.bmm(p, vt),
            "fwd.attn.contiguous": (lambda: (r(bh, s, d),), lambda c: c.view(
                b, bh // b, s, d).permute(2, 0, 1, 3).contiguous()),
            "bwd.attn.av.dprobs": lambda: torch.bmm(do, vt.transpose(1, 2)),
            "bwd.attn.av.dv": lambda: torch.bmm(p.transpose(1, 2), do),
            "bwd.attn.scores.dq": lambda: torch.bmm(ds, kt),
            "bwd.attn.scores.dk": lambda: torch.bmm(qt.transpose(1, 2), ds),
            "bwd.attn.scale.dq": scale(bh, s, d),
            "bwd.attn.scale.dk": scale(bh, d, s),
            "bwd.attn.repeat_kv.k": repeat_sum(),
            "bwd.attn.repeat_kv.v": repeat_sum(),
            "bwd.attn.cat": (self._grads, lambda *t: torch.cat(t, dim=3)),
            "fwd.attn.softmax": (lambda: (r(bh, s, s),), masked_softmax),
            "bwd.attn.softmax": (lambda: (r(bh, s, s), r(bh, s, s).softmax(-1)), masked_softmax_bwd),
        }


def _activation(shape, tp, r) -> dict:
    """The MLP activation as ParallelMLP runs it: gelu on (T, f); SwiGLU on the fc1 output
    (T, 2f) split in two views, and its autograd backward (two muls, silu_backward, the cat
    that joins the two gradients)."""
    t, f = shape.seq * shape.batch, shape.ffn // tp
    aten = torch.ops.aten
    if shape.activation == "gelu":
        return {"fwd.act": (lambda: (r(t, f),), F.gelu),
                "bwd.act": (lambda: (r(t, f), r(t, f)), lambda dy, x: aten.gelu_backward(dy, x))}

    def swiglu(y):
        gate, up = y.chunk(2, dim=-1)
        return F.silu(gate) * up

    def swiglu_bwd(dy, gate, up, silu):
        return torch.cat([aten.silu_backward(dy * up, gate), dy * silu], dim=-1)
    return {"fwd.act": (lambda: (r(t, 2 * f),), swiglu),
            "bwd.act": (lambda: (r(t, f), r(t, f), r(t, f), r(t, f)), swiglu_bwd)}


def _fused(shape, tp, r) -> dict:
    """torch's fused attention (flash) forward, and its backward alone."""
    b, s, d = shape.batch, shape.seq, shape.head_dim
    hq, hkv = shape.heads // tp, shape.kv_heads // tp
    q, k, v = (r(b, h, s, d).requires_grad_() for h in (hq, hkv, hkv))
    gqa = {"enable_gqa": True} if hq != hkv else {}
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa)
    do = torch.randn_like(o)
    return {"fwd.attn": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, **gqa),
            "bwd.attn": lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True)}


def kernel_for(name: str, op, table: dict, r):
    """The callable that runs graph op ``name`` (``op`` its priced form) as the layer does."""
    parts = name.split(".")
    if parts[1] in LINEARS and isinstance(op, Gemm):
        if parts[0] == "fwd":
            return _gemm(op.m, op.n, op.k, op.batch, "nt", r)
        if parts[-1] == "dgrad":
            return _gemm(op.m, op.n, op.k, op.batch, "nn", r)
        if parts[-1] == "wgrad":         # torch forms dW (out, in) = dY^T X: (n, m, k) of the op
            return _gemm(op.n, op.m, op.k, op.batch, "tn", r)
    entry = table.get(name)
    if entry is None:
        raise KeyError(f"graph op {name} ({op.kind} {op.shape}) has no microbenchmark in "
                       "validate/kernels.py")
    if isinstance(entry, tuple):
        return _rotating(*entry)
    return entry


def block_items(shape, block: str, tp: int, dtype_name: str, attention: str, dtype,
                device) -> list[Item]:
    """One timing item per compute op of the block (both passes); ``info`` carries the op."""
    gen = torch.Generator(device="cpu").manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)      # noqa: E731
    table = {**_activation(shape, tp, r)} if block == "mlp" else (
        Core(shape, tp, r).kernels() if attention == "unfused" else _fused(shape, tp, r))
    items = []
    for name, op in graph_ops(shape, block, tp, dtype_name, attention):
        if isinstance(op, MemoryBound) and not op.nbytes:   # a view: no kernel runs
            continue
        fn = kernel_for(name, op, table, r)
        items.append(Item(f"kern/{shape.label()}/{name}", fn,
                          {"op_name": name, "kind": op.kind, "shape": op.shape, "op": op,
                           "fit_shape": shape.label()}))
    return items


def stream_items(shapes, tp: int, dtype_name: str, dtype, device) -> list[Item]:
    """A copy (read n, write n elements, no arithmetic) of each FIT shape's activation tensor,
    (T, f/p) and (T, 2f/p): the memory rate alone, apart from the kernels' arithmetic."""
    gen = torch.Generator(device="cpu").manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)      # noqa: E731
    items = []
    for sh in shapes:
        t, f = sh.seq * sh.batch, sh.ffn // tp
        for cols in (f, 2 * f):
            op = MemoryBound(2 * t * cols * BYTES_PER_ELEMENT[dtype_name], (t, cols))
            fn = _rotating(lambda t=t, c=cols: (r(t, c), r(t, c)), lambda x, y: y.copy_(x))
            items.append(Item(f"kern/stream/{t}x{cols}", fn,
                              {"op_name": "stream.copy", "kind": op.kind, "shape": op.shape,
                               "op": op, "fit_shape": sh.label()}))
    return items


def grid_items(sizes, dtype_name: str, dtype, device) -> list[Item]:
    """x W^T GEMMs on a grid of sizes: the size curve between and beyond the blocks' GEMMs."""
    gen = torch.Generator(device="cpu").manual_seed(6)
    r = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)      # noqa: E731
    return [_gemm_item("grid", m, n, k, 1, "nt", dtype_name, r)
            for m, n, k in itertools.product(sizes, repeat=3)]


def thin_items(thin, dtype_name: str, dtype, device) -> list[Item]:
    """Batched GEMMs shaped like the attention core's, (batch, seq, head_dim) each: scores
    (seq x seq x head_dim, ``q k^T``) and context (seq x head_dim x seq, ``P v``)."""
    gen = torch.Generator(device="cpu").manual_seed(8)
    r = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)      # noqa: E731
    return [_gemm_item("thin", m, n, k, batch, layout, dtype_name, r)
            for batch, s, d in thin for (m, n, k), layout in (((s, s, d), "nt"), ((s, d, s), "nn"))]


def _gemm_item(label: str, m: int, n: int, k: int, batch: int, layout: str, dtype_name: str,
               r) -> Item:
    """One timed GEMM of a fit's own shapes (``label``: grid or thin), priced as tpsim's
    :class:`Gemm` of the same size; ``r(*shape)`` draws its operands."""
    op = Gemm(m, n, k, dtype_name, batch)
    dims = (batch, m, n, k) if label == "thin" else (m, n, k)   # the names reports keep
    return Item(f"kern/{label}/{'x'.join(map(str, dims))}", _gemm(m, n, k, batch, layout, r),
                {"op_name": label, "kind": "gemm", "shape": op.shape, "op": op,
                 "fit_shape": label})
