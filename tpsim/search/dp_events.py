"""A stage's DP stream as the search's bound reads it: its gradient buckets' reductions, each
an event after the bounded end of the last backward it follows (:mod:`tpsim.search.step`).

Of bucket j of a chunk's last backward (chunks as their last backwards run, v - 1 first), with
L the bound of that backward's end, D_j the reductions from bucket j on (they all start after
its pre-scale), l_j the compute after that pre-scale in the chunk (its later pieces and
pre-scale kernels), w_j >= l_j the compute the stage still runs then (l_j and, interleaved, the
last pp backwards of each chunk after it: the schedule runs the backwards of the last pp
micro-batches chunk by chunk, v - 1 first, :func:`tpsim.training.pipeline.interleaved`):

    end of bucket j           E_j = L - l_j
    the DP stream ends after  E_j + D_j
    the stage ends after      E_j + max(D_j, w_j + I min(D_j, w_j / (1 - I)))

the last: from E_j the stage's GPU runs w_j of compute and D_j of reductions, the compute at
1 - I of its speed while a reduction runs beside it (I the device's comm_compute_interference,
:mod:`tpsim.training.step_timing`); whatever the overlap x <= D_j, the compute ends no earlier
than E_j + w_j + I x and the two together no earlier than E_j + w_j + D_j - (1 - I) x: the
bound is :func:`tpsim.training.moe_overlap.beside` (D_j, w_j).
"""
from __future__ import annotations

import numpy as np

from ..training.grad_buckets import prescale_s
from ..training.step_reduce import stage_reduction

BUCKET_EVENTS = 8      # bucket events kept per chunk: the first, the last, evenly between


def events(st, scale, reduce, pp: int, v: int, i: int, r: int) -> list:
    """Stage r's DP stream (chunks as their last backwards run: v - 1 first), each bucket's
    reduction starting once its pre-scale kernel has run: per event (the column of the bounded
    end it follows, the layers, embedding and output layer of the later pieces of that
    backward, D_j minus the later pre-scale kernels, D_j, and w_j as the layers, embedding and
    output layer and the pre-scale seconds it holds). Of a chunk's many buckets (a whole
    stage's gradients without pipelining) a few are kept: any subset bounds the stream's end
    from below, and its ends (an early bucket heading a queue, the last one exposed) are the
    ones that bind."""
    out, after, done = [], 0.0, (0, 0, 0, 0.0)   # done: the chunks whose last backward follows
    for c in range(v):                      # the stream read backwards: chunk 0's last bucket
        g = c * pp + r
        bs, nb = st.buckets[g], len(st.buckets[g])
        keep = range(nb) if nb <= BUCKET_EVENTS else \
            {round(q * (nb - 1) / (BUCKET_EVENTS - 1)) for q in range(BUCKET_EVENTS)}
        a = e = o = 0       # the later pieces' layers, embedding and output layer: integers,
        for j in range(nb - 1, -1, -1):     # so summed as they come, exactly
            after += reduce(bs[j][3], bs[j][4])
            if j in keep:
                sc = sum(scale[g][j + 1:])
                out.append((i * v + c, a, e, o, after - sc, after, a + done[0], e + done[1],
                            o + done[2], sc + done[3]))
            a, e, o = a + bs[j][0], e + bs[j][1], o + bs[j][2]
        done = (done[0] + pp * a, done[1] + pp * e, done[2] + pp * o, done[3] + sum(scale[g]))
    return out


def reducer(dtype: str, do: bool, par, price, experts=None):
    """``reducer(r)``: ``reduce(params, expert)``, a gradient bucket's reduction on stage r's
    dp x cp group, its routed experts' on expert DP, as the step prices it
    (:func:`tpsim.training.terms.dp_and_expert_s`), memoised per stage and bucket."""
    stages: dict = {}

    def of(r: int):
        if r not in stages:
            stages[r] = _stage_reduce(dtype, do, par, price, experts, r)
        return stages[r]
    return of


def _stage_reduce(dtype: str, do: bool, par, price, experts, r: int):
    """Stage r's ``reduce(params, expert)`` of :func:`reducer`: the step's
    (:func:`tpsim.training.step_reduce.stage_reduction`), memoised by its arguments."""
    seconds, reduced = stage_reduction(dtype, do, par, price, experts, r), {}

    def reduce(params, expert):
        t = reduced.get((params, expert))
        if t is None:
            t = reduced[params, expert] = seconds(params, expert)
        return t
    return reduce


def last_reductions(st, reducer, pp: int, v: int) -> np.ndarray:
    """Per virtual stage g: the reduction of the last bucket of its last backward, on stage
    g mod pp (``reducer(r)``: that stage's ``reduce(params, expert)``), R of
    :mod:`tpsim.training.step_slowed`."""
    out = np.zeros(pp * v)
    for r in range(pp):
        reduce = reducer(r)
        for g in range(r, pp * v, pp):
            out[g] = reduce(st.buckets[g][-1][3], st.buckets[g][-1][4])
    return out


def event_arrays(events: list[list], width: int) -> tuple:
    """(cols, coef, const, dp, work, work_s) of each stage's events, padded (const -inf) to
    ``width``: work the (layers, embedding, output layer) of w_j, work_s its pre-scale
    seconds."""
    n = len(events)
    cols, coef, const = np.zeros((n, width), dtype=int), np.zeros((n, width, 3)), \
        np.full((n, width), -np.inf)
    dp, work, work_s = np.zeros((n, width)), np.zeros((n, width, 3)), np.zeros((n, width))
    for i, ev in enumerate(events):
        for j, (col, a, e, o, k, d, wa, we, wo, ws) in enumerate(ev):
            cols[i, j], coef[i, j], const[i, j], dp[i, j] = col, (a, e, o), k, d
            work[i, j], work_s[i, j] = (wa, we, wo), ws
    return cols, coef, const, dp, work, work_s


def stage_end(at: np.ndarray, work: np.ndarray, const: np.ndarray, dp: np.ndarray,
              loss: np.ndarray) -> np.ndarray:
    """L + I min(D_j, w_j / (1 - I)) per event (module docstring; -inf for padding), the part
    of E_j + beside(D_j, w_j) that is not E_j + D_j: ``at`` = L, ``work`` = w_j, ``loss`` I per
    row."""
    i = loss.reshape((-1,) + (1,) * (at.ndim - 1))
    ratio = np.where(i < 1, i / np.where(i < 1, 1 - i, 1.0), np.inf)
    slow = np.where(work > 0, ratio * np.where(work > 0, work, 1.0), 0.0)   # I = 1: no inf * 0
    return np.where(np.isfinite(const), at + np.minimum(i * dp, slow), -np.inf)


def prescales(st, dtype: str, dev, ranks: int) -> list[list[float]]:
    """Per virtual stage of ``st`` (:class:`tpsim.search.step.Stages`), each bucket's pre-scale
    kernel (:func:`prescale_s`; 0 with ``ranks`` 1), priced once per distinct bucket size: the
    buckets of a stage are mostly equal, and a size's price is the same number whichever
    bucket asks."""
    if ranks <= 1:
        return [[0.0] * len(bs) for bs in st.buckets]
    sizes: dict = {}
    for bs in st.buckets:
        for b in bs:
            if b[3] not in sizes:
                sizes[b[3]] = prescale_s(b[3], dtype, dev, ranks)
    return [[sizes[b[3]] for b in bs] for bs in st.buckets]
