"""An expert-parallel mixture-of-experts layer on torch.distributed (Megatron-core's MoELayer
with the all-to-all token dispatcher, in miniature).

Each of the p ranks of the EP group holds its own tokens (s, b, h) and E/p whole experts;
the router is replicated. Per rank, with T = s b tokens::

    router     logits = X W_r^T (T x E), probs = softmax, top-k (k experts per token), the k
               probabilities renormalised to sum to 1 (Mixtral, Qwen3's norm_topk_prob)
    permute    the T k (token, expert) pairs sorted by expert: rank j's experts are
               E/p consecutive ids, so the rows bound for each rank are contiguous
    counts     all-to-all of the (p x E/p) row counts: each rank learns how many rows it
               receives for each of its experts from each source (metadata, a few bytes)
    dispatch   all-to-all of the rows (T k x h sent in all, its own share included)
    experts    local expert e: act(X W1_e^T) W2_e^T on the rows routed to it (GeLU or SwiGLU)
    combine    all-to-all of the expert outputs back to their source ranks
    unpermute  Y_t = sum over t's k experts of p_{t,e} expert_e(X_t)

Backward runs the two all-to-alls the other way (:func:`tpsim.tp.mappings.all_to_all`). Expert
e's weights are cut from full weights made from ``seed + 1 + e`` and ``seed + 1 + E + e``
(:func:`~tpsim.tp.layers.full_weight`), so a single-device reference with every expert
(:func:`reference_moe`) built from the same seeds must agree.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from . import mappings as m
from .layers import ShardingError, _activation, _world, full_weight


def route(x2d: torch.Tensor, router: torch.Tensor, top_k: int):
    """(probabilities renormalised over the top k, expert ids), each (T, k)."""
    probs = (x2d @ router.t()).softmax(-1)
    top, ids = probs.topk(top_k, dim=-1)
    return top / top.sum(-1, keepdim=True), ids


def expert_weights(hidden: int, ffn: int, experts: int, activation: str, seed: int, dtype,
                   device) -> tuple[list, list]:
    """The full fc1 (n_in ffn x h) and fc2 (h x ffn) weights of every expert."""
    n_in = 2 if activation == "swiglu" else 1
    w1 = [full_weight(n_in * ffn, hidden, seed + 1 + e, dtype, device) for e in range(experts)]
    w2 = [full_weight(hidden, ffn, seed + 1 + experts + e, dtype, device)
          for e in range(experts)]
    return w1, w2


def reference_moe(x, router, w1s, w2s, top_k: int, activation: str):
    """The layer on one device with every expert: Y_t = sum_e p_{t,e} expert_e(X_t)."""
    shape = x.shape
    x2d = x.reshape(-1, shape[-1])
    weights, ids = route(x2d, router, top_k)
    y = torch.zeros_like(x2d)
    for e, (w1, w2) in enumerate(zip(w1s, w2s)):
        tok, slot = (ids == e).nonzero(as_tuple=True)
        out = _activation(activation, x2d[tok] @ w1.t()) @ w2.t()
        y = y.index_add(0, tok, out * weights[tok, slot].unsqueeze(1))
    return y.reshape(shape)


class ExpertParallelMoE(torch.nn.Module):
    """Router, all-to-all dispatch, E/p local experts, all-to-all combine (module docstring)."""

    def __init__(self, hidden: int, ffn_hidden: int, experts: int, top_k: int, group=None,
                 activation: str = "gelu", seed: int = 0, dtype=torch.float32, device="cpu"):
        super().__init__()
        p, r = _world(group)
        if experts % p:
            raise ShardingError(f"experts ({experts}) is not divisible by the expert-parallel "
                                f"size ({p})")
        if not 1 <= top_k <= experts:
            raise ShardingError(f"top_k must be 1 to experts ({experts}), got {top_k}")
        self.group, self.p, self.top_k, self.activation = group, p, top_k, activation
        self.experts, self.local = experts, experts // p
        self.router = torch.nn.Parameter(full_weight(experts, hidden, seed, dtype, device))
        w1, w2 = expert_weights(hidden, ffn_hidden, experts, activation, seed, dtype, device)
        mine = range(r * self.local, (r + 1) * self.local)
        self.fc1 = torch.nn.Parameter(torch.stack([w1[e] for e in mine]))   # (E_l, n_in f, h)
        self.fc2 = torch.nn.Parameter(torch.stack([w2[e] for e in mine]))   # (E_l, h, f)

    def _exchange_counts(self, ids: torch.Tensor) -> torch.Tensor:
        """(p, E_l) rows this rank receives from each source rank for each local expert."""
        sent = torch.bincount(ids, minlength=self.experts).reshape(self.p, self.local)
        if self.p == 1:
            return sent
        got = torch.empty_like(sent)
        dist.all_to_all_single(got, sent.contiguous(), group=self.group)
        return got

    def _experts(self, rows: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
        """Each local expert on its rows; ``rows`` arrive by source rank, then by expert."""
        local_ids = torch.arange(self.local).repeat(self.p).repeat_interleave(got.flatten())
        order = torch.argsort(local_ids, stable=True)
        per_expert = torch.bincount(local_ids, minlength=self.local).tolist()
        outs = [_activation(self.activation, chunk @ self.fc1[e].t()) @ self.fc2[e].t()
                for e, chunk in enumerate(rows[order].split(per_expert))]
        return torch.cat(outs)[torch.argsort(order)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1])                                    # (T, h)
        weights, ids = route(x2d, self.router, self.top_k)                # (T, k) each
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)                          # (T k,) by expert
        token = order // self.top_k
        got = self._exchange_counts(flat)
        sent = torch.bincount(flat // self.local, minlength=self.p).tolist()
        received = got.sum(1).tolist()
        rows = m.all_to_all(x2d[token], received, sent, self.group)       # dispatch
        out = m.all_to_all(self._experts(rows, got), sent, received, self.group)   # combine
        y = torch.zeros_like(x2d).index_add(0, token, out * weights.flatten()[order].unsqueeze(1))
        return y.reshape(shape)


__all__ = ["ExpertParallelMoE", "reference_moe", "route", "expert_weights"]
