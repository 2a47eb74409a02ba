"""A fast lower bound of the simulated pipeline: path weights of the step graph as linear forms.

The step (:mod:`tpsim.step`) runs on in-order streams, so its makespan is the longest path
through the chunks, p2p transfers and step-end ops (:mod:`tpsim.step_graph`). Any one path's
weight is a lower bound of it. This module writes the weights of a few families of real paths
through a 1F1B or interleaved schedule as linear forms in the per-layout durations, once per
schedule shape (p stages, v chunks, m micro-batches, layers per virtual stage), so that
thousands of layouts of that shape are bounded by one matrix product:

    end of B(m-1, chunk c) on stage r  >=  max over paths pi of  a_pi . x

with x the durations (:data:`VARIABLES`): a layer's forward and backward (``f``, ``b``), the
embedding's and the output layer's (with the loss) extra forward and backward on the first and
last virtual stage, the gradient pre-scale kernels that follow each chunk's last backward
(``s[g]``), one p2p transfer on each stage pair (``c[j]``: stages j and j+1; ``c[p-1]`` the wrap
from the last stage to the first that interleaving uses) and, for a middle stage k, the shorter
of its two pairs (``cin[k]``) for each blocking p2p batch between two of its chunks.

Stage k's program (:mod:`tpsim.pipeline`) is w warm-up forwards, (m v - w) steady
(forward, backward) pairs and w cool-down backwards, w = min(p - k - 1, m) for 1F1B and
min(2 (p - k - 1) + (v - 1) p, m v) interleaved. The families, for a bottleneck stage k:

* A: forward of micro-batch 0 up to stage k; stage k's program up to the target backward;
  that backward's chain down to stage r (k >= r):
      sum_{r'<k} F_r' + c_0..c_{k-1} + [stage k's chunks and batches] + sum_{r<=r'<k} B_r' + c_r..c_{k-1}
* B: micro-batch 0 through every virtual stage and back down to stage k (the first backward
  waits for that round trip), then stage k's program from its first backward, then down to r.
* C: stage k's program up to its last forward, then that micro-batch up to the last virtual
  stage and its backward all the way down to the target (the drain).
* D: B's round trip, stage k from its first backward to its last forward, C's drain.

For equal stages and free transfers family A through the last stage is the simulation's
makespan, (m v + p - 1)(f + b) per chunk (a test). With the model's unequal ends the bound is
the simulated step to 0.05% for 1F1B and 0.5% interleaved (median and worst of a sample of
GPT-3 layouts on 512 A100s); where transfers weigh (no sequence parallelism, many chunks on few
stages) it can be 10% low: the blocking p2p batches couple neighbouring stages more than one
transfer per batch, which is all it counts. The step's end after the last backwards
(data-parallel reduce, gradient norm, optimizer) is added by :mod:`tpsim.search_price`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FIXED = ("f", "b", "f_embedding", "b_embedding", "f_output", "b_output")
VARIABLES = FIXED + ("s[g]", "c[j]", "cin[k]")


class Program:
    """Stage k's compute positions: warm-up forwards, steady pairs, cool-down backwards."""

    def __init__(self, p: int, v: int, m: int, k: int):
        self.p, self.v, self.m, self.k = p, v, m, k
        self.total = m * v
        self.w = min(p - k - 1, m) if v == 1 else \
            min(2 * (p - k - 1) + (v - 1) * p, self.total)
        self.rest = self.total - self.w

    def fpos(self, i: int) -> int:
        """Position of forward i (table order) in the stage's compute sequence."""
        return i if i < self.w else 2 * i - self.w

    def bpos(self, i: int) -> int:
        return self.w + 2 * i + 1 if i < self.rest else self.w + self.rest + i

    def f_range(self, a: int, b: int) -> tuple[int, int]:
        """Forwards whose positions lie in [a, b]: indices [lo, hi)."""
        w, n = self.w, self.total
        lo = a if a < w else -(-(a + w) // 2)
        hi = (b + 1) if b < w else (b + w) // 2 + 1
        return min(max(lo, 0), n), min(max(hi, 0), n)

    def b_range(self, a: int, b: int) -> tuple[int, int]:
        """Backwards whose positions lie in [a, b]: indices [lo, hi)."""
        n = self.total
        return min(self._b_first(a), n), min(self._b_first(b + 1), n)

    def _b_first(self, a: int) -> int:
        """The first backward index with position >= a."""
        w, r = self.w, self.rest
        i = -(-(a - w - 1) // 2)
        if i < r:
            return max(i, 0)
        return max(a - w - r, r)

    def last_backward(self, c: int) -> int:
        """Index of the backward of the last micro-batch on model chunk c."""
        return self.total - 1 - c * self.p if self.v > 1 else self.m - 1

    def gaps(self, a: int, b: int) -> int:
        """Blocking p2p batches between the computes at positions a..b: between steady
        neighbours one (none between the forward and backward of an interleaved pair), two
        elsewhere in 1F1B, one elsewhere interleaved; the ends of 1F1B have no upstream
        (stage 0) or downstream (stage p - 1) side, and so fewer."""
        if b <= a or self.p == 1:
            return 0
        w, r, k, last = self.w, self.rest, self.k, self.p - 1
        if self.v > 1:
            empty = int(k == last and r == 0 and a <= w - 1 < b)    # the last F has no send
            return (b - a) - _every_other(a, b - 1, w, w + 2 * r - 1, w) - empty
        if k == last:                                   # F at even positions, B at odd
            return _every_other(a, b - 1, 1, b - 1, 1)
        steady = max(0, min(b - 1, w + 2 * r - 2) - max(a, w) + 1)
        if k == 0:                                      # no batch after a steady backward
            return (b - a) - _every_other(a, b - 1, w + 1, w + 2 * r - 2, w + 1)
        return 2 * (b - a) - steady


def _every_other(a: int, b: int, lo: int, hi: int, phase: int) -> int:
    """Integers j in [a, b] and [lo, hi] with j - phase even."""
    lo, hi = max(a, lo), min(b, hi)
    if hi < lo:
        return 0
    first = lo if (lo - phase) % 2 == 0 else lo + 1
    return 0 if first > hi else (hi - first) // 2 + 1


def chunk_count(n: int, c: int, p: int, v: int) -> int:
    """Forwards of model chunk c among the first n of the schedule table (groups of p
    micro-batches through chunk 0, then chunk 1, ...)."""
    if v == 1:
        return n
    period = p * v
    return (n // period) * p + min(max(n % period - c * p, 0), p)


def chunk_counts(n: int, p: int, v: int) -> np.ndarray:
    """:func:`chunk_count` of every chunk."""
    if v == 1:
        return np.array([n])
    period = p * v
    return (n // period) * p + np.minimum(np.maximum(n % period - _offsets(p, v), 0), p)


@lru_cache(maxsize=1024)
def _offsets(p: int, v: int) -> np.ndarray:
    return np.arange(v) * p


class Forms:
    """Rows of path coefficients over the variables of one schedule shape."""

    def __init__(self, p: int, v: int, m: int, layers: tuple[int, ...]):
        self.p, self.v, self.m = p, v, m
        self.V = p * v
        self.layers = np.asarray(layers, dtype=float)
        self.size = len(FIXED) + self.V + 2 * p
        self.s0, self.c0 = len(FIXED), len(FIXED) + self.V
        self.cin0 = self.c0 + p
        self.programs = [Program(p, v, m, k) for k in range(p)]
        self.last_index = np.array([self.programs[0].last_backward(c) for c in range(v)])
        self.parts: dict = {}

    def row(self) -> np.ndarray:
        return np.zeros(self.size)

    def forwards(self, x, lo: int, hi: int) -> None:
        """One forward on each virtual stage g in [lo, hi)."""
        if hi > lo:
            x[0] += self.layers[lo:hi].sum()
            x[2] += lo == 0
            x[4] += hi == self.V

    def backwards(self, x, lo: int, hi: int, last: bool) -> None:
        """One backward on each virtual stage g in [lo, hi) (of the last micro-batch: with
        the gradient pre-scale kernels that follow it)."""
        if hi > lo:
            x[1] += self.layers[lo:hi].sum()
            x[3] += lo == 0
            x[5] += hi == self.V
            if last:
                x[self.s0 + lo:self.s0 + hi] += 1

    def edges(self, x, lo: int, hi: int) -> None:
        """Transfers on the edges g -> g + 1 for g in [lo, hi): stage pair g mod p (the wrap
        from the last stage to the first is pair p - 1)."""
        if hi > lo:
            x[self.c0:self.cin0] += np.bincount(np.arange(lo, hi) % self.p, minlength=self.p)

    def segment(self, x, k: int, a: int, b: int) -> None:
        """Stage k's computes at positions a..b and the p2p batches between them."""
        prog, p, v = self.programs[k], self.p, self.v
        f0, f1 = prog.f_range(a, b)
        b0, b1 = prog.b_range(a, b)
        nf = chunk_counts(f1, p, v) - chunk_counts(f0, p, v)
        nb = (chunk_counts(b1, p, v) - chunk_counts(b0, p, v))[::-1]   # B runs chunks reversed
        layers = self.layers[k::p]
        x[0] += nf @ layers
        x[1] += nb @ layers
        if k == 0:
            x[2] += nf[0]
            x[3] += nb[0]
        if k == p - 1:
            x[4] += nf[-1]
            x[5] += nb[-1]
        last = self.last_index
        x[self.s0 + k:self.c0:p] += (b0 <= last) & (last < b1)
        x[self.cin0 + k] += prog.gaps(a, b)

    # ---- how a path reaches stage k (returns the position it enters at)
    def head_up(self, x, k: int) -> int:
        """Micro-batch 0's forward on chunk 0 of stages 0..k-1 and the transfers into k."""
        self.forwards(x, 0, k)
        self.edges(x, 0, k)
        return 0

    def head_first(self, x, k: int) -> int:
        """Stage 0 runs the first p forwards; the p-th goes up chunk 0 to stage k."""
        j = min(self.p, self.m * self.v) - 1
        self.segment(x, 0, 0, self.programs[0].fpos(j))
        self.forwards(x, 1, k)
        self.edges(x, 0, k)
        return self.programs[k].fpos(j)

    def head_round(self, x, k: int) -> int:
        """Micro-batch 0 through every virtual stage and back down to stage k's chunk v - 1:
        stage k's first backward waits for that round trip."""
        t = (self.v - 1) * self.p + k
        self.forwards(x, 0, self.V)
        self.backwards(x, t + 1, self.V, self.m == 1)
        self.edges(x, 0, self.V - 1)
        self.edges(x, t, self.V - 1)
        return self.programs[k].bpos(0)

    # ---- how it leaves stage k for the target (stage r, chunk c), via chunk c2 >= c
    def tail_down(self, x, k: int, r: int, c2: int) -> int:
        """Stage k up to its last backward on chunk c2, that backward down to stage r."""
        self.backwards(x, c2 * self.p + r, c2 * self.p + k, True)
        self.edges(x, c2 * self.p + r, c2 * self.p + k)
        prog = self.programs[k]
        return prog.bpos(prog.last_backward(c2))

    def tail_drain(self, x, k: int, r: int, c2: int) -> int:
        """Stage k up to its last forward; that micro-batch up to the last virtual stage and
        its backward down to chunk c2 of stage r."""
        t, target = (self.v - 1) * self.p + k, c2 * self.p + r
        self.forwards(x, t + 1, self.V)
        self.edges(x, t, self.V - 1)
        self.backwards(x, target, self.V, True)
        self.edges(x, target, self.V - 1)
        return self.programs[k].fpos(self.m * self.v - 1)

    def suffix(self, x, r: int, c2: int, c: int) -> None:
        """Stage r from after its last backward on chunk c2 to the one on chunk c."""
        if c2 != c:
            prog = self.programs[r]
            self.segment(x, r, prog.bpos(prog.last_backward(c2)) + 1,
                         prog.bpos(prog.last_backward(c)))

    def _part(self, key, build):
        """A piece of a path (a head, a tail, a segment), built once per shape."""
        hit = self.parts.get(key)
        if hit is None:
            x = self.row()
            pos = build(x)
            hit = self.parts[key] = (x, pos)
        return hit

    def target_rows(self, r: int, c: int, ks, full: bool) -> list[np.ndarray]:
        """Path rows ending at the last micro-batch's backward of chunk c on stage r
        (``full``: every family; else through the last stage, straight to the target)."""
        heads = ("head_up", "head_round", "head_first") if full else ("head_up",)
        via = (c, c + 1) if full and c + 1 < self.v else (c,)
        ks = ks if full else (self.p - 1,)
        rows = []
        for k in ks:
            for head in heads if k else heads[:2]:      # head_first is head_up on stage 0
                hx, a = self._part((head, k), lambda x: getattr(self, head)(x, k))
                for c2 in via:
                    ux, _ = self._part(("suffix", r, c2, c),
                                       lambda x: self.suffix(x, r, c2, c))
                    for tail in ("tail_down", "tail_drain"):
                        if tail == "tail_down" and (k < r or (k == r and c2 != c)):
                            continue
                        tx, b = self._part((tail, k, r, c2),
                                           lambda x: getattr(self, tail)(x, k, r, c2))
                        if a > b:
                            continue
                        sx, _ = self._part(("segment", k, a, b),
                                           lambda x: self.segment(x, k, a, b))
                        rows.append(hx + tx + sx + ux)
        return rows


def bottleneck_stages(p: int) -> tuple[int, ...]:
    """The stages tried as the bottleneck: the two ends and their neighbours (middle stages
    are equal, so the one nearest an end bounds the rest)."""
    return tuple(sorted({0, min(1, p - 1), max(p - 2, 0), p - 1}))


def end_stages(p: int) -> tuple[int, ...]:
    """Stages whose step end is bounded: the first, the latest-ending middle one, the last."""
    return tuple(sorted({0, min(1, p - 1), p - 1}))


@dataclass(frozen=True)
class ShapeForms:
    """All rows of one schedule shape: ``matrix`` (rows x variables) and, per target
    (stage r, chunk c) in ``targets``, the slice of its rows."""
    forms: Forms
    matrix: np.ndarray
    targets: tuple[tuple[int, int], ...]
    slices: tuple[slice, ...]


_SHAPES: dict = {}
AFFINE_FROM = 2     # micro-batches per stage from which an interleaved shape is affine in m


def affine_base(p: int, v: int) -> int:
    """The micro-batches from which every stage's program has all its regions (warm-up below
    p - k for 1F1B, at most (v + 1) p interleaved, and at least two steady pairs)."""
    return AFFINE_FROM * p if v > 1 else p + 2


def _build(p: int, v: int, m: int, layers: tuple[int, ...]) -> ShapeForms:
    forms = Forms(p, v, m, layers)
    rows, targets, slices = [], [], []
    for r in end_stages(p):
        for c in range(v):
            new = forms.target_rows(r, c, bottleneck_stages(p), c == 0)
            slices.append(slice(len(rows), len(rows) + len(new)))
            rows += new
            targets.append((r, c))
    return ShapeForms(forms, np.array(rows), tuple(targets), tuple(slices))


def shape_forms(p: int, v: int, m: int, layers: tuple[int, ...]) -> ShapeForms:
    """The rows bounding the end of each chunk's last backward on :func:`end_stages`,
    memoised per shape. Past :func:`affine_base` micro-batches every region of every
    stage's program is there and each count in a row grows by the same amount per step of m
    (one micro-batch, or p with interleaving): the rows are those of two built shapes,
    extrapolated (a test checks them against the built ones)."""
    key = (p, v, m, layers)
    hit = _SHAPES.get(key)
    if hit is None:
        step, base = (p if v > 1 else 1), affine_base(p, v)
        if m <= base + step or (m - base) % step:
            hit = _build(p, v, m, layers)
        else:
            one, two = shape_forms(p, v, base, layers), shape_forms(p, v, base + step, layers)
            if one.slices != two.slices:
                hit = _build(p, v, m, layers)
            else:
                grow = (two.matrix - one.matrix) * ((m - base) // step)
                hit = ShapeForms(Forms(p, v, m, layers), one.matrix + grow, one.targets,
                                 one.slices)
        if len(_SHAPES) > 4096:
            _SHAPES.clear()
        _SHAPES[key] = hit
    return hit


def bound_ends(shape: ShapeForms, x: np.ndarray) -> np.ndarray:
    """Lower bounds of each target's end for layouts ``x`` (layouts x variables): one column
    per target, the max of its rows."""
    e = x @ shape.matrix.T
    return np.maximum.reduceat(e, [s.start for s in shape.slices], axis=1)
