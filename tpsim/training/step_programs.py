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
from .torch_pipeline import TORCH, torch_program


class Shape:
    """The pipeline's programs as integers, for ``p`` stages, ``m`` micro-batches, ``v`` chunks
    (``runtime`` TORCH, with v > 1: :func:`tpsim.training.torch_pipeline.torch_program`'s).

    ``progs[r]``: stage r's entries in issue order; a compute is an int 2 chunk + b (b = 1: a
    backward), plus 2 v for the last micro-batch's backward (the one cut into gradient
    buckets); a p2p batch is a tuple of message ids (its sends, then its receives). Message
    k = 2 (mb V + src) + (1: a gradient, to src - 1; 0: an activation, to src + 1) over
    virtual stages (V = p v); ``link[k]`` indexes ``links``, the directed stage pairs
    (src mod p, dst mod p); ``after[k]`` (``next[k]``): the message before (after) it on its
    link, in its sender's order (-1: none)."""

    def __init__(self, p: int, m: int, v: int, runtime: str = "megatron"):
        self.p, self.m, self.v = p, m, v
        V = p * v
        table = schedule_table(m, v, p) if v > 1 else [(i, 0) for i in range(m)]
        orders = (_Orders(p, m, v, table, 0),
                  _Orders(p, m, v, [(mb, v - 1 - c) for mb, c in table], 1))
        if v > 1 and runtime == TORCH:
            built = [torch_program(p, m, v, r) for r in range(p)]
        else:
            built = [(_one_f_one_b if v == 1 else _interleaved)(_Stage(p, m, v, r), *orders)
                     for r in range(p)]
        self.progs = [prog for prog, _ in built]
        self.link, self.after, self.next, index = _links(
            [sends for _, sends in built], p, V, 2 * m * V)
        self.links = tuple(index)


def _links(sends: list, p: int, V: int, n: int) -> tuple[list, list, list, dict]:
    """(link, after, next) per message and the links' index, from each stage's sends in
    order: a message from virtual stage src goes to src - 1 (a gradient) or src + 1, so its
    link is (sender, (src -+ 1) mod p); on each link, the sender's order. Many messages are
    ordered with numpy, a few in Python (a one-stage prediction imports no numpy)."""
    index: dict[tuple[int, int], int] = {}
    if sum(map(len, sends)) < 2048:
        link, after, nxt = [-1] * n, [-1] * n, [-1] * n
        for r, ks in enumerate(sends):
            last: dict[int, int] = {}
            for k in ks:
                src = (k >> 1) % V
                b = (src - 1 if k & 1 else src + 1) % p
                link[k] = index.setdefault((r, b), len(index))
                after[k] = prev = last.get(b, -1)
                if prev >= 0:
                    nxt[prev] = k
                last[b] = k
        return link, after, nxt, index
    import numpy as np
    link, after, nxt = (np.full(n, -1, np.intp) for _ in range(3))
    for r, ks in enumerate(sends):
        ks = np.array(ks, dtype=np.intp)
        src = (ks >> 1) % V
        dst = np.where(ks & 1, src - 1, src + 1) % p
        for b in np.unique(dst).tolist():
            on = ks[dst == b]
            link[on] = index.setdefault((r, b), len(index))
            after[on[1:]], nxt[on[:-1]] = on[:-1], on[1:]
    return link.tolist(), after.tolist(), nxt.tolist(), index


class _Orders:
    """What the computes in ``order`` ((micro-batch, chunk) each; b = 1: backwards) have
    alike on every stage: their codes, 2 (mb V + c p) (stage r's messages are these plus
    constants), and the places of chunk 0 and chunk v - 1 (where the first and last stage
    have no upstream or downstream message)."""

    def __init__(self, p: int, m: int, v: int, order: list, b: int):
        V, last, top = p * v, m - 1, v - 1
        self.b = b
        self.codes = [2 * c + b + (2 * v if b and mb == last else 0) for mb, c in order]
        self.base = [2 * (mb * V + c * p) for mb, c in order]
        self.chunk0 = [i for i, (_, c) in enumerate(order) if c == 0]
        self.chunk_last = [i for i, (_, c) in enumerate(order) if c == top]


def _shift(base: list, d: int, none) -> list:
    """``base`` plus d, None at the places ``none``."""
    out = [x + d for x in base]
    for i in none:
        out[i] = None
    return out


class _Stage:
    """Stage r's program being written (computes as :class:`Shape` keeps them, batches) and
    the messages it sends, in order; ``F``/``B``: per forward and backward of the schedule
    (micro-batch, chunk), its code and messages (None: none)."""

    def __init__(self, p: int, m: int, v: int, r: int):
        self.p, self.m, self.v, self.r, self.out, self.sends = p, m, v, r, [], []

    def units(self, order: _Orders) -> tuple[list, list, list]:
        """(codes, needs, makes) of the computes of ``order``: a forward of virtual stage g
        needs activation 2 (mb V + g - 1) and makes 2 (mb V + g); a backward needs gradient
        2 (mb V + g + 1) + 1 and makes 2 (mb V + g) + 1 (None: virtual stage 0 or V - 1 has
        no such message). The codes are shared by every stage (read only)."""
        r, base, first, last = self.r, order.base, order.chunk0, order.chunk_last
        first, last = first if r == 0 else (), last if r == self.p - 1 else ()
        if order.b:
            return order.codes, _shift(base, 2 * r + 3, last), _shift(base, 2 * r + 1, first)
        return order.codes, _shift(base, 2 * r - 2, first), _shift(base, 2 * r, last)

    def batch(self, sends=(), recvs=()) -> None:
        if None in sends:
            sends = tuple(k for k in sends if k is not None)
        ids = sends + (recvs if None not in recvs else tuple(k for k in recvs if k is not None))
        if ids:
            self.out.append(ids)
            self.sends += sends


def _one_f_one_b(P: _Stage, forwards: _Orders, backwards: _Orders) -> tuple[list, list]:
    """:func:`tpsim.training.pipeline.one_f_one_b`'s program of stage P.r, as integers: a stage
    with an upstream (r > 0) receives activations and sends gradients, one with a downstream
    (r < p - 1) the converse; a batch with nothing to move is not issued."""
    p, m, out, sends = P.p, P.m, P.out, P.sends
    F, nF, mF = P.units(forwards)
    B, nB, mB = P.units(backwards)
    up, down = P.r > 0, P.r < p - 1
    w = min(p - P.r - 1, m)
    rest = m - w
    for i in range(w):
        if up:
            out.append((nF[i],))
        out.append(F[i])
        if down:
            out.append((mF[i],))
            sends.append(mF[i])
    if rest and up:
        out.append((nF[w],))
    for i in range(rest):
        out.append(F[w + i])
        if down:
            out.append((mF[w + i], nB[i]))
            sends.append(mF[w + i])
        out.append(B[i])
        if up:
            out.append((mB[i], nF[w + i + 1]) if i < rest - 1 else (mB[i],))
            sends.append(mB[i])
    for i in range(rest, m):
        if down:
            out.append((nB[i],))
        out.append(B[i])
        if up:
            out.append((mB[i],))
            sends.append(mB[i])
    return out, sends


def _interleaved(P: _Stage, forwards: _Orders, backwards: _Orders) -> tuple[list, list]:
    """:func:`tpsim.training.pipeline.interleaved`'s program of stage P.r, as integers."""
    p, m, v, run, batch = P.p, P.m, P.v, P.out.append, P.batch
    F, nF, mF = P.units(forwards)
    B, nB, mB = P.units(backwards)
    total = m * v
    w = interleaved_warmup(p, v, P.r, m)
    rest = total - w
    batch(recvs=(nF[0],))
    for k in range(w):
        run(F[k])
        recvs = (nF[k + 1],) if k + 1 < total else ()
        if k == w - 1 and rest:
            recvs += (nB[0],)
        batch((mF[k],), recvs)
    sent = P.sends
    for k in range(rest):                   # the bulk: batch's work inline
        run(F[w + k])
        run(B[k])
        sends = (mF[w + k], mB[k])
        recvs = (nF[w + k + 1], nB[k + 1]) if w + k + 1 < total else (nB[k + 1],)
        if None in sends or None in recvs:
            batch(sends, recvs)
        else:
            run(sends + recvs)
            sent += sends
    if not rest:
        batch(recvs=(nB[0],))
    for k in range(rest, total):
        run(B[k])
        batch((mB[k],), (nB[k + 1],) if k + 1 < total else ())
    return P.out, P.sends


_SHAPES = Memo("pipeline programs as integers", 8, lru=True)


def shape(p: int, m: int, v: int, runtime: str = "megatron") -> Shape:
    """:class:`Shape` of (p, m, v) under ``runtime`` (``TORCH``: torch 2.8's interleaved
    schedule, :mod:`tpsim.training.torch_pipeline`), memoised by value (a few: the largest
    hold millions of entries)."""
    return _SHAPES.get((p, m, v, runtime), Shape, p, m, v, runtime)
