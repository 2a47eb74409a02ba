"""Megatron-core's pipeline schedules as integer programs, one list per stage: what
:func:`tpsim.training.pipeline.one_f_one_b` and :func:`~tpsim.training.pipeline.interleaved`
build as objects, entry for entry, in ints and tuples of ints that
:func:`tpsim.training.step_timing.time_pipeline` walks (a test checks them against the objects).

Stage r of 1F1B runs w = min(p - r - 1, m) warm-up forwards, m - w steady (forward, backward)
pairs and w cool-down backwards; interleaved, w = min(2 (p - r - 1) + (v - 1) p, m v) over the
schedule table (groups of p micro-batches through chunk 0, then chunk 1, ...).
"""
from __future__ import annotations

from ..base.memo import Memo
from .pipeline import interleaved_warmup, schedule_table


class Shape:
    """The pipeline's programs as integers, for ``p`` stages, ``m`` micro-batches, ``v`` chunks.

    ``progs[r]``: stage r's entries in issue order; a compute is an int 2 chunk + b (b = 1: a
    backward), plus 2 v for the last micro-batch's backward (the one cut into gradient
    buckets); a p2p batch is a tuple of message ids (its sends, then its receives). Message
    k = 2 (mb V + src) + (1: a gradient, to src - 1; 0: an activation, to src + 1) over
    virtual stages (V = p v); ``link[k]`` indexes ``links``, the directed stage pairs
    (src mod p, dst mod p); ``after[k]`` (``next[k]``): the message before (after) it on its
    link, in its sender's order (-1: none)."""

    def __init__(self, p: int, m: int, v: int):
        self.p, self.m, self.v = p, m, v
        V = p * v
        programs = [_stage_program(p, m, v, r) for r in range(p)]
        n = 2 * m * V
        self.link, self.after, self.next = [-1] * n, [-1] * n, [-1] * n
        last: dict[tuple[int, int], int] = {}
        index: dict[tuple[int, int], int] = {}
        for r, prog in enumerate(programs):          # sends, in each sender's order
            for e in prog:
                if type(e) is int:
                    continue
                for k in e:
                    src = (k >> 1) % V
                    if src % p != r or self.link[k] >= 0:     # a receive
                        continue
                    pair = (r, (src - 1 if k & 1 else src + 1) % p)
                    self.link[k] = index.setdefault(pair, len(index))
                    prev = last.get(pair, -1)
                    self.after[k] = prev
                    if prev >= 0:
                        self.next[prev] = k
                    last[pair] = k
        self.links = tuple(index)
        self.progs = [[_compute_code(e, v, m) if type(e) is int else e for e in prog]
                      for prog in programs]


class _Stage:
    """Stage r's program being written: computes (2 (mb v + chunk) + b) and batches."""

    def __init__(self, p: int, v: int, r: int):
        self.p, self.v, self.r, self.V, self.out = p, v, r, p * v, []

    def vs(self, c: int) -> tuple[int, int, int]:
        """(micro-batch, virtual stage, b) of compute c."""
        x = c >> 1
        return x // self.v, (x % self.v) * self.p + self.r, c & 1

    def needs(self, c: int) -> int | None:
        """The message compute c receives before it runs (None: the first or last virtual
        stage)."""
        mb, g, b = self.vs(c)
        if b:
            return (mb * self.V + g + 1) * 2 + 1 if g < self.V - 1 else None
        return (mb * self.V + g - 1) * 2 if g > 0 else None

    def makes(self, c: int) -> int | None:
        """The message compute c sends once it has run."""
        mb, g, b = self.vs(c)
        if b:
            return (mb * self.V + g) * 2 + 1 if g > 0 else None
        return (mb * self.V + g) * 2 if g < self.V - 1 else None

    def run(self, c: int) -> None:
        self.out.append(c)

    def batch(self, *msgs) -> None:
        ids = tuple(k for k in msgs if k is not None)
        if ids:
            self.out.append(ids)


def _one_f_one_b(P: _Stage, p: int, m: int) -> list:
    """:func:`tpsim.training.pipeline.one_f_one_b`'s program of stage P.r, as integers."""
    F = [2 * i for i in range(m)]
    B = [2 * i + 1 for i in range(m)]
    w = min(p - P.r - 1, m)
    rest = m - w
    for i in range(w):
        P.batch(P.needs(F[i]))
        P.run(F[i])
        P.batch(P.makes(F[i]))
    if rest:
        P.batch(P.needs(F[w]))
    for i in range(rest):
        P.run(F[w + i])
        P.batch(P.makes(F[w + i]), P.needs(B[i]))
        P.run(B[i])
        P.batch(P.makes(B[i]), *((P.needs(F[w + i + 1]),) if i < rest - 1 else ()))
    for i in range(rest, m):
        P.batch(P.needs(B[i]))
        P.run(B[i])
        P.batch(P.makes(B[i]))
    return P.out


def _interleaved(P: _Stage, p: int, m: int, v: int) -> list:
    """:func:`tpsim.training.pipeline.interleaved`'s program of stage P.r, as integers."""
    table = schedule_table(m, v, p)
    F = [2 * (mb * v + c) for mb, c in table]
    B = [2 * (mb * v + v - 1 - c) + 1 for mb, c in table]
    total = m * v
    w = interleaved_warmup(p, v, P.r, m)
    rest = total - w
    P.batch(P.needs(F[0]))
    for k in range(w):
        P.run(F[k])
        recvs = (P.needs(F[k + 1]),) if k + 1 < total else ()
        if k == w - 1 and rest:
            recvs += (P.needs(B[0]),)
        P.batch(P.makes(F[k]), *recvs)
    for k in range(rest):
        P.run(F[w + k])
        P.run(B[k])
        recvs = (P.needs(F[w + k + 1]),) if w + k + 1 < total else ()
        P.batch(P.makes(F[w + k]), P.makes(B[k]), *recvs, P.needs(B[k + 1]))
    if not rest:
        P.batch(P.needs(B[0]))
    for k in range(rest, total):
        P.run(B[k])
        P.batch(P.makes(B[k]), *((P.needs(B[k + 1]),) if k + 1 < total else ()))
    return P.out


def _stage_program(p: int, m: int, v: int, r: int) -> list:
    """Stage r's program (:class:`Shape`), entry for entry as
    :func:`tpsim.training.pipeline.one_f_one_b` and :func:`~tpsim.training.pipeline.interleaved`
    issue it; computes as 2 (mb v + chunk) + b."""
    P = _Stage(p, v, r)
    return _one_f_one_b(P, p, m) if v == 1 else _interleaved(P, p, m, v)


def _compute_code(c: int, v: int, m: int) -> int:
    """A compute of :func:`_stage_program` (2 (mb v + chunk) + b) as :class:`Shape` keeps it."""
    x, b = c >> 1, c & 1
    return 2 * (x % v) + b + (2 * v if b and x // v == m - 1 else 0)


_SHAPES = Memo("pipeline programs as integers", 8, lru=True)


def shape(p: int, m: int, v: int) -> Shape:
    """:class:`Shape` of (p, m, v), memoised by value (a few: the largest hold millions of
    entries)."""
    return _SHAPES.get((p, m, v), Shape, p, m, v)
