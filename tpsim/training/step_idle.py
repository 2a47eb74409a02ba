"""Where each stage's compute stream idles, from the timed step (:mod:`tpsim.training.step_timing`).

:func:`idle_split` sweeps one stage's intervals in Python (a small step: no numpy to import
for a one-stage prediction); :func:`idle` is the same for all stages in one pass on arrays:
each interval's clipped ends become events (stage, time, set, +1 or -1), sorted by stage and
time; a running sum per set counts the intervals of that set open on each piece between two
events; a piece of a stage where its compute stream is idle goes to the first set that covers
it, else to the bubble, and each stage's pieces are added in time order (``numpy.bincount``
adds its weights one by one, in order), as the sweep adds them: the same sums, bit for bit.
"""
from __future__ import annotations

from typing import NamedTuple

from .step_timing import KINDS

CATEGORIES = ("dp", "pp", "tp", "optimizer")
_CODE = {k: i for i, k in enumerate(KINDS)}
SMALL = 2048        # ops: a step this small is split by the sweep, without numpy


def stage_splits(g, pp: int) -> tuple[list[dict], float]:
    """Per stage of the timed step ``g``: ``pp_a`` (its own p2p before the flush), ``dp_a``
    (the rest of that idle time while any stage's first forward waits for the overlapped
    weight all-gather) and ``bubble_a`` (the rest of its idle time then), ``idle`` (per :data:`CATEGORIES`, what of the
    step's end covers its idle time after the flush) and ``bubble_b`` (the rest), ``busy`` (its
    own DP and optimizer kernels); and the makespan. The sweep for a small step, arrays for a
    large one: the same sums."""
    return (_swept if len(g.end) < SMALL else _arrays)(g, pp)


def _arrays(g, pp: int) -> tuple[list[dict], float]:
    """:func:`stage_splits` on arrays, all stages at once (:func:`idle`)."""
    iv = intervals(g, pp)
    (pp_a, dp_a, bubble_a), late, bubble_b = stage_idle(iv, pp)
    busy = _busy(iv, pp)
    return [{"pp_a": float(pp_a[r]), "dp_a": float(dp_a[r]), "bubble_a": float(bubble_a[r]),
             "bubble_b": float(bubble_b[r]), "busy": busy[r],
             "idle": {c: float(late[c][r]) for c in CATEGORIES}} for r in range(pp)], iv.makespan


def _streams(g, pp: int):
    """Per stage its compute stream's ops and its transfers; the step end's categories (op
    lists: :func:`intervals`); the flush (the last compute op's end on a compute stream)."""
    own = [g.on.get(f"stage{r}", []) for r in range(pp)]
    p2p: list[list] = [[] for _ in range(pp)]
    cats: dict[str, list] = {c: [] for c in (*CATEGORIES, "embedding")}
    for s, ids in g.on.items():
        if s.startswith("p2p "):
            for r in sorted(set(map(int, s[4:].split(">")))):
                p2p[r].append(ids)
            continue
        cat = ("dp" if s.endswith(".dp") else "tp" if s.endswith(".sync") else
               "embedding" if s == "embedding" else "optimizer" if s == "grad-norm" else None)
        if cat:
            cats[cat].append(ids)
    flush = 0.0
    for ids in own:
        last = next((i for i in reversed(ids) if g.kind[i] == _CODE["compute"]), None)
        if last is not None:
            flush = max(flush, g.end[last])
    return own, p2p, cats, flush


def _swept(g, pp: int) -> tuple[list[dict], float]:
    """:func:`stage_splits` by :func:`idle_split`, stage by stage."""
    own, p2p, cats, flush = _streams(g, pp)
    start, end, kind, T = g.start, g.end, g.kind, g.makespan_s
    span = {c: [(start[i], end[i]) for ids in lists for i in ids] for c, lists in cats.items()}
    span["optimizer"] += [(start[i], end[i]) for ids in own for i in ids
                          if kind[i] == _CODE["optimizer"]]
    waits = [(start[i], end[i]) for i in getattr(g, "wait_ops", ())]
    out = []
    for r in range(pp):
        busy = {"dp": 0.0, "optimizer": 0.0}
        for i in own[r]:
            if KINDS[kind[i]] in busy:
                busy[KINDS[kind[i]]] = busy[KINDS[kind[i]]] + end[i] - start[i]
        mine = [(start[i], end[i]) for i in own[r]]
        (pp_a, dp_a), bubble_a = idle_split(
            0.0, flush, mine, [[(start[i], end[i]) for ids in p2p[r] for i in ids], waits])
        sets = [(span["embedding"] if r in (0, pp - 1) else []) if c == "pp" else span[c]
                for c in CATEGORIES]
        late, bubble_b = idle_split(flush, T, mine, sets)
        out.append({"pp_a": pp_a, "dp_a": dp_a, "bubble_a": bubble_a, "bubble_b": bubble_b, "busy": busy,
                    "idle": dict(zip(CATEGORIES, late))})
    return out, T


def _clip(intervals, t0: float, t1: float) -> list:
    return [(max(a, t0), min(b, t1)) for a, b in intervals if b > t0 and a < t1]


def idle_split(t0: float, t1: float, busy, categories) -> tuple[list[float], float]:
    """Split the time in [t0, t1] that ``busy`` intervals leave free: to each list of intervals
    in ``categories`` (first match wins) what it covers of that free time; the rest is returned
    last (the bubble). One sweep over the intervals' ends."""
    out, bubble = [0.0] * len(categories), 0.0
    if t1 <= t0:
        return out, bubble
    events = [(x, 0, d) for a, b in _clip(busy, t0, t1) for x, d in ((a, 1), (b, -1))]
    for k, cat in enumerate(categories, 1):
        events += [(x, k, d) for a, b in _clip(cat, t0, t1) for x, d in ((a, 1), (b, -1))]
    events.append((t1, 0, 0))
    events.sort()
    live = [0] * (len(categories) + 1)
    t = t0
    for x, k, d in events:
        if x > t and not live[0]:
            hit = next((j for j in range(1, len(live)) if live[j]), 0)
            if hit:
                out[hit - 1] += x - t
            else:
                bubble += x - t
        t = max(t, x)
        live[k] += d
    return out, bubble




class Intervals(NamedTuple):
    """A timed step's ops as arrays: ``start``, ``end``, ``kind`` (codes of
    :data:`tpsim.training.step_timing.KINDS`) per op; ``own``: the ops of the stages' compute
    streams with ``own_stage`` their stage; ``p2p``: the transfers with ``p2p_stage`` the stage
    that sends or receives them (a transfer between two stages twice); ``step_end``: the step
    end's global categories, (start, end) arrays; ``flush``: the last chunk's end on any
    stage; ``makespan``; ``waits``: the first forwards' waits for the overlapped weight
    all-gather (any stage idle while one runs waits for it)."""
    start: object       # numpy arrays, all of them
    end: object
    kind: object
    own: object
    own_stage: object
    p2p: object
    p2p_stage: object
    step_end: dict
    flush: float
    makespan: float
    waits: object


def _ids(lists):
    """The op ids of ``lists`` (lists of ids), one array, in order."""
    import numpy as np
    from itertools import chain
    return np.fromiter(chain.from_iterable(lists), np.intp)


def intervals(g, pp: int) -> Intervals:
    """:class:`Intervals` of a :class:`~tpsim.training.step_timing.TimedGraph`: stage r's
    compute stream is ``stage{r}``, a transfer's ``p2p {a}>{b}``; the step end's categories
    are the ``.dp`` streams (dp), ``.sync`` (tp), ``embedding`` and ``grad-norm`` with the
    optimizer kernels on the compute streams (optimizer)."""
    import numpy as np
    own_lists, p2p, cats, flush = _streams(g, pp)
    start, end = np.array(g.start), np.array(g.end)
    kind = np.frombuffer(bytes(g.kind), np.int8)       # codes < len(KINDS)
    own = _ids(own_lists)
    own_stage = np.repeat(np.arange(pp), [len(x) for x in own_lists])
    links = _ids(ids for lists in p2p for ids in lists)
    link_stage = np.repeat(np.arange(pp), [sum(map(len, lists)) for lists in p2p])
    step_end = {}
    for c, lists in cats.items():
        ids = _ids(lists + ([own[kind[own] == _CODE["optimizer"]].tolist()]
                            if c == "optimizer" else []))
        step_end[c] = (start[ids], end[ids])
    return Intervals(start, end, kind, own, own_stage, links, link_stage, step_end, flush,
                     float(end.max()) if len(end) else 0.0,
                     np.array(getattr(g, "wait_ops", ()), dtype=np.intp))


def idle(t0: float, t1: float, pp: int, busy, sets) -> tuple[list, object]:
    """Per stage, the time in [t0, t1] its ``busy`` intervals leave free, split: to each of
    ``sets`` (first match wins) what it covers of it, and the rest (the bubble). ``busy`` and
    each set: (stage, start, end) arrays. Returns (per set an array over the stages, the
    bubble over the stages). Events that tie in time and stage may come in any order: the
    pieces between them are empty (a sum plus 0.0 is the sum)."""
    import numpy as np
    if t1 <= t0:
        return [np.zeros(pp) for _ in sets], np.zeros(pp)
    every = (busy, *sets)
    a, b = np.concatenate([x[1] for x in every]), np.concatenate([x[2] for x in every])
    keep = (b > t0) & (a < t1)
    st = np.concatenate([x[0] for x in every])[keep]
    which = np.repeat(np.arange(len(every)), [len(x[0]) for x in every])[keep]
    n, lanes = len(st), np.arange(pp)
    stage = np.concatenate([lanes, lanes, st, st])
    x = np.concatenate([np.full(pp, t0), np.full(pp, t1), np.maximum(a[keep], t0),
                        np.minimum(b[keep], t1)])
    order = np.argsort(x, kind="stable")           # by time, then (stably) by stage
    order = order[np.argsort(stage[order].astype(np.int16 if pp < 2**15 else np.int64),
                             kind="stable")]
    stage, x = stage[order], x[order]
    cover = np.zeros((len(every), len(x)), np.int32)
    cover[np.concatenate([np.zeros(2 * pp, np.intp), which, which])[order],
          np.arange(len(x))] = np.concatenate([np.zeros(2 * pp, np.int32),
                                                np.ones(n, np.int32), -np.ones(n, np.int32)])[order]
    np.cumsum(cover, axis=1, out=cover)
    gap, piece = x[1:] - x[:-1], stage[:-1]
    free = (stage[1:] == piece) & (cover[0, :-1] == 0)
    out = []
    for j in range(len(sets)):
        hit = free & (cover[j + 1, :-1] > 0)
        out.append(np.bincount(piece[hit], gap[hit], pp))
        free &= ~hit
    return out, np.bincount(piece[free], gap[free], pp)


def stage_idle(iv: Intervals, pp: int) -> tuple[tuple, dict, object]:
    """Per stage: (own p2p before the flush, bubble before it), the step end's categories
    after it (:data:`CATEGORIES`: the tied-embedding all-reduce counts as pp on the first and
    last stage only) and the bubble after it."""
    import numpy as np
    busy = (iv.own_stage, iv.start[iv.own], iv.end[iv.own])
    w = iv.waits
    (pp_a, dp_a), bubble_a = idle(0.0, iv.flush, pp, busy, [
        (iv.p2p_stage, iv.start[iv.p2p], iv.end[iv.p2p]),
        (np.repeat(np.arange(pp), len(w)), np.tile(iv.start[w], pp), np.tile(iv.end[w], pp))])
    sets = []
    for c in CATEGORIES:
        a, b = iv.step_end["embedding" if c == "pp" else c]
        stages = sorted({0, pp - 1}) if c == "pp" else range(pp)
        sets.append((np.repeat(np.array(stages, np.intp), len(a)), np.tile(a, len(stages)),
                     np.tile(b, len(stages))))
    late, bubble_b = idle(iv.flush, iv.makespan, pp, busy, sets)
    return (pp_a, dp_a, bubble_a), dict(zip(CATEGORIES, late)), bubble_b


def _busy(iv, pp: int) -> list[dict]:
    """Per stage, the time its compute stream runs DP kernels (the gradients' pre-scale) and
    optimizer kernels, each op's end - start added in stream order."""
    out = [{"dp": 0.0, "optimizer": 0.0} for _ in range(pp)]
    names = {KINDS.index(k): k for k in ("dp", "optimizer")}
    kinds = iv.kind[iv.own]
    pick = (kinds == KINDS.index("dp")) | (kinds == KINDS.index("optimizer"))
    ids = iv.own[pick]
    for r, k, a, b in zip(iv.own_stage[pick].tolist(), kinds[pick].tolist(),
                          iv.start[ids].tolist(), iv.end[ids].tolist()):
        busy = out[r]
        name = names[k]
        busy[name] = busy[name] + b - a
    return out


