"""The mixture-of-experts MLP slot of a serving layer, forward only, with expert parallelism.

The job: ``ep`` attention replicas of ``tp`` GPUs each (SGLang's data-parallel attention, vLLM's
DP + EP), each replica serving its own T tokens; the MoE layers split the E routed experts
over the ``ep`` ranks of an EP group (one rank per replica: Megatron's rank order, EP after
TP), E_l = E / ep whole experts per rank, each expert's width split over the replica's tp ranks
(expert TP = tp). Per rank (the T tokens of its replica, replicated over its TP group)::

    router       GEMM  T x E x h                     logits of every expert
    top-k        memory-bound: read T E logits, write T k probabilities and indices (8 bytes)
    dispatch     all-to-all over EP of S = T k h bpe (each token copied once per chosen expert)
    permute      memory-bound: read and write R x h, R = T k rows this rank's experts receive
    fc1          grouped GEMM, D_l groups of m_e x (n_in f_e / tp) x h
    act          memory-bound on R x f_e / tp
    fc2          grouped GEMM, D_l groups of m_e x h x (f_e / tp)
    combine      all-to-all over EP of S (the rows back to their replicas)
    unpermute    memory-bound: read R x h and the T k probabilities, write T x h
    shared       (S shared experts) GEMM T x (n_in S f_s / tp) x h, act, GEMM T x h x (S f_s / tp),
                 added to the routed output (read 2, write 1)
    all-reduce   the T x h partial sums over TP (expert TP), as the dense MLP's

A balanced router sends each rank R = (ep T) k / ep = T k rows. Only the experts some token
chose are run and have their weights read: with the ep T tokens of the EP group each choosing
k distinct experts of E uniformly and independently (uniform routing: the load-balancing aim;
real routers are skewed, which lowers D), an expert is missed by one token with probability
1 - k/E, so the expected number of distinct experts hit is

    D(B) = E (1 - (1 - k/E)^B)         B = ep T draws of k    (:func:`expected_distinct_experts`)

(D(1) = k, D -> E as B grows) and a rank's D_l = D / ep of them run, m_e = ceil(R / D_l)
rows each, rounded to whole groups (D_l = max(1, round(D / ep))). Decode at batch 1 therefore
reads k experts' weights, not E; a long prefill reads all of them.
"""
from __future__ import annotations

import math

from .ops import act_arith
from .template import Builder


def expected_distinct_experts(experts: int, top_k: int, draws: float) -> float:
    """D = E (1 - (1 - k/E)^B): distinct experts hit by B tokens routing to k of E each,
    uniformly (module docstring). D(0) = 0, D(1) = k, D -> E as B -> inf."""
    return experts * (1.0 - (1.0 - top_k / experts) ** draws)


def routed_rows(d) -> int:
    """R = T k: the rows this rank's local experts receive from a balanced router."""
    return d.T * d.topk


def experts_hit(d) -> int:
    """D_l = max(1, round(D(ep T) / ep)): the local experts some token of the EP group chose."""
    hit = expected_distinct_experts(d.experts * d.ep, d.topk, d.ep * d.T) / d.ep
    return max(1, min(d.experts, round(hit)))


def rows_per_expert(d) -> int:
    """m_e = ceil(R / D_l)."""
    return math.ceil(routed_rows(d) / experts_hit(d))


def _dispatched(d):
    """S = T k h bpe: the copies of this replica's tokens a rank sends (its own slice
    included), nccl-tests' all-to-all size."""
    rows = routed_rows(d)
    return rows * d.h * d.bpe, (rows, d.h), d.act_dtype


def _grouped(B: Builder, name: str, size, deps) -> str:
    """A grouped GEMM over the D_l experts hit, ``size(d)`` -> (n, k) per expert."""
    return B.gemm(name, lambda d: (rows_per_expert(d), *size(d), experts_hit(d)), deps,
                  linear=True)


def _shared(B: Builder, x, n_in: int) -> str:
    x = B.gemm("fwd.shared.fc1", lambda d: (d.T, n_in * d.fs, d.h), (x,), linear=True)
    x = B.eltwise("fwd.shared.act", lambda d: (d.T, d.fs, (n_in + 1) * d.T * d.fs * d.bpe), (x,))
    return B.gemm("fwd.shared.fc2", lambda d: (d.T, d.h, d.fs), (x,), linear=True)


def infer_moe_fwd(B: Builder, x, swiglu: bool, shared: bool) -> str:
    """The slot's forward from the norm's output ``x`` (module docstring); returns the
    all-reduced output (no op on a TP group of one)."""
    n_in = 2 if swiglu else 1
    router = B.gemm("fwd.router", lambda d: (d.T, d.experts * d.ep, d.h), (x,))
    topk = B.eltwise("fwd.router.topk", lambda d: (d.T, d.experts * d.ep, d.T * d.experts * d.ep
                                                   * d.bpe + d.T * d.topk * 8), (router,))
    y = B.collective("fwd.moe.dispatch", "all-to-all", (x, topk), size=_dispatched, group="ep")
    y = B.eltwise("fwd.moe.permute", lambda d: (routed_rows(d), d.h,
                                                2 * routed_rows(d) * d.h * d.bpe), (y,))
    y = _grouped(B, "fwd.experts.fc1", lambda d: (n_in * d.fe, d.h), (y,))
    y = B.eltwise("fwd.experts.act", lambda d: (routed_rows(d), d.fe, (n_in + 1) * routed_rows(d)
                                                * d.fe * d.bpe), (y,), arith=act_arith(n_in))
    y = _grouped(B, "fwd.experts.fc2", lambda d: (d.h, d.fe), (y,))
    y = B.collective("fwd.moe.combine", "all-to-all", (y,), size=_dispatched, group="ep")
    y = B.eltwise("fwd.moe.unpermute", lambda d: (d.T, d.h, (routed_rows(d) + d.T) * d.h * d.bpe
                                                  + d.T * d.topk * 4), (y, topk))
    if shared:
        s = _shared(B, x, n_in)
        y = B.eltwise("fwd.shared.add", lambda d: (d.T, d.h, 3 * d.T * d.h * d.bpe), (y, s))
    return B.collective("fwd.moe.all-reduce", "all-reduce", (y,))


__all__ = ["expected_distinct_experts", "infer_moe_fwd", "experts_hit", "rows_per_expert"]
