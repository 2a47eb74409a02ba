"""Correctness of the tensor-parallel layers against a single-device reference (torch only).

Every rank builds the full weights from the same seeds, runs the reference on the full input,
runs its shard of the parallel layer, and compares: the forward output, the input gradient and
every parameter gradient (each shard against the same slice of the full gradient). Run inside an
initialised process group (the validate/ harness and the tests both call :func:`check_all`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import mappings as m
from .layers import (ColumnParallelLinear, ParallelAttention, ParallelMLP, RowParallelLinear,
                     column_shard, full_weight, qkv_shard)
from .moe import ExpertParallelMoE, expert_weights, reference_moe

# max |parallel - reference| / max |reference| allowed, per dtype: summation order differs
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 3e-2,
             torch.float16: 5e-3}


@dataclass(frozen=True)
class CheckResult:
    """One compared tensor: which layer, which tensor, its relative error and the tolerance."""
    layer: str
    tensor: str
    rel_err: float
    tol: float

    @property
    def ok(self) -> bool:
        return math.isfinite(self.rel_err) and self.rel_err <= self.tol

    def as_dict(self) -> dict:
        return {"layer": self.layer, "tensor": self.tensor, "rel_err": self.rel_err,
                "tol": self.tol, "ok": self.ok}


def reference_mlp(x, w1, w2, activation):
    """act(x W1^T) W2^T on one device; W1 is [gate; up] for SwiGLU."""
    y = x @ w1.t()
    if activation == "gelu":
        y = F.gelu(y)
    else:
        gate, up = y.chunk(2, dim=-1)
        y = F.silu(gate) * up
    return y @ w2.t()


def reference_attention(x, wqkv, wo, heads, kv_heads):
    """Causal multi-head (grouped-query) attention on one device, x (s, b, h)."""
    s, b, h = x.shape
    d = h // heads
    q, k, v = (x @ wqkv.t()).split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    q, k, v = (t.reshape(s, b, -1, d).permute(1, 2, 0, 3) for t in (q, k, v))
    k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    mask = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
    o = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
    return o.permute(2, 0, 1, 3).reshape(s, b, heads * d) @ wo.t()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _seq_slice(t, group, sp):
    if not sp:
        return t
    p, r = dist.get_world_size(group), dist.get_rank(group)
    return t.chunk(p, dim=0)[r]


def _compare(name, layer, ref_fn, full_ws, shard_of, x, dy, group, sp, dtype):
    """Run the reference and the parallel ``layer``; compare y, dx and each weight gradient."""
    tol = TOLERANCE.get(dtype, 1e-4)
    xr = x.clone().requires_grad_()
    wr = [w.clone().requires_grad_() for w in full_ws]
    yr = ref_fn(xr, *wr)
    yr.backward(dy)
    xl = _seq_slice(x, group, sp).clone().requires_grad_()
    y = layer(xl)
    y.backward(_seq_slice(dy, group, sp).contiguous())
    out = [CheckResult(name, "output", _rel(y, _seq_slice(yr, group, sp)), tol),
           CheckResult(name, "input grad", _rel(xl.grad, _seq_slice(xr.grad, group, sp)), tol)]
    for (pname, param), w in zip(layer.named_parameters(), wr):
        out.append(CheckResult(name, f"{pname} grad", _rel(param.grad, shard_of[pname](w.grad)), tol))
    return out


def check_all(group=None, dtype=torch.float32, device="cpu", seq=8, batch=2, hidden=32,
              heads=4, kv_heads=2, ffn=64, seed=1234) -> list[CheckResult]:
    """Column (exercise 1), row, MLP (GELU, SwiGLU) and attention (MHA, GQA), with and without
    sequence parallelism; returns one :class:`CheckResult` per compared tensor."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(seq, batch, hidden, generator=gen).to(device=device, dtype=dtype)
    dy = torch.randn(seq, batch, hidden, generator=gen).to(device=device, dtype=dtype)
    fw = lambda o, i, s: full_weight(o, i, s, dtype, device)            # noqa: E731
    rows = lambda w: w[:, r * w.shape[1] // p:(r + 1) * w.shape[1] // p]  # noqa: E731
    cols = lambda parts: (lambda w: column_shard(w, parts, p, r))        # noqa: E731
    kw = dict(group=group, dtype=dtype, device=device)
    results = []

    col = ColumnParallelLinear(hidden, ffn, seed=seed, gather_output=True, **kw)
    results += _compare("column (gathered)", col, lambda xx, w: xx @ w.t(), [fw(ffn, hidden, seed)],
                        {"weight": cols((ffn,))}, x, torch.randn(seq, batch, ffn, generator=gen)
                        .to(device=device, dtype=dtype), group, False, dtype)
    row = RowParallelLinear(hidden, ffn, seed=seed, **kw)
    xs = m.scatter_to_tensor_parallel_region(x, group)                  # the split input
    with torch.no_grad():
        y = row(xs)
    results.append(CheckResult("row", "output", _rel(y, x @ fw(ffn, hidden, seed).t()),
                               TOLERANCE.get(dtype, 1e-4)))
    for sp in (False, True):
        tag = " +SP" if sp else ""
        for act in ("gelu", "swiglu"):
            parts = (ffn, ffn) if act == "swiglu" else (ffn,)
            mlp = ParallelMLP(hidden, ffn, activation=act, seed=seed, sequence_parallel=sp, **kw)
            full = [fw(sum(parts), hidden, seed), fw(hidden, ffn, seed + 1)]
            results += _compare(f"mlp {act}{tag}", mlp,
                                lambda xx, w1, w2, a=act: reference_mlp(xx, w1, w2, a), full,
                                {"fc1.weight": cols(parts), "fc2.weight": rows}, x, dy, group, sp,
                                dtype)
        for kv, core in ((heads, "fused"), (kv_heads, "fused"), (kv_heads, "unfused")):
            d = hidden // heads
            parts = (heads * d, kv * d, kv * d)
            att = ParallelAttention(hidden, heads, kv, seed=seed, sequence_parallel=sp, core=core,
                                    **kw)
            full = [fw(sum(parts), hidden, seed), fw(hidden, heads * d, seed + 1)]
            results += _compare(f"attention {core} kv={kv}{tag}", att,
                                lambda xx, wq, wo, k=kv: reference_attention(xx, wq, wo, heads, k),
                                full, {"qkv.weight": lambda w, k=kv: qkv_shard(w, heads, k, p, r),
                                       "proj.weight": rows}, x, dy,
                                group, sp, dtype)
    return results


def check_moe(group=None, dtype=torch.float32, device="cpu", seq=8, batch=2, hidden=32,
              ffn=64, experts_per_rank=2, top_k=2, seed=1234) -> list[CheckResult]:
    """The expert-parallel MoE layer (:mod:`tpsim.tp.moe`, GeLU and SwiGLU experts) against
    :func:`~tpsim.tp.moe.reference_moe` with every expert on one device. Each rank's tokens
    are its slice of one full input made from ``seed``; the reference runs on all of them, so
    each local expert's gradient covers every rank's tokens. The router is replicated and
    sees only the rank's own tokens: its gradient is summed over the group first (what data
    parallelism's all-reduce does) and compared with the reference's."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    experts, tol = experts_per_rank * p, TOLERANCE.get(dtype, 1e-4)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(p * seq, batch, hidden, generator=gen).to(device=device, dtype=dtype)
    dy = torch.randn(p * seq, batch, hidden, generator=gen).to(device=device, dtype=dtype)
    mine = slice(r * seq, (r + 1) * seq)
    results = []
    for act in ("gelu", "swiglu"):
        layer = ExpertParallelMoE(hidden, ffn, experts, top_k, group, act, seed, dtype, device)
        w1, w2 = expert_weights(hidden, ffn, experts, act, seed, dtype, device)
        full = [full_weight(experts, hidden, seed, dtype, device), *w1, *w2]
        full = [w.clone().requires_grad_() for w in full]
        xr = x.clone().requires_grad_()
        yr = reference_moe(xr, full[0], full[1:1 + experts], full[1 + experts:], top_k, act)
        yr.backward(dy)
        xl = x[mine].clone().requires_grad_()
        y = layer(xl)
        y.backward(dy[mine])
        dist.all_reduce(layer.router.grad, group=group)
        local = range(r * layer.local, (r + 1) * layer.local)
        name = f"moe {act} ep={p}"
        results += [CheckResult(name, "output", _rel(y, yr[mine]), tol),
                    CheckResult(name, "input grad", _rel(xl.grad, xr.grad[mine]), tol),
                    CheckResult(name, "router grad (summed)", _rel(layer.router.grad,
                                                                   full[0].grad), tol),
                    CheckResult(name, "fc1 grad", _rel(layer.fc1.grad, torch.stack(
                        [full[1 + e].grad for e in local])), tol),
                    CheckResult(name, "fc2 grad", _rel(layer.fc2.grad, torch.stack(
                        [full[1 + experts + e].grad for e in local])), tol)]
    return results


def failures(results: list[CheckResult]) -> list[str]:
    """One line per tensor that does not match, empty when all do."""
    return [f"{c.layer}: {c.tensor}: relative error {c.rel_err:.3g} > tolerance {c.tol:g}"
            for c in results if not c.ok]
