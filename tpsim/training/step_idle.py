"""Where each stage's compute stream idles, for every stage at once, on the timed step's arrays.

:func:`idle` is :func:`tpsim.training.step_accounting.idle_split` for all stages in one pass:
each interval's clipped ends become events (stage, time, set, +1 or -1), sorted by stage and
time; a running sum per set counts the intervals of that set open on each piece between two
events; a piece of a stage where its compute stream is idle goes to the first set that covers
it, else to the bubble, and each stage's pieces are added in time order (``numpy.bincount``
adds its weights one by one, in order), as the sweep adds them: the same sums, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .step_timing import KINDS

CATEGORIES = ("dp", "pp", "tp", "optimizer")
_CODE = {k: i for i, k in enumerate(KINDS)}


@dataclass(frozen=True)
class Intervals:
    """A timed step's ops as arrays: ``start``, ``end``, ``kind`` (codes of
    :data:`tpsim.training.step_timing.KINDS`) per op; ``own``: the ops of the stages' compute
    streams with ``own_stage`` their stage; ``p2p``: the transfers with ``p2p_stage`` the stage
    that sends or receives them (a transfer between two stages twice); ``step_end``: the step
    end's global categories, (start, end) arrays; ``flush``: the last chunk's end on any
    stage; ``makespan``."""
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray
    own: np.ndarray
    own_stage: np.ndarray
    p2p: np.ndarray
    p2p_stage: np.ndarray
    step_end: dict
    flush: float
    makespan: float


def _ids(lists) -> np.ndarray:
    parts = [np.array(ids, dtype=np.intp) for ids in lists]
    return np.concatenate(parts) if parts else np.zeros(0, np.intp)


def intervals(g, pp: int) -> Intervals:
    """:class:`Intervals` of a :class:`~tpsim.training.step_timing.TimedGraph`: stage r's
    compute stream is ``stage{r}``, a transfer's ``p2p {a}>{b}``; the step end's categories
    are the ``.dp`` streams (dp), ``.sync`` (tp), ``embedding`` and ``grad-norm`` with the
    optimizer kernels on the compute streams (optimizer)."""
    start, end = np.array(g.start), np.array(g.end)
    kind = np.array(g.kind, dtype=np.int8)
    own_lists = [g.on.get(f"stage{r}", ()) for r in range(pp)]
    own = _ids(own_lists)
    own_stage = np.repeat(np.arange(pp), [len(x) for x in own_lists])
    links, link_stage, cats = [], [], {c: [] for c in (*CATEGORIES, "embedding")}
    for s, ids in g.on.items():
        if s.startswith("p2p "):
            for r in sorted(set(map(int, s[4:].split(">")))):
                links.append(ids)
                link_stage.append(np.full(len(ids), r, np.intp))
            continue
        cat = ("dp" if s.endswith(".dp") else "tp" if s.endswith(".sync") else
               "embedding" if s == "embedding" else "optimizer" if s == "grad-norm" else None)
        if cat:
            cats[cat].append(np.array(ids, dtype=np.intp))
    cats["optimizer"].append(own[kind[own] == _CODE["optimizer"]])
    done = own[kind[own] == _CODE["compute"]]
    step_end = {}
    for c, parts in cats.items():
        ids = np.concatenate(parts) if parts else np.zeros(0, np.intp)
        step_end[c] = (start[ids], end[ids])
    return Intervals(start, end, kind, own, own_stage, _ids(links),
                     np.concatenate(link_stage) if link_stage else np.zeros(0, np.intp),
                     step_end, float(end[done].max()) if len(done) else 0.0,
                     float(end.max()) if len(end) else 0.0)


def idle(t0: float, t1: float, pp: int, busy, sets) -> tuple[list[np.ndarray], np.ndarray]:
    """Per stage, the time in [t0, t1] its ``busy`` intervals leave free, split: to each of
    ``sets`` (first match wins) what it covers of it, and the rest (the bubble). ``busy`` and
    each set: (stage, start, end) arrays. Returns (per set an array over the stages, the
    bubble over the stages)."""
    out = [np.zeros(pp) for _ in sets]
    if t1 <= t0:
        return out, np.zeros(pp)
    stage, x, up, which = [np.arange(pp)] * 2, [np.full(pp, t0), np.full(pp, t1)], [], []
    for j, (st, a, b) in enumerate((busy, *sets)):
        keep = (b > t0) & (a < t1)
        st = st[keep]
        stage += [st, st]
        x += [np.maximum(a[keep], t0), np.minimum(b[keep], t1)]
        up += [np.ones(len(st), np.int64), -np.ones(len(st), np.int64)]
        which += [np.full(2 * len(st), j, np.intp)]
    stage, x = np.concatenate(stage), np.concatenate(x)
    up = np.concatenate([np.zeros(2 * pp, np.int64), *up])
    which = np.concatenate([np.zeros(2 * pp, np.intp), *which])
    order = np.lexsort((x, stage))
    stage, x, up, which = stage[order], x[order], up[order], which[order]
    cover = np.zeros((len(sets) + 1, len(x)), np.int64)
    cover[which, np.arange(len(x))] = up
    np.cumsum(cover, axis=1, out=cover)
    gap, piece = x[1:] - x[:-1], stage[:-1]
    free = (stage[1:] == piece) & (cover[0, :-1] == 0)
    for j in range(len(sets)):
        hit = free & (cover[j + 1, :-1] > 0)
        out[j] = np.bincount(piece[hit], gap[hit], pp)
        free &= ~hit
    return out, np.bincount(piece[free], gap[free], pp)


def stage_idle(iv: Intervals, pp: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """Per stage: (own p2p before the flush, bubble before it), the step end's categories
    after it (:data:`CATEGORIES`: the tied-embedding all-reduce counts as pp on the first and
    last stage only) and the bubble after it."""
    busy = (iv.own_stage, iv.start[iv.own], iv.end[iv.own])
    (pp_a,), bubble_a = idle(0.0, iv.flush, pp, busy,
                             [(iv.p2p_stage, iv.start[iv.p2p], iv.end[iv.p2p])])
    sets = []
    for c in CATEGORIES:
        a, b = iv.step_end["embedding" if c == "pp" else c]
        stages = sorted({0, pp - 1}) if c == "pp" else range(pp)
        sets.append((np.repeat(np.array(stages, np.intp), len(a)), np.tile(a, len(stages)),
                     np.tile(b, len(stages))))
    late, bubble_b = idle(iv.flush, iv.makespan, pp, busy, sets)
    return (pp_a, bubble_a), dict(zip(CATEGORIES, late)), bubble_b
