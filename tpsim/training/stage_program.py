"""A pipeline stage's program as arithmetic: where each forward and backward of stage k falls
in its compute sequence under 1F1B or the interleaved schedule (:mod:`tpsim.training.pipeline` builds the
same schedule op by op; a test checks the positions against it), and how many blocking p2p
batches lie between two of its computes. :mod:`tpsim.training.step_bound` reads its path weights off
these positions without building the schedule.

Stage k runs w warm-up forwards, (m v - w) steady (forward, backward) pairs and w cool-down
backwards, w = min(p - k - 1, m) for 1F1B and min(2 (p - k - 1) + (v - 1) p, m v) interleaved
(Megatron-LM's ``schedules.py``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import terms


class Program:
    """Stage k's compute positions: warm-up forwards, steady pairs, cool-down backwards."""

    def __init__(self, p: int, v: int, m: int, k: int):
        self.p, self.v, self.m, self.k = p, v, m, k
        self.total = m * v
        self.w = terms.warmup_forwards(p, v, m, k)
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


def chunk_counts(n: int, p: int, v: int) -> np.ndarray:
    """Forwards of each model chunk among the first n of the schedule table, as an array
    (:func:`tpsim.training.terms.table_forwards`)."""
    return np.array(terms.table_forwards(n, p, v))


@lru_cache(maxsize=1024)
def chunk_offsets(p: int, v: int) -> np.ndarray:
    """Where each model chunk's forwards start within a period of p v table entries."""
    return np.arange(v) * p
