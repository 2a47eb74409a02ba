"""Context-parallel causal attention on torch.distributed: the K/V ring (Transformer Engine's
``AttnFuncWithCPAndKVP2P``, the exchange tpsim prices in :mod:`tpsim.layer.context_parallel`).

Each of the p ranks of ``group`` holds 2 of the sequence's 2p chunks, r and 2p - 1 - r
(:func:`chunk_pair`: the causal mask's work is then the same on every rank). Rank r keeps its
queries and passes its K/V around the ring: at step i it attends to the K/V of rank
(r - i) mod p (:class:`_RingShift`: send to the next rank, receive from the previous one),
masked by the chunks' global positions, and merges the block into its output by the blocks'
log-sum-exp (flash attention's rescaling):

    lse = logaddexp(lse, lse_i),   o = o exp(lse_old - lse) + o_i exp(lse_i - lse)

The ring's backward is autograd's: the shift's adjoint sends each K/V gradient back the way
its K/V came (dK/dV around the ring, p - 1 transfers); Transformer Engine instead re-sends the
K/V in its backward beside the dK/dV, to keep no copy of the others' K/V.

Shapes: q (batch, heads, s/p, head_dim), k and v (batch, kv_heads, s/p, head_dim), heads a
multiple of kv_heads (grouped-query attention repeats each K/V head).
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .mappings import _issue, _nbytes


def _ring(group) -> tuple[int, int, int, int]:
    """(size, index, global rank of the next, of the previous) in ``group``."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    glob = (lambda i: dist.get_global_rank(group, i)) if group is not None else (lambda i: i)
    return p, r, glob((r + 1) % p), glob((r - 1) % p)


def _shift(x: torch.Tensor, to: int, frm: int, phase: str) -> torch.Tensor:
    """Send ``x`` to global rank ``to`` while receiving its like from ``frm``."""
    x = x.contiguous()
    out = torch.empty_like(x)

    def run():
        reqs = [dist.isend(x, to), dist.irecv(out, frm)]
        for req in reqs:
            req.wait()
    _issue(phase, "send-recv", _nbytes(x), run, x)
    return out


class _RingShift(torch.autograd.Function):
    """Forward: each rank's tensor to the next rank of the ring; backward: each gradient to
    the previous one (the shift's adjoint)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        _, _, nxt, prev = _ring(group)
        return _shift(x, nxt, prev, "forward")

    @staticmethod
    def backward(ctx, grad):
        _, _, nxt, prev = _ring(ctx.group)
        return _shift(grad, prev, nxt, "backward"), None


def chunk_pair(x: torch.Tensor, p: int, r: int, dim: int = 2) -> torch.Tensor:
    """Rank r's tokens of a whole sequence along ``dim``: chunks r and 2p - 1 - r of 2p."""
    chunks = x.chunk(2 * p, dim=dim)
    return torch.cat([chunks[r], chunks[2 * p - 1 - r]], dim=dim)


def positions(s_local: int, p: int, r: int, device=None) -> torch.Tensor:
    """The global positions of rank r's ``s_local`` tokens (:func:`chunk_pair`)."""
    c = s_local // 2
    idx = torch.arange(c, device=device)
    return torch.cat([r * c + idx, (2 * p - 1 - r) * c + idx])


def _block(q, k, v, causal_ok: torch.Tensor):
    """Attention of q on one K/V block: (output, log-sum-exp per query); masked keys get the
    dtype's lowest finite score, so a fully masked block weighs exp(-huge) = 0 in the merge."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~causal_ok, torch.finfo(scores.dtype).min)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.softmax(scores, dim=-1) @ v, lse


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   group=None) -> torch.Tensor:
    """Causal attention of this rank's queries on the whole sequence's keys (module
    docstring): the output for this rank's tokens, (batch, heads, s/p, head_dim)."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    if q.shape[2] % 2:
        raise ValueError(f"each rank holds two chunks: s/p ({q.shape[2]}) must be even")
    rep = q.shape[1] // k.shape[1]
    kv = torch.stack([k, v])
    mine = positions(q.shape[2], p, r, q.device)
    out = lse = None
    for i in range(p):
        if i:
            kv = _RingShift.apply(kv, group)
        theirs = positions(q.shape[2], p, (r - i) % p, q.device)
        ok = theirs[None, :] <= mine[:, None]
        kk, vv = (t.repeat_interleave(rep, dim=1) for t in kv)
        o_i, lse_i = _block(q, kk, vv, ok)
        if out is None:
            out, lse = o_i, lse_i
            continue
        new = torch.logaddexp(lse, lse_i)
        out = out * torch.exp(lse - new) + o_i * torch.exp(lse_i - new)
        lse = new
    return out


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of the whole sequence on one rank (torch's SDPA)."""
    rep = q.shape[1] // k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), is_causal=True)


__all__ = ["ring_attention", "reference_attention", "chunk_pair", "positions"]
