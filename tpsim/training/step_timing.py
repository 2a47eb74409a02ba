"""The step timed in one pass: the pipeline's stage programs as integers, walked in an order in
which every op's inputs are already timed.

A GPU stream is an in-order queue, so op i of the step starts at

    start_i = max(end of the op before it on its stream, max_{p in inputs(i)} end_p),
    end_i = start_i + d_i

and the makespan is a max-plus longest path through the data edges and the stream chains
(:mod:`tpsim.training.step_graph` states the same recurrence over a built graph). Any order in
which inputs come first gives the same times, bit for bit: each end is the same maximum plus
the same duration. :func:`time_pipeline` finds one while it times: it advances each stage's
program (:mod:`tpsim.training.step_programs`: Megatron-core's 1F1B or interleaved 1F1B, as
:mod:`tpsim.training.pipeline` builds it with objects) until a p2p batch waits for a transfer
whose other side (or whose predecessor on its directed link) is not there yet, and comes back
to it when it is. A transfer starts when both sides have posted it (each side's previous op has
ended) and its link is free; the op after a batch waits for all of the batch's transfers, so
no compute of either side runs beside a transfer.

A compute op (a chunk, a piece of a last backward, a pre-scale kernel) that runs beside one of
its stage's DP collectives (the gradient buckets' reductions, priced once per step in
:mod:`tpsim.training.step_reduce`, which the walk times as each bucket's pre-scale kernel ends:
t = max(that end, the DP stream's previous end) + reduction; the overlapped weight all-gathers
already on the DP stream) runs at 1 - I of its speed while the collective runs (I the device's
``comm_compute_interference``; the same :func:`tpsim.sim.schedule.slowed_end` as the layer's and
ZeRO-2/3's collectives): its end is slowed_end(start, seconds, the stage's DP intervals, I), its
slowed length kept in ``slowed`` (the op-by-op graph runs the same lengths) and the time it lost
in ``lost``.

:class:`TimedGraph` keeps only what the accounting reads: start, end and kind of each op, and
the ops of each stream; the step's end (:mod:`tpsim.training.step`) adds its few ops to it
with the same ``add`` a :class:`~tpsim.training.step_graph.StepGraph` has, each timed at once.
"""
from __future__ import annotations

from ..sim.schedule import slowed_end
from .pipeline import StageOps
from .step_programs import Shape


KINDS = ("compute", "dp", "optimizer", "p2p", "tp", "pp")     # a TimedGraph's kind codes
_CODE = {k: i for i, k in enumerate(KINDS)}
_COMPUTE, _P2P, _DP = _CODE["compute"], _CODE["p2p"], _CODE["dp"]


class TimedGraph:
    """Ops timed as they are added (every op's inputs added before it): ``start``, ``end`` and
    ``kind`` (an index into :data:`KINDS`) per op; ``on[stream]`` its ops in stream order;
    ``reductions[stage, chunk]``: the seconds of the reduction of each gradient bucket of that
    chunk's last backward, priced once for the walk and the step's DP ops
    (:func:`tpsim.training.step_reduce.bucket_reductions`)."""

    def __init__(self):
        self.start: list[float] = []
        self.end: list[float] = []
        self.kind: list[int] = []
        self.on: dict[str, list[int]] = {}
        self.waits: dict[tuple[int, int], float] = {}    # (stage, chunk): its first forward's
                                                         # wait for the weight all-gather
        self.wait_ops: list[int] = []                    # those waits' ops
        self.slowed: dict[int, float] = {}               # op: its length beside DP collectives
        self.lost: dict[int, float] = {}                 # op: the time those cost it
        self.reductions: dict[tuple[int, int], list] = {}   # see the class docstring

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

    def lost_s(self, stream: str) -> float:
        """The time the compute ops on ``stream`` lost beside DP collectives (their kind
        compute: a pre-scale kernel's, "dp", counts whole as DP time)."""
        lost, kind = self.lost, self.kind
        return sum(lost[i] for i in self.on.get(stream, ()) if i in lost and kind[i] == _COMPUTE)

    @property
    def makespan_s(self) -> float:
        return max(self.end, default=0.0)


def time_pipeline(g: TimedGraph, sh: Shape, chunk_s, transfer_s, split=None,
                  release=None, reduce=None, interference: float = 0.0) -> list[StageOps]:
    """Time ``sh``'s programs into ``g`` as :func:`tpsim.training.pipeline.add_pipeline` puts
    them into a step graph (same arguments, same streams ``stage{r}`` and ``p2p {a}>{b}``,
    same kinds), walking the stages (module docstring); per stage its
    :class:`~tpsim.training.pipeline.StageOps`. ``release``: None, or per stage
    {forward code: time} before which that code's first run may not start (the overlapped
    weight all-gather): the stage waits for it in a "dp" op, kept in ``g.waits``. ``reduce``:
    None, or ``reduce(stage, chunk)`` the seconds of the reduction after each pre-scale piece
    (odd position) of ``split``'s (the step's: priced once, and the same seconds become its DP
    ops, :mod:`tpsim.training.step_reduce`); ``interference``: the compute's slowdown beside the stage's
    DP collectives (module docstring)."""
    w = _Walk(g, sh, chunk_s, transfer_s, split, release, reduce, interference)
    w.run()
    return [StageOps(_last(sh.progs[r], w.sops[r], w.op), w.pieces[r]) for r in range(sh.p)]


class _Walk:
    """The state of :func:`time_pipeline`: per message the first side's ready time
    (``first``), both sides' (``both``) and its op once timed (``op``); per link its ops, its
    transfer time and when it is free; per stage its place in its program (``pc``), the batch
    it has posted (``at``) and when its next op may start (``ready``: its stream is free by
    then)."""

    def __init__(self, g: TimedGraph, sh: Shape, chunk_s, transfer_s, split, release=None,
                 reduce=None, interference: float = 0.0):
        self.g, self.sh, self.split, self.reduce, self.loss = g, sh, split, reduce, interference
        self.release = [dict(x) for x in release] if release else [None] * sh.p
        n, p, v = len(sh.link), sh.p, sh.v
        self.first, self.both, self.op = [None] * n, [None] * n, [-1] * n
        self.tend: list = [None] * n          # each transfer's end, once timed
        self.lops = [g.on.setdefault(f"p2p {a}>{b}", []) for a, b in sh.links]
        self.ld = [_seconds(transfer_s(a, b), f"p2p {a}>{b}") for a, b in sh.links]
        self.lfree = [0.0] * len(self.ld)
        self.sops = [g.on.setdefault(f"stage{r}", []) for r in range(p)]
        self.dur = [[_seconds(chunk_s(r, x, k), f"stage{r}") for x in range(v) for k in "FB"]
                    * 2 for r in range(p)]      # twice: the last backward, when it is not cut
        self.pc, self.at, self.ready = [0] * p, [-1] * p, [0.0] * p
        self.pieces: list[dict] = [{} for _ in range(p)]
        self.transfer = self._transfers()
        self.busy = [[(g.start[i], g.end[i]) for i in g.on.get(f"stage{r}.dp", ())]
                     for r in range(p)]        # per stage: its DP collectives, in time order
        self.busy_end = [b[-1][1] if b and interference else 0.0 for b in self.busy]

    def _transfers(self):
        """``transfer(k, t)``: message k, both sides ready at t, its link's previous transfer
        done: time it and the transfers on its link that waited for it. A closure over the
        walk's lists (called once per message)."""
        link, nxt, both, lfree, ld, op, lops, tend = self.sh.link, self.sh.next, self.both, \
            self.lfree, self.ld, self.op, self.lops, self.tend
        end, add_start, add_kind = self.g.end, self.g.start.append, self.g.kind.append
        add_end = end.append

        def transfer(k: int, t: float) -> None:
            while True:
                j = link[k]
                free = lfree[j]
                t0 = t if t > free else free
                op[k] = i = len(end)
                add_start(t0)
                lfree[j] = tend[k] = t1 = t0 + ld[j]
                add_end(t1)
                add_kind(_P2P)
                lops[j].append(i)
                k = nxt[k]
                if k < 0:
                    return
                t = both[k]
                if t is None:
                    return
        return transfer

    def cut(self, r: int, chunk: int, t0: float) -> None:
        """The last backward of ``chunk`` on stage r, in the pieces ``split`` cuts it into."""
        ids, reduce = [], self.reduce(r, chunk) if self.reduce else ()
        for k, (_, seconds) in enumerate(self.split(r, chunk)):
            ids.append(len(self.g.end))
            t0 = self.compute(r, t0, float(seconds))
            if k & 1 and reduce:
                self.reduced(r, t0, reduce[k >> 1])
        self.sops[r].extend(ids)
        self.pieces[r][chunk] = tuple(ids)

    def compute(self, r: int, t0: float, seconds: float) -> float:
        """A compute op of stage r from t0, slowed beside its DP collectives (module
        docstring); returns its end."""
        g, busy = self.g, self.busy[r]
        i = len(g.end)
        if self.busy_end[r] > t0:
            while busy[0][1] <= t0:
                busy.pop(0)
            slow = slowed_end(t0, seconds, busy, self.loss) - t0
            if slow > seconds:
                g.slowed[i] = slow
                g.lost[i] = slow - seconds
                seconds = slow
        g.start.append(t0)
        g.end.append(t0 + seconds)
        g.kind.append(_COMPUTE)
        return g.end[i]

    def reduced(self, r: int, t: float, seconds: float) -> None:
        """A bucket's reduction on stage r's DP stream, its pre-scale ended at t."""
        busy = self.busy[r]
        t0 = busy[-1][1] if busy and busy[-1][1] > t else t
        busy.append((t0, t0 + float(seconds)))
        if self.loss:
            self.busy_end[r] = busy[-1][1]

    def wait(self, r: int, e: int, t0: float) -> float:
        """Stage r's first run of forward code e, ready at t0, waits for its release (the
        weight all-gather of its buckets) in a "dp" op; returns when it starts."""
        at = self.release[r].pop(e)
        if at <= t0:
            return t0
        g = self.g
        g.waits[r, e >> 1] = at - t0
        g.wait_ops.append(len(g.end))
        self.sops[r].append(len(g.end))
        g.start.append(t0)
        g.end.append(at)
        g.kind.append(_DP)
        return at

    def run(self) -> None:
        """Round after round, run each unfinished stage until a batch waits for a transfer
        (module docstring); a compute starts when its stage is free (slowed: :meth:`compute`)."""
        sh, pcs, readys, at, first, both, tend, end = self.sh, self.pc, self.ready, self.at, \
            self.first, self.both, self.tend, self.g.end
        progs, sops, durs, tv, after, transfer, release = sh.progs, self.sops, self.dur, \
            2 * sh.v, sh.after, self.transfer, self.release
        lens, whole, add_start, add_end, add_kind = [len(x) for x in sh.progs], \
            self.split is None, self.g.start.append, end.append, self.g.kind.append
        todo, busy_end = list(range(sh.p)), self.busy_end
        while todo:
            moved = False
            for r in todo:
                prog, i, ready, ops, d, n, rel = progs[r], pcs[r], readys[r], sops[r], durs[r], \
                    lens[r], release[r]
                moved = moved or (i < n and (type(prog[i]) is int or at[r] != i))
                add_op = ops.append
                while i < n:
                    e = prog[i]
                    if type(e) is int:
                        if rel and e in rel:
                            ready = self.wait(r, e, ready)
                        if e >= tv and not whole:
                            self.cut(r, (e - tv) >> 1, ready)
                            ready = end[-1]
                        elif ready < busy_end[r]:
                            add_op(len(end))
                            ready = self.compute(r, ready, d[e])   # beside a DP collective
                        else:
                            add_op(len(end))
                            add_start(ready)
                            ready += d[e]
                            add_end(ready)
                            add_kind(_COMPUTE)
                        i += 1
                        continue
                    if at[r] != i:
                        at[r] = i
                        for k in e:
                            t = first[k]
                            if t is None:
                                first[k] = ready
                                continue
                            both[k] = t = t if t > ready else ready
                            if after[k] < 0 or tend[after[k]] is not None:
                                transfer(k, t)
                    t = 0.0                          # when every transfer has ended
                    for k in e:
                        x = tend[k]
                        if x is None:
                            break
                        if x > t:
                            t = x
                    else:
                        ready, i, moved = t, i + 1, True
                        continue
                    break
                pcs[r], readys[r] = i, ready
            todo = [r for r in reversed(todo) if pcs[r] < lens[r]]
            _check(todo, moved)


def _check(todo: list, moved: bool) -> None:
    if todo and not moved:
        raise RuntimeError(f"the step's program deadlocks: stage {todo[-1]} never becomes ready")


def _seconds(t, name: str) -> float:
    if t < 0:
        raise ValueError(f"{name}: negative duration {t}")
    return float(t)


def _last(prog: list, ops: list, op: list) -> tuple:
    """The ops a stage's program ends with: its last batch's transfers or its last compute."""
    if not prog:
        return ()
    return (ops[-1],) if type(prog[-1]) is int else tuple(op[k] for k in prog[-1])
