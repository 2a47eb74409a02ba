"""The gradient buckets of a chunk with routed experts: Megatron-core's two kinds of buffer.

Megatron-core's ``DistributedDataParallel`` (``megatron/core/distributed/
distributed_data_parallel.py``) groups the parameters by ``is_expert_parallel`` into two sets
of buffers: the dense ones (``buffers``, reduced over the dp x cp group) and the routed
experts' (``expert_parallel_buffers``, reduced over the expert-DP group), each cut into
buckets of the same ``bucket_size`` (max(40M, 1M x d) parameters, one bucket off the first
stage, :func:`tpsim.training.terms.bucket_size`) and partitioned into bucket groups apart
(``partition_buckets`` per kind). A bucket group starts its collective when the last of its
parameters' gradients is ready (``register_grad_ready``, overlap_grad_reduce), so along a
chunk's backward (its units in the order their gradients become final) the dense and the
expert buckets close at their own points. :func:`split_buckets` cuts the backward at every
point where a bucket of either kind closes and says what each cut reduces:

    dense stream   d_i = unit i's parameters - its routed experts'   cut by bucket_size
    expert stream  e_i = unit i's routed-expert parameters           cut by bucket_size
    a bucket closes after its last unit with parameters of its kind

Without experts (every e_i = 0) it is :func:`tpsim.training.data_parallel.buckets`' cut.

Each bucket is pre-scaled by 1 / (dp x cp) before its collective (both kinds:
``gradient_scaling_factor`` and ``expert_gradient_scaling_factor`` are 1 / dp_cp without
average_in_collective; ``start_grad_sync`` skips a factor of 1), so with dp x cp = 1 nothing is
scaled (:func:`prescale_s`), while the experts still reduce over expert DP (tp dp cp /
(etp ep) ranks: TP 8, EP 2, expert TP 1, DP 1 gives 4): a reduction exists when either group
has more than one rank (:func:`reduce_ranks`).
"""
from __future__ import annotations

from . import data_parallel as dpm
from . import terms


def reduce_ranks(par, experts) -> int:
    """The larger of the gradients' groups: dp x cp (:func:`tpsim.training.terms.grad_ranks`)
    and, with ``experts`` folded (a :class:`~tpsim.spec.folding.Folded` whose routed experts
    reduce apart, else None), expert DP; 1: no gradient collective."""
    return max(terms.grad_ranks(par), experts.edp if experts is not None else 1)


def prescale_s(params: float, dtype: str, device, ranks: int) -> float:
    """The 1 / d pre-scale of a bucket's ``params`` main gradients
    (:func:`tpsim.training.terms.grad_scale_s`); 0 with ``ranks`` = dp x cp = 1 (a factor of 1
    Megatron-core skips)."""
    return terms.grad_scale_s(params, dtype, device) if ranks > 1 else 0.0


def split_buckets(units, experts, size: int | None) -> list:
    """A chunk's backward cut where a dense or an expert bucket closes (module docstring):
    ``units`` runs ending (parameters per unit, units) in the order their gradients become
    final (:func:`tpsim.training.terms.chunk_units`), ``experts`` the routed-expert
    parameters per unit of each run (() : none), ``size`` the bucket size. Each cut is
    (pieces, parameters, of them routed experts'): the (run index, units) it spans and what
    the buckets closing at its end hold."""
    ex = tuple(experts) or (0,) * len(units)
    counts = [u[-1] for u in units]
    if not sum(counts):
        return []
    dense = _positions([(u[-2] - e, u[-1]) for u, e in zip(units, ex)], size)
    expert = _positions([(e, n) for e, n in zip(ex, counts)], size) if any(ex) else {}
    ends = sorted(set(dense) | set(expert) | {sum(counts)})
    out, at = [], 0
    for end in ends:
        if end == at and out:
            continue
        out.append((_span(counts, at, end), dense.get(end, 0) + expert.get(end, 0),
                    expert.get(end, 0)))
        at = end
    return out


def _positions(runs: list[tuple[int, int]], size: int | None) -> dict[int, int]:
    """{position: parameters} of each bucket of ``runs`` with parameters (``size`` None: one
    bucket): position = the units through the bucket's last unit with parameters of its
    kind (:func:`tpsim.training.data_parallel.buckets` takes each run's units in order)."""
    starts = [sum(n for _, n in runs[:i]) for i in range(len(runs))]
    taken, out = [0] * len(runs), {}
    for pieces in dpm.buckets(runs, size):
        last = None
        for i, k in pieces:
            taken[i] += k
            if runs[i][0]:
                last = starts[i] + taken[i]
        params = sum(runs[i][0] * k for i, k in pieces)
        if params:
            out[last] = out.get(last, 0) + params
    return out


def _span(counts: list[int], a: int, b: int) -> list[tuple[int, int]]:
    """The (run index, units) between unit positions ``a`` and ``b`` of runs of ``counts``."""
    out, start = [], 0
    for i, n in enumerate(counts):
        lo, hi = max(a, start), min(b, start + n)
        if hi > lo:
            out.append((i, hi - lo))
        start += n
    return out
