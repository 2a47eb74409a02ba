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


class TimedGraph:
    """Ops timed as they are added (every op's inputs added before it): ``start``, ``end``,
    ``streams``, ``kinds`` per op; ``on[stream]`` its ops in stream order."""

    def __init__(self):
        self.start: list[float] = []
        self.end: list[float] = []
        self.streams: list[str] = []
        self.kinds: list[str] = []
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
        return self._put(stream, kind, t0, t0 + float(seconds), ops)

    def _put(self, stream: str, kind: str, t0: float, t1: float, ops: list) -> int:
        i = len(self.end)
        self.start.append(t0)
        self.end.append(t1)
        self.streams.append(stream)
        self.kinds.append(kind)
        ops.append(i)
        return i

    @property
    def makespan_s(self) -> float:
        return max(self.end, default=0.0)


class Shape:
    """The pipeline's programs as integers, for ``p`` stages, ``m`` micro-batches, ``v`` chunks.

    ``progs[r]``: stage r's entries in issue order; a compute is an int c = 2 (mb v + chunk) + b
    (b = 1: backward), a p2p batch a tuple of message ids (its sends, then its receives).
    Message k = 2 (mb V + src) + (1: a gradient, to src - 1; 0: an activation, to src + 1) over
    virtual stages (V = p v); ``link[k]`` its directed stage pair (src mod p, dst mod p);
    ``after[k]``: the message before it on that link, in its sender's order (-1: none)."""

    def __init__(self, p: int, m: int, v: int):
        self.p, self.m, self.v = p, m, v
        V = p * v
        self.progs = [_stage_program(p, m, v, r) for r in range(p)]
        n = 2 * m * V
        self.link: list[tuple[int, int] | None] = [None] * n
        self.after = [-1] * n
        self.next = [-1] * n
        last: dict[tuple[int, int], int] = {}
        for r, prog in enumerate(self.progs):         # sends, in each sender's order
            for e in prog:
                if type(e) is int:
                    continue
                for k in e:
                    src = (k >> 1) % V
                    if src % p != r or self.link[k] is not None:     # a receive
                        continue
                    pair = (src % p, (src - 1 if k & 1 else src + 1) % p)
                    self.link[k] = pair
                    prev = last.get(pair, -1)
                    self.after[k] = prev
                    if prev >= 0:
                        self.next[prev] = k
                    last[pair] = k
        self.links = tuple(last)


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
    same kinds), walking the stages round-robin (module docstring); per stage its
    :class:`~tpsim.training.pipeline.StageOps`."""
    p, m, v = sh.p, sh.m, sh.v
    link, after, nxt = sh.link, sh.after, sh.next
    end = g.end
    posted, side, op = [0] * len(link), [0.0] * len(link), [-1] * len(link)
    lstream = {pair: f"p2p {pair[0]}>{pair[1]}" for pair in sh.links}
    lops = {pair: g.on.setdefault(s, []) for pair, s in lstream.items()}
    ld = {}
    for pair in sh.links:
        ld[pair] = float(transfer_s(*pair))
        if ld[pair] < 0:
            raise ValueError(f"{lstream[pair]}: negative duration {ld[pair]}")

    def post(k: int, t: float) -> None:
        """One side of message k is ready at t; time it, and what waited for it on its link."""
        posted[k] += 1
        if t > side[k]:
            side[k] = t
        if posted[k] < 2 or (after[k] >= 0 and op[after[k]] < 0):
            return
        while True:
            pair = link[k]
            ops = lops[pair]
            t0 = end[ops[-1]] if ops else 0.0
            if side[k] > t0:
                t0 = side[k]
            op[k] = g._put(lstream[pair], "p2p", t0, t0 + ld[pair], ops)
            k = nxt[k]
            if k < 0 or posted[k] < 2:
                return

    streams = [f"stage{r}" for r in range(p)]
    sops = [g.on.setdefault(s, []) for s in streams]
    dur = [[chunk_s(r, x % v, "B" if b else "F") for x in range(v) for b in (0, 1)]
           for r in range(p)]
    pc, at, prev, done = [0] * p, [-1] * p, [()] * p, [0.0] * p
    pieces: list[dict] = [{} for _ in range(p)]
    last = m - 1

    def advance(r: int) -> bool:
        """Run stage r until a batch waits (True if anything ran)."""
        prog, i, ready, moved = sh.progs[r], pc[r], done[r], False
        ops, stream, d = sops[r], streams[r], dur[r]
        while i < len(prog):
            e = prog[i]
            if type(e) is int:
                t0 = end[ops[-1]] if ops and end[ops[-1]] > ready else ready
                x, b = e >> 1, e & 1
                if split is not None and b and x // v == last:
                    ids = []
                    for _, seconds in split(r, x % v):
                        ids.append(g._put(stream, "compute", t0, t0 + float(seconds), ops))
                        t0 = end[-1]
                    pieces[r][x % v] = tuple(ids)
                    prev[r] = (ids[-1],)
                else:
                    prev[r] = (g._put(stream, "compute", t0, t0 + d[2 * (x % v) + b], ops),)
                ready = end[-1]
            else:
                if at[r] != i:
                    at[r] = i
                    for k in e:
                        post(k, ready)
                if any(op[k] < 0 for k in e):
                    break
                prev[r] = tuple(op[k] for k in e)
                ready = max(end[j] for j in prev[r])
            i += 1
            moved = True
        pc[r], done[r] = i, ready
        return moved

    todo = list(range(p))
    while todo:
        moved = False
        for r in todo:
            moved = advance(r) or moved
        todo = [r for r in reversed(todo) if pc[r] < len(sh.progs[r])]
        if todo and not moved:
            raise RuntimeError(f"the step's program deadlocks: stage {todo[-1]} never becomes "
                               "ready")
    return [StageOps(prev[r], pieces[r]) for r in range(p)]
