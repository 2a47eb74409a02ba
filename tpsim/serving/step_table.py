"""One step-time table of :class:`tpsim.serving.step_model.StepModel`: a price f(x) at a
geometric grid of sizes, refined by bisection where it jumps, interpolated linearly, each point
priced the first time a lookup reads it.

**The table** (``top``, ``rtol``): the points of :func:`grid` (every integer up to 8, then
sizes growing by :data:`RATIO` = 2^(1/8), up to and including ``top``); each interval (lo, hi)
wider than one token is bisected at mid = (lo + hi) // 2, f(mid) a point of the table, and
its halves bisected again while f(mid) is off the chord of its ends by more than ``rtol``
(0.2%) relative (a GEMM tile or a collective algorithm switch makes a jump: it is pinned to
one token); ``log``: the chord and the interpolation in log-log (a prompt's attention grows as
x^2 once compute-bound: exact for a power law).

**Lazily, bit for bit**: a lookup is ``np.interp`` over the table (of log x in log-log), which
reads only the two points around x (f at the first point below the grid, at the last above
it; the point itself where x is one), and the bisection refines an interval by its own
points alone. So the points around x are found by descending from the grid's interval holding
x (:meth:`Table._resolve`), pricing the midpoints on the way, and the lookup over the points
priced so far gives the whole table's number: each interval between two of them that is an
interval of the whole table (no further bisection in it) is marked, and a lookup that falls
in an unmarked one (or between the ends it has not priced) resolves it first. numpy's
``arr_interp`` (numpy/_core/src/multiarray/compiled_base.c, v2.x) takes j with xp[j] <= x <
xp[j + 1] by binary search and returns fp[j] where x = xp[j], else slope (x - xp[j]) + fp[j],
slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]): the same two points give the same bits
whatever else the table holds. :attr:`Table.prices` counts the points priced.
"""
from __future__ import annotations

from bisect import bisect_right

import numpy as np

RATIO = 2 ** 0.125
TOL = 0.002


def grid(top: int) -> list[int]:
    """1, 2, ..., 8, then sizes growing by :data:`RATIO`, up to and including ``top``."""
    pts, x = set(range(1, min(top, 8) + 1)), 8.0
    while x < top:
        x *= RATIO
        pts.add(min(top, round(x)))
    return sorted(pts)


class Table:
    """f on the adaptive grid up to ``top`` (module docstring), priced as lookups need it;
    ``table(x)`` interpolates (x a number or an array)."""

    def __init__(self, f, top: int, log: bool = False, rtol: float = TOL):
        self.f, self.log, self.rtol, self.coarse = f, log, rtol, grid(top)
        self.ys = {}             # f at the points priced
        self._xs, self._yl = [], []      # the same, in order of x
        self.final = set()       # lo of each (lo, hi) between priced points that the table holds
        self._view = None        # the priced points as lookup arrays (:meth:`_build`)

    @property
    def prices(self) -> int:
        """The points priced so far (f's calls)."""
        return len(self.ys)

    def _y(self, x: int):
        y = self.ys.get(x)
        if y is None:
            y = self.ys[x] = self.f(x)
            i = bisect_right(self._xs, x)
            self._xs.insert(i, x)
            self._yl.insert(i, y)
        return y

    def _bent(self, lo: int, mid: int, hi: int) -> bool:
        """Whether f(mid) is off the chord of (lo, hi) by more than rtol: (lo, hi) is bisected
        further."""
        ys, log = self.ys, self.log
        t = (lambda v: np.log(max(v, 1e-30))) if log else (lambda v: v)
        u = np.log if log else (lambda v: v)
        chord = t(ys[lo]) + (t(ys[hi]) - t(ys[lo])) * (u(mid) - u(lo)) / (u(hi) - u(lo))
        guess = np.exp(chord) if log else chord
        return abs(guess - ys[mid]) > self.rtol * abs(ys[mid])

    def _resolve(self, x) -> None:
        """Price the table's points around x: from the grid's interval holding x down the
        bisections to the table's interval holding it (marked final)."""
        c, self._view = self.coarse, None
        if x in self.ys:
            return
        if not c[0] < x < c[-1]:     # NaN: both ends (np.interp's NaN, as the whole table's)
            for end in [c[0]] if x <= c[0] else [c[-1]] if x >= c[-1] else [c[0], c[-1]]:
                self._y(end)
            return
        i = bisect_right(c, x) - 1
        lo, hi = c[i], c[i + 1]
        self._y(lo), self._y(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            self._y(mid)
            if not self._bent(lo, mid, hi):
                self.final.update((lo, mid))
                return
            lo, hi = (lo, mid) if x < mid else (mid, hi)
        self.final.add(lo)

    def _build(self) -> tuple:
        """(xs, xs as an array, the lookup's x and y arrays (logs in log-log), ok, the xs
        after a NaN): a query x with xs[k - 1] <= x < xs[k] reads priced points only where
        ok[k] (the interval is the table's; below or above all, the grid's end is priced) or
        x = xs[k - 1]."""
        xs, n = self._xs, len(self._xs)
        xa, ya = np.array(xs, float), np.array(self._yl)
        ok = np.empty(n + 1, bool)
        ok[0], ok[n] = xs[0] == self.coarse[0], xs[-1] == self.coarse[-1]
        ok[1:n] = np.fromiter(map(self.final.__contains__, xs[:-1]), bool, n - 1)
        px, py = (np.log(xa), np.log(np.maximum(ya, 1e-30))) if self.log else (xa, ya)
        self._view = view = (xs, xa, px, py, ok, np.concatenate(([np.nan], xa)))
        return view

    def __call__(self, x):
        """``np.interp`` over the whole table (of log x, then exp, in log-log), pricing
        first the points it reads that are not yet priced (module docstring)."""
        view = self._view
        if not isinstance(x, np.ndarray) or x.ndim == 0:
            if view is None:
                self._resolve(x)
                view = self._build()
            k = bisect_right(view[0], x)
            if not (view[4][k] or (k and view[0][k - 1] == x)):
                self._resolve(x)
                view = self._build()
        else:
            if view is None:
                self._resolve(x.flat[0])
                view = self._build()
            k = np.searchsorted(view[1], x, side="right")
            bad = ~(view[4][k] | (view[5][k] == x))
            if bad.any():
                for v in sorted(set(x[bad].tolist())):
                    self._resolve(v)
                view = self._build()
        if self.log:
            return np.exp(np.interp(np.log(x), view[2], view[3]))
        return np.interp(x, view[2], view[3])

    def full(self) -> tuple[np.ndarray, np.ndarray]:
        """(sizes, f(sizes)) of the whole table, every point priced."""
        for x in self.coarse:
            self._y(x)
        stack = list(zip(self.coarse, self.coarse[1:]))
        while stack:
            lo, hi = stack.pop()
            if hi - lo <= 1:
                self.final.add(lo)
                continue
            mid = (lo + hi) // 2
            self._y(mid)
            if self._bent(lo, mid, hi):
                stack += [(lo, mid), (mid, hi)]
            else:
                self.final.update((lo, mid))
        self._view = None
        return np.array(self._xs, float), np.array(self._yl)


__all__ = ["Table", "grid", "RATIO", "TOL"]
