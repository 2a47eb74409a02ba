"""The step timed in one pass: the pipeline's stage programs as integers, walked in an order in
which every op's inputs are already timed.

A GPU stream is an in-order queue, so op i of the step starts at

    start_i = max(end of the op before it on its stream, max_{p in inputs(i)} end_p),
    end_i = start_i + d_i

and the makespan is a max-plus longest path through the data edges and the stream chains
(:mod:`tpsim.training.step_graph` states the same recurrence over a built graph). Any order in
which inputs come first gives the same times, bit for bit: each end is the same maximum plus
the same duration. :func:`time_pipeline` finds one while it times: it advances each stage's
program (:func:`programs`: Megatron-core's 1F1B or interleaved 1F1B, as
:mod:`tpsim.training.pipeline` builds it with objects) until a p2p batch waits for a transfer
whose other side (or whose predecessor on its directed link) is not there yet, and comes back
to it when it is. A transfer starts when both sides have posted it (each side's previous op has
ended) and its link is free; the op after a batch waits for all of the batch's transfers.

:class:`TimedGraph` keeps only what the accounting reads: start, end, stream and kind of each op,
and the ops of each stream; the step's end (:mod:`tpsim.training.step`) adds its few ops to it
with the same ``add`` a :class:`~tpsim.training.step_graph.StepGraph` has, each timed at once.
"""
from __future__ import annotations

from ..base.memo import Memo
from .pipeline import StageOps, interleaved_warmup, schedule_table


KINDS = ("compute", "dp", "optimizer", "p2p", "tp", "pp")     # a TimedGraph's kind codes
_CODE = {k: i for i, k in enumerate(KINDS)}


class TimedGraph:
    """Ops timed as they are added (every op's inputs added before it): ``start``, ``end`` and
    ``kind`` (an index into :data:`KINDS`) per op; ``on[stream]`` its ops in stream order."""

    def __init__(self):
        self.start: list[float] = []
        self.end: list[float] = []
        self.kind: list[int] = []
        self.on: dict[str, list[int]] = {}

    def add(self, name: str, stream: str, seconds: float, deps=(), phase: str = "",
            block: str = "", kind: str = "compute") -> int:
        """Op ``name`` on ``stream`` for ``seconds`` after ``deps`` (op indices, None skipped)
        and its stream's previous op: start = max of their ends, end = start + seconds."""
        if seconds < 0:
            raise ValueError(f"{name}: negative duration {seconds}")
        ops = self.on.setdefault(stream, [])
        end = self.end
        t0 = end[ops[-1]] if ops else 0.0
        for d in deps:
            if d is not None and end[d] > t0:
                t0 = end[d]
        i = len(end)
        self.start.append(t0)
        end.append(t0 + float(seconds))
        self.kind.append(_CODE[kind])
        ops.append(i)
        return i

    def set_kind(self, op: int, kind: str) -> None:
        self.kind[op] = _CODE[kind]

    @property
    def makespan_s(self) -> float:
        return max(self.end, default=0.0)


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


def _compute_code(c: int, v: int, m: int) -> int:
    """A compute of :func:`_stage_program` (2 (mb v + chunk) + b) as :class:`Shape` keeps it."""
    x, b = c >> 1, c & 1
    return 2 * (x % v) + b + (2 * v if b and x // v == m - 1 else 0)


def _stage_program(p: int, m: int, v: int, r: int) -> list:
    """Stage r's program (:class:`Shape`), entry for entry as
    :func:`tpsim.training.pipeline.one_f_one_b` and :func:`~tpsim.training.pipeline.interleaved`
    issue it."""
    V, out = p * v, []

    def needs(c):            # the message a compute receives first (None: it has no upstream)
        x, b = c >> 1, c & 1                 # x = mb v + chunk
        g = (x % v) * p + r
        if b:
            return (x // v * V + g + 1) * 2 + 1 if g < V - 1 else None
        return (x // v * V + g - 1) * 2 if g > 0 else None

    def makes(c):            # the message a compute sends once it has run
        x, b = c >> 1, c & 1
        g = (x % v) * p + r
        if b:
            return (x // v * V + g) * 2 + 1 if g > 0 else None
        return (x // v * V + g) * 2 if g < V - 1 else None

    def batch(*msgs):
        ids = tuple(k for k in msgs if k is not None)
        if ids:
            out.append(ids)
    if v == 1:
        F = [2 * i for i in range(m)]
        B = [2 * i + 1 for i in range(m)]
        w = min(p - r - 1, m)
        rest = m - w
        for i in range(w):
            batch(needs(F[i]))
            out.append(F[i])
            batch(makes(F[i]))
        if rest:
            batch(needs(F[w]))
        for i in range(rest):
            out.append(F[w + i])
            batch(makes(F[w + i]), needs(B[i]))
            out.append(B[i])
            batch(makes(B[i]), *((needs(F[w + i + 1]),) if i < rest - 1 else ()))
        for i in range(rest, m):
            batch(needs(B[i]))
            out.append(B[i])
            batch(makes(B[i]))
        return out
    table = schedule_table(m, v, p)
    F = [2 * (mb * v + c) for mb, c in table]
    B = [2 * (mb * v + v - 1 - c) + 1 for mb, c in table]
    total = m * v
    w = interleaved_warmup(p, v, r, m)
    rest = total - w
    batch(needs(F[0]))
    for k in range(w):
        out.append(F[k])
        recvs = (needs(F[k + 1]),) if k + 1 < total else ()
        if k == w - 1 and rest:
            recvs += (needs(B[0]),)
        batch(makes(F[k]), *recvs)
    for k in range(rest):
        out.append(F[w + k])
        out.append(B[k])
        recvs = (needs(F[w + k + 1]),) if w + k + 1 < total else ()
        batch(makes(F[w + k]), makes(B[k]), *recvs, needs(B[k + 1]) if k + 1 < total else None)
    if not rest:
        batch(needs(B[0]))
    for k in range(rest, total):
        out.append(B[k])
        batch(makes(B[k]), *((needs(B[k + 1]),) if k + 1 < total else ()))
    return out


_SHAPES = Memo("pipeline programs as integers", 8, lru=True)


def shape(p: int, m: int, v: int) -> Shape:
    """:class:`Shape` of (p, m, v), memoised by value (a few: the largest hold millions of
    entries)."""
    return _SHAPES.get((p, m, v), Shape, p, m, v)


def time_pipeline(g: TimedGraph, sh: Shape, chunk_s, transfer_s, split=None) -> list[StageOps]:
    """Time ``sh``'s programs into ``g`` as :func:`tpsim.training.pipeline.add_pipeline` puts
    them into a step graph (same arguments, same streams ``stage{r}`` and ``p2p {a}>{b}``,
    same kinds), walking the stages (module docstring); per stage its
    :class:`~tpsim.training.pipeline.StageOps`."""
    p, v = sh.p, sh.v
    link, after, nxt, progs = sh.link, sh.after, sh.next, sh.progs
    start, end, kind = g.start, g.end, g.kind
    first: list = [None] * len(link)
    both: list = [None] * len(link)
    op = [-1] * len(link)
    lops = [g.on.setdefault(f"p2p {a}>{b}", []) for a, b in sh.links]
    ld = [_seconds(transfer_s(a, b), f"p2p {a}>{b}") for a, b in sh.links]
    lfree = [0.0] * len(ld)
    P2P, COMPUTE = _CODE["p2p"], _CODE["compute"]

    def transfer(k: int, t: float) -> None:
        """Message k, both sides ready at t, its link's previous transfer done: time it and
        the transfers on its link that waited for it."""
        while True:
            j = link[k]
            t0 = t if t > lfree[j] else lfree[j]
            op[k] = i = len(end)
            start.append(t0)
            end.append(t0 + ld[j])
            lfree[j] = end[i]
            kind.append(P2P)
            lops[j].append(i)
            k = nxt[k]
            if k < 0 or both[k] is None:
                return
            t = both[k]

    sops = [g.on.setdefault(f"stage{r}", []) for r in range(p)]
    dur = [[_seconds(chunk_s(r, x, k), f"stage{r}") for x in range(v) for k in "FB"] * 2
           for r in range(p)]         # twice: the last backward, when it is not cut
    pc, at, ready_at, free_at = [0] * p, [-1] * p, [0.0] * p, [0.0] * p
    pieces: list[dict] = [{} for _ in range(p)]
    tv = 2 * v

    def advance(r: int) -> bool:
        """Run stage r until a batch waits for a transfer (True: anything ran)."""
        prog, i, ready, free, i0 = progs[r], pc[r], ready_at[r], free_at[r], pc[r]
        ops, d, n = sops[r], dur[r], len(progs[r])
        while i < n:
            e = prog[i]
            if type(e) is int:
                t0 = ready if ready > free else free
                if e < tv or split is None:
                    ops.append(len(end))
                    start.append(t0)
                    end.append(t0 + d[e])
                    kind.append(COMPUTE)
                else:
                    ids = []
                    for _, seconds in split(r, (e - tv) >> 1):
                        ids.append(len(end))
                        start.append(t0)
                        end.append(t0 + float(seconds))
                        kind.append(COMPUTE)
                        t0 = end[-1]
                    ops.extend(ids)
                    pieces[r][(e - tv) >> 1] = tuple(ids)
                ready = free = end[-1]
            else:
                if at[r] != i:
                    at[r] = i
                    for k in e:                      # post this side of each transfer
                        t = first[k]
                        if t is None:
                            first[k] = ready
                            continue
                        both[k] = t = t if t > ready else ready
                        if after[k] < 0 or op[after[k]] >= 0:
                            transfer(k, t)
                t = 0.0
                for k in e:
                    if op[k] < 0:
                        break
                    if end[op[k]] > t:
                        t = end[op[k]]
                else:
                    ready = t
                    i += 1
                    continue
                break
            i += 1
        pc[r], ready_at[r], free_at[r] = i, ready, free
        return i > i0

    todo = list(range(p))
    while todo:
        moved = False
        for r in todo:
            moved = advance(r) or moved
        todo = [r for r in reversed(todo) if pc[r] < len(progs[r])]
        if todo and not moved:
            raise RuntimeError(f"the step's program deadlocks: stage {todo[-1]} never becomes "
                               "ready")
    return [StageOps(_last(progs[r], sops[r], op), pieces[r]) for r in range(p)]


def _seconds(t, name: str) -> float:
    if t < 0:
        raise ValueError(f"{name}: negative duration {t}")
    return float(t)


def _last(prog: list, ops: list, op: list) -> tuple:
    """The ops a stage's program ends with: its last batch's transfers or its last compute."""
    if not prog:
        return ()
    return (ops[-1],) if type(prog[-1]) is int else tuple(op[k] for k in prog[-1])
