"""A fast lower bound of the simulated pipeline: path weights of the step graph as linear forms.

The step (:mod:`tpsim.training.step`) runs on in-order streams, so its makespan is the longest path
through the chunks, p2p transfers and step-end ops (:mod:`tpsim.training.step_graph`). Any one path's
weight is a lower bound of it. This module writes the weights of a few families of real paths
through a 1F1B or interleaved schedule as linear forms in the per-layout durations, once per
schedule (p stages, v chunks, m micro-batches; the layers per virtual stage as symbols, filled
in per split), so that thousands of layouts of that shape are bounded by one matrix product:

    end of B(m-1, chunk c) on stage r  >=  max over paths pi of  a_pi . x

with x the durations (:data:`VARIABLES`): a layer's forward and backward (``f``, ``b``), the
embedding's and the output layer's (with the loss) extra forward and backward on the first and
last virtual stage, the gradient pre-scale kernels that follow each chunk's last backward
(``s[g]``), one p2p transfer on each stage pair (``c[j]``: stages j and j+1; ``c[p-1]`` the wrap
from the last stage to the first that interleaving uses) and, for a middle stage k, the shorter
of its two pairs (``cin[k]``) for each blocking p2p batch between two of its chunks.

Stage k's program (:mod:`tpsim.training.pipeline`) is w warm-up forwards, (m v - w) steady
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
(data-parallel reduce, gradient norm, optimizer) is added by :mod:`tpsim.search.price`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base.memo import Memo
from .stage_program import Program, chunk_offsets

FIXED = ("f", "b", "f_embedding", "b_embedding", "f_output", "b_output")
VARIABLES = FIXED + ("s[g]", "c[j]", "cin[k]")


class Forms:
    """Rows of path coefficients over the variables of one schedule shape, the layers per
    virtual stage left as symbols: a row counts the forwards and backwards it runs of each
    virtual stage g (columns ``lf + g``, ``lb + g``), which :func:`evaluate` turns into the
    ``f`` and ``b`` columns for given layers (``layers``: only for :meth:`steady`)."""

    def __init__(self, p: int, v: int, m: int, layers: tuple[int, ...] | None = None):
        self.p, self.v, self.m, self.key = p, v, m, (p, v)
        self.V = p * v
        self.layers = None if layers is None else np.asarray(layers, dtype=float)
        self.size = len(FIXED) + self.V + 2 * p
        self.s0, self.c0 = len(FIXED), len(FIXED) + self.V
        self.cin0 = self.c0 + p
        self.lf, self.lb = self.size, self.size + self.V
        self._programs: dict = {}
        self.last_index = np.array([self.program(0).last_backward(c) for c in range(v)])
        self.parts: dict = {}
        self.pieces: list[np.ndarray] = []
        # prefix sums of edges g' -> g' + 1 for g' < g per stage pair (g' mod p)
        g, j = np.arange(self.V + 1)[:, None], np.arange(p)[None, :]
        self.edge_sum = np.maximum((g - j + p - 1) // p, 0)
        self.tables: dict = {}

    def program(self, k: int) -> Program:
        prog = self._programs.get(k)
        if prog is None:
            prog = self._programs[k] = Program(self.p, self.v, self.m, k)
        return prog

    def table(self, k: int) -> np.ndarray:
        """Stage k's prefix counts: per n, the forwards of each chunk among the first n
        (:func:`tpsim.training.stage_program.chunk_counts`)."""
        hit = self.tables.get(k)
        if hit is None:
            n = np.arange(self.m * self.v + 1)[:, None]
            start = chunk_offsets(self.p, self.v)
            hit = self.tables[k] = n if self.v == 1 else \
                (n // self.V) * self.p + np.clip(n % self.V - start, 0, self.p)
        return hit

    def row(self) -> np.ndarray:
        return np.zeros(self.size + 2 * self.V)

    def forwards(self, x, lo: int, hi: int) -> None:
        """One forward on each virtual stage g in [lo, hi)."""
        if hi > lo:
            x[self.lf + lo:self.lf + hi] += 1
            x[2] += lo == 0
            x[4] += hi == self.V

    def backwards(self, x, lo: int, hi: int, last: bool) -> None:
        """One backward on each virtual stage g in [lo, hi) (of the last micro-batch: with
        the gradient pre-scale kernels that follow it)."""
        if hi > lo:
            x[self.lb + lo:self.lb + hi] += 1
            x[3] += lo == 0
            x[5] += hi == self.V
            if last:
                x[self.s0 + lo:self.s0 + hi] += 1

    def edges(self, x, lo: int, hi: int) -> None:
        """Transfers on the edges g -> g + 1 for g in [lo, hi): stage pair g mod p (the wrap
        from the last stage to the first is pair p - 1)."""
        if hi > lo:
            x[self.c0:self.cin0] += self.edge_sum[hi] - self.edge_sum[lo]

    def segment(self, x, k: int, a: int, b: int) -> None:
        """Stage k's computes at positions a..b and the p2p batches between them: the
        forwards and backwards of each of its chunks from this shape's tables, the rest
        (:meth:`_counts`) shared by the shapes of every m."""
        rest, f0, f1, b0, b1 = _SEGMENTS.get((self.p, self.v, self.m, k, a, b), self._counts,
                                             k, a, b)
        counts, p = self.table(k), self.p
        x[self.lf + k:self.lb:p] += counts[f1] - counts[f0]
        x[self.lb + k::p] += (counts[b1] - counts[b0])[::-1]   # B runs chunks reversed
        x += rest

    def _counts(self, k: int, a: int, b: int) -> tuple:
        """What :meth:`segment` adds that does not depend on the layers (a row, each column
        added once from zero: the same sums), and its forward and backward ranges."""
        prog, p, v, x = self.program(k), self.p, self.v, self.row()
        f0, f1 = prog.f_range(a, b)
        b0, b1 = prog.b_range(a, b)
        counts = self.table(k)
        if k == 0:
            x[2] += counts[f1, 0] - counts[f0, 0]
            x[3] += counts[b1, v - 1] - counts[b0, v - 1]
        if k == p - 1:
            x[4] += counts[f1, v - 1] - counts[f0, v - 1]
            x[5] += counts[b1, 0] - counts[b0, 0]
        last = self.last_index
        x[self.s0 + k:self.c0:p] += (b0 <= last) & (last < b1)
        x[self.cin0 + k] += prog.gaps(a, b)
        return x, f0, f1, b0, b1

    # ---- how a path reaches stage k (returns the position it enters at)
    def head_up(self, x, k: int) -> int:
        """Micro-batch 0's forward on chunk 0 of stages 0..k-1 and the transfers into k."""
        if x is not None:
            self.forwards(x, 0, k)
            self.edges(x, 0, k)
        return 0

    def head_first(self, x, k: int) -> int:
        """Stage 0 runs the first p forwards; the p-th goes up chunk 0 to stage k."""
        j = min(self.p, self.m * self.v) - 1
        self.segment(x, 0, 0, self.program(0).fpos(j))
        self.forwards(x, 1, k)
        self.edges(x, 0, k)
        return self.program(k).fpos(j)

    def head_round(self, x, k: int, single: bool) -> int:
        """Micro-batch 0 through every virtual stage and back down to stage k's chunk v - 1:
        stage k's first backward waits for that round trip (``single``: m = 1, those
        backwards are the last micro-batch's)."""
        if x is not None:
            t = (self.v - 1) * self.p + k
            self.forwards(x, 0, self.V)
            self.backwards(x, t + 1, self.V, single)
            self.edges(x, 0, self.V - 1)
            self.edges(x, t, self.V - 1)
        return self.program(k).bpos(0)

    # ---- how it leaves stage k for the target (stage r, chunk c), via chunk c2 >= c
    def tail_down(self, x, k: int, r: int, c2: int) -> int:
        """Stage k up to its last backward on chunk c2, that backward down to stage r."""
        if x is not None:
            self.backwards(x, c2 * self.p + r, c2 * self.p + k, True)
            self.edges(x, c2 * self.p + r, c2 * self.p + k)
        prog = self.program(k)
        return prog.bpos(prog.last_backward(c2))

    def tail_drain(self, x, k: int, r: int, c2: int) -> int:
        """Stage k up to its last forward; that micro-batch up to the last virtual stage and
        its backward down to chunk c2 of stage r."""
        if x is not None:
            t, target = (self.v - 1) * self.p + k, c2 * self.p + r
            self.forwards(x, t + 1, self.V)
            self.edges(x, t, self.V - 1)
            self.backwards(x, target, self.V, True)
            self.edges(x, target, self.V - 1)
        return self.program(k).fpos(self.m * self.v - 1)

    def suffix(self, x, r: int, c2: int, c: int) -> None:
        """Stage r from after its last backward on chunk c2 to the one on chunk c."""
        if c2 != c:
            prog = self.program(r)
            self.segment(x, r, prog.bpos(prog.last_backward(c2)) + 1,
                         prog.bpos(prog.last_backward(c)))

    def _part(self, *key) -> tuple[int, int]:
        """A piece of a path (a head, a tail, a segment: the method ``key[0]`` with the
        arguments ``key[1:]``), built once per shape: (its index in ``pieces``, the position it
        enters or leaves stage k at). The pieces that do not depend on m (their positions
        do) are shared by the shapes of every m."""
        hit = self.parts.get(key)
        if hit is None:
            build = getattr(self, key[0])
            if key[0] in _ANY_M:
                shared = self.key + key
                fresh = shared not in _PIECES
                x = _PIECES.get(shared, self.row)      # a new row is filled in by build
                pos = build(x if fresh else None, *key[1:])
            else:
                x = self.row()
                pos = build(x, *key[1:])
            hit = self.parts[key] = (len(self.pieces), pos)
            self.pieces.append(x)
        return hit

    def target_rows(self, r: int, c: int, ks, full: bool) -> list[tuple[int, int, int, int]]:
        """Path rows ending at the last micro-batch's backward of chunk c on stage r
        (``full``: every family; else through the last stage, straight to the target), each
        as the indices of its four pieces (head, tail, segment, suffix) in ``pieces``."""
        heads = ("head_up", "head_round", "head_first") if full else ("head_up",)
        via = (c, c + 1) if full and c + 1 < self.v else (c,)
        ks = ks if full else (self.p - 1,)
        part = self._part
        rows = []
        for c2 in via:
            ux = part("suffix", r, c2, c)[0] if c2 != c else part("nothing")[0]
            for k in ks:
                tails = [part("tail_drain", k, r, c2)]
                if k > r or (k == r and c2 == c):
                    tails.insert(0, part("tail_down", k, r, c2))
                for head in heads if k else heads[:2]:  # head_first is head_up on stage 0
                    hx, a = part(head, k, self.m == 1) if head == "head_round" else \
                        part(head, k)
                    for tx, b in tails:
                        if a <= b:
                            rows.append((hx, tx, part("segment", k, a, b)[0], ux))
        return rows

    def steady(self) -> np.ndarray:
        """(p, V, f..): the forward that stage k runs just before its backward of micro-batch
        m - p + j on chunk c (g = c p + k), where that backward is steady (zero in the
        cool-down): per j and g, the forward's (f, b, ...) coefficients."""
        out = np.zeros((self.p, self.V, len(FIXED)))
        for k in range(self.p):
            prog, counts = self.program(k), self.table(k)
            for g in range(k, self.V, self.p):
                for j in range(self.p):
                    i = self.m * self.v - (g // self.p + 1) * self.p + j
                    if 0 <= i < prog.rest and prog.w + i < prog.total:
                        c = int(np.argmax(counts[prog.w + i + 1] - counts[prog.w + i]))
                        h = c * self.p + k
                        out[j, g, [0, 2, 4]] = self.layers[h], h == 0, h == self.V - 1
        return out

    def chain_rows(self) -> list[tuple[int, int, int, int]]:
        """Path rows ending at the last stage's backward of micro-batch m - p on chunk v - 1,
        where :func:`tpsim.training.step_slowed.chain` starts (interleaved only)."""
        k, part, prog = self.p - 1, self._part, self.program(self.p - 1)
        at, none = prog.bpos(self.m * self.v - self.V), part("nothing")[0]
        heads = [part("head_up", k), part("head_round", k, self.m == 1), part("head_first", k)]
        return [(hx, none, part("segment", k, a, at)[0], none) for hx, a in heads if a <= at]

    def nothing(self, x) -> None:
        """The empty piece (a path with no suffix)."""


_ANY_M = frozenset({"head_up", "head_round", "tail_down", "tail_drain"})
_PIECES = Memo("step bound path pieces", 65536)
_SEGMENTS = Memo("step bound segments' counts", 65536)


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
    matrix: np.ndarray
    targets: tuple[tuple[int, int], ...]
    slices: tuple[slice, ...]


_SYMBOLIC = Memo("step bound symbolic shapes", 4096)
AFFINE_FROM = 2     # micro-batches per stage from which an interleaved shape is affine in m


def affine_base(p: int, v: int) -> int:
    """The micro-batches from which every stage's program has all its regions (warm-up below
    p - k for 1F1B, at most (v + 1) p interleaved, and at least two steady pairs)."""
    return AFFINE_FROM * p if v > 1 else p + 2


def evaluate(rows: np.ndarray, layers) -> np.ndarray:
    """Symbolic rows (:class:`Forms`) as rows over :data:`VARIABLES`: the ``f`` and ``b``
    columns their forwards' and backwards' layers. Whole layers are exact in any order of
    summation (integers far below 2**53), so the rows equal those summed with the layers in."""
    layers, V = np.asarray(layers, dtype=float), len(layers)
    out = rows[:, :-2 * V].astype(float)
    out[:, 0], out[:, 1] = rows[:, -2 * V:-V] @ layers, rows[:, -V:] @ layers
    return out


def _build(p: int, v: int, m: int) -> ShapeForms:
    """The symbolic rows of one shape (:class:`Forms`), built (no extrapolation in m)."""
    forms = Forms(p, v, m)
    rows, targets, slices = [], [], []
    for r in end_stages(p):
        for c in range(v):
            new = forms.target_rows(r, c, bottleneck_stages(p), c == 0)
            slices.append(slice(len(rows), len(rows) + len(new)))
            rows += new
            targets.append((r, c))
    pieces = np.array(forms.pieces)
    at = np.array(rows).T                 # counts: integers, held as such (half the bytes)
    return ShapeForms((pieces[at[0]] + pieces[at[1]] + pieces[at[2]] + pieces[at[3]]).astype(
        np.int32), tuple(targets), tuple(slices))


def shape_forms(p: int, v: int, m: int, layers: tuple[int, ...]) -> ShapeForms:
    """The rows bounding the end of each chunk's last backward on :func:`end_stages`: the
    symbolic rows of (p, v, m) (:func:`symbolic_forms`, memoised and shared by every split of
    the layers) with the layers in (:func:`evaluate`: one matrix-vector product, not kept)."""
    sym = symbolic_forms(p, v, m)
    return ShapeForms(evaluate(sym.matrix, layers), sym.targets, sym.slices)


def symbolic_forms(p: int, v: int, m: int) -> ShapeForms:
    """:func:`shape_forms`'s rows with the layers as symbols (:class:`Forms`), memoised per
    (p, v, m). Past :func:`affine_base` micro-batches every region of every stage's program is
    there and each count in a row grows by the same amount per step of m (one micro-batch, or
    p with interleaving): the rows are those of two built shapes, extrapolated (a test checks
    them against the built ones); counts are integers, so exactly."""
    return _SYMBOLIC.get((p, v, m), _symbolic_forms, p, v, m)


def _symbolic_forms(p: int, v: int, m: int) -> ShapeForms:
    step, base = (p if v > 1 else 1), affine_base(p, v)
    if m <= base + step or (m - base) % step:
        return _build(p, v, m)
    one, two = symbolic_forms(p, v, base), symbolic_forms(p, v, base + step)
    if one.slices != two.slices:
        return _build(p, v, m)
    grow = (two.matrix - one.matrix) * ((m - base) // step)
    return ShapeForms(one.matrix + grow, one.targets, one.slices)


@dataclass(frozen=True)
class ChainForms:
    """What :func:`tpsim.training.step_slowed.chain` reads of one interleaved shape: ``start``,
    the path rows to its start (rows x variables); per virtual stage its backward's
    (f, b, ...) coefficients (``back``, V x 6); ``steady``: :meth:`Forms.steady`."""
    start: np.ndarray
    back: np.ndarray
    steady: np.ndarray


_CHAINS = Memo("step bound cool-down chains", 4096)


def chain_forms(p: int, v: int, m: int, layers: tuple[int, ...]) -> ChainForms:
    """:class:`ChainForms` of an interleaved shape (v > 1), memoised."""
    return _CHAINS.get((p, v, m, layers), _chain_forms, p, v, m, layers)


def _chain_forms(p: int, v: int, m: int, layers: tuple[int, ...]) -> ChainForms:
    forms = Forms(p, v, m, layers)
    at = np.array(forms.chain_rows()).T
    pieces = np.array(forms.pieces)
    back = np.zeros((p * v, len(FIXED)))
    back[:, 1], back[0, 3], back[-1, 5] = layers, 1.0, 1.0
    return ChainForms(evaluate(pieces[at[0]] + pieces[at[1]] + pieces[at[2]] + pieces[at[3]],
                               layers), back, forms.steady())


def bound_ends(shape: ShapeForms, x: np.ndarray) -> np.ndarray:
    """Lower bounds of each target's end for layouts ``x`` (layouts x variables): one column
    per target, the max of its rows."""
    e = x @ shape.matrix.T
    return np.maximum.reduceat(e, [s.start for s in shape.slices], axis=1)
