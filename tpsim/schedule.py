"""Two streams, one op at a time on each: list scheduling of a priced op graph.

Each op runs on its stream (compute or comm) for its time, after every predecessor has ended.
Whenever a stream can start something, it starts, among the ops whose inputs are ready by then,
the one with the longest path to the end of the graph (its "bottom level", own time included:
critical-path list scheduling, Kwok & Ahmad 1999); ties go to the op issued first, so the
schedule is deterministic. The makespan is the layer time.

The scheduler works on index arrays (a :class:`~tpsim.template.Template`'s ``preds``,
``succs``, ``order`` and ``stream_of``) and a list of durations; :func:`schedule` takes a
``networkx.DiGraph`` with ``stream`` and ``time_s`` node attributes for graphs built by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Timeline:
    """Start and end of every op (by index, in issue order), seconds from the graph's start."""
    names: tuple[str, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]
    streams: tuple[str, ...]        # per op
    makespan_s: float
    runs: dict[str, list[tuple[float, float]]]   # per stream: (start, end) in time order

    @cached_property
    def start_s(self) -> dict[str, float]:
        return dict(zip(self.names, self.start))

    @cached_property
    def end_s(self) -> dict[str, float]:
        return dict(zip(self.names, self.end))

    @cached_property
    def stream(self) -> dict[str, str]:
        return dict(zip(self.names, self.streams))

    def busy_s(self, stream: str) -> float:
        """Time ``stream`` spends running ops."""
        return sum(b - a for a, b in self.intervals(stream))

    def intervals(self, stream: str) -> list[tuple[float, float]]:
        """(start, end) of the ops on ``stream``, in time order (they never overlap)."""
        return self.runs.get(stream, [])

    def exposed_s(self, stream: str = "comm", under: str = "compute") -> float:
        """Time ``stream`` runs while ``under`` is idle: exposed (not overlapped) communication.

        exposed = busy(stream) - |intervals(stream) intersect intervals(under)|
        """
        mine, others = self.intervals(stream), self.intervals(under)
        exposed, j = 0.0, 0
        for a0, a1 in mine:            # both lists sorted and disjoint: one merge pass
            while j < len(others) and others[j][1] <= a0:
                j += 1
            k, hidden = j, 0.0
            while k < len(others) and others[k][0] < a1:
                hidden += min(a1, others[k][1]) - max(a0, others[k][0])
                k += 1
            exposed += max(0.0, (a1 - a0) - hidden)   # rounding must not make it negative
        return exposed


def run(tpl, durations: list[float], host_dispatch_s: float = 0.0,
        interference: float = 0.0) -> Timeline:
    """Critical-path list schedule of a template's ops with these ``durations``.

    The host issues ops in program (template) order, ``host_dispatch_s`` each. It runs ahead of
    the GPU whenever it can (layer after layer, kernels queue up), so a layer is host-bound only
    when issuing its n ops takes longer than running them: then op i cannot start before
    (i + 1) * host_dispatch_s, as eager frameworks run small models. Otherwise the host is
    invisible and the schedule is the GPU's alone.

    A compute op that runs beside a collective already under way runs ``1 - interference`` as
    fast for the overlap (NCCL's kernels take SMs and memory bandwidth from it).
    """
    n = len(durations)
    comm = tpl.streams.index("comm") if "comm" in tpl.streams else -1
    compute = tpl.streams.index("compute") if "compute" in tpl.streams else -1
    args = (durations, tpl.stream_of, len(tpl.streams), tpl.preds, tpl.succs,
            _bottom_levels(durations, tpl.succs, tpl.order), comm, compute, interference)
    start, end, runs = _list_schedule([0.0] * n, *args)
    makespan = max(end, default=0.0)
    if n * host_dispatch_s > makespan:
        start, end, runs = _list_schedule([(i + 1) * host_dispatch_s for i in range(n)], *args)
        makespan = max(end, default=0.0)
    return Timeline(tpl.names, tuple(start), tuple(end), tpl.node_streams, makespan,
                    dict(zip(tpl.streams, runs)))


def schedule(graph, host_dispatch_s: float = 0.0, interference: float = 0.0) -> Timeline:
    """:func:`run` on a ``networkx.DiGraph`` whose nodes carry ``stream`` and ``time_s``
    (issue order: the graph's node order)."""
    from .template import Node, Template
    nodes = tuple(Node(str(n), "", "", a["stream"], None) for n, a in graph.nodes(data=True))
    edges = [(str(u), str(v), "data") for u, v in graph.edges]
    tpl = Template.from_nodes(nodes, edges, {})
    return run(tpl, [a["time_s"] for _, a in graph.nodes(data=True)], host_dispatch_s,
               interference)


def _bottom_levels(durations, succs, order) -> list[float]:
    """Longest path from each op to a sink, counting the op's own time."""
    level = [0.0] * len(durations)
    for i in reversed(order):
        after = succs[i]
        if len(after) == 1:
            level[i] = durations[i] + level[after[0]]
        elif after:
            level[i] = durations[i] + max([level[j] for j in after])
        else:
            level[i] = durations[i] + 0.0
    return level


def slowed_end(t0: float, work: float, busy: list[tuple[float, float]], loss: float) -> float:
    """When an op needing ``work`` seconds alone, started at ``t0``, ends if it runs at
    (1 - loss) speed inside the sorted, disjoint ``busy`` intervals and at full speed outside."""
    t, left, rate = t0, work, 1.0 - loss
    for b0, b1 in busy:
        if b1 <= t:
            continue
        if b0 > t:
            if t + left <= b0:
                return t + left
            left, t = left - (b0 - t), b0
        if rate > 0 and t + left / rate <= b1:
            return t + left / rate
        left, t = left - (b1 - t) * rate, b1
    return t + left


def _list_schedule(issued, dur, stream_of, nstreams, preds, succs, level, comm, compute,
                   interference):
    """List scheduling, most critical ready op first; an op waits for its inputs and its issue.

    At each step the stream that can start an op soonest (max of the stream's free time and its
    earliest ready op; ties: the stream first in name order) starts, among its ops ready by
    then, the one with the longest path to the end (ties: the op issued first). Returns
    (start, end, runs per stream index)."""
    n = len(dur)
    waiting = [len(p) for p in preds]
    ready: list[list[int]] = [[] for _ in range(nstreams)]
    ready_at = list(issued)
    free = [0.0] * nstreams
    for i in range(n):
        if not waiting[i]:
            ready[stream_of[i]].append(i)
    start, end = [0.0] * n, [0.0] * n
    runs: list[list[tuple[float, float]]] = [[] for _ in range(nstreams)]
    comm_runs = runs[comm] if comm >= 0 else []
    streams = range(nstreams)
    for _ in range(n):
        t0, s = float("inf"), -1          # the stream that can start soonest, and when
        for k in streams:
            mine = ready[k]
            if mine:
                tk = ready_at[mine[0]] if len(mine) == 1 else min([ready_at[i] for i in mine])
                if tk < free[k]:
                    tk = free[k]
                if tk < t0:
                    t0, s = tk, k
        if s < 0:
            raise ValueError("the op graph has a cycle")
        mine = ready[s]
        if len(mine) == 1:
            i = mine.pop()
        else:                             # the most critical op ready by t0
            i = -1
            for j in mine:
                if ready_at[j] <= t0 and (i < 0 or level[j] > level[i]
                                          or (level[j] == level[i] and j < i)):
                    i = j
            mine.remove(i)
        start[i] = t0
        if interference and s == compute and comm_runs:
            t1 = slowed_end(t0, dur[i], comm_runs, interference)
        else:
            t1 = t0 + dur[i]
        end[i] = free[s] = t1
        runs[s].append((t0, t1))
        for j in succs[i]:
            waiting[j] -= 1
            if not waiting[j]:
                t = issued[j]
                for p in preds[j]:
                    if end[p] > t:
                        t = end[p]
                ready_at[j] = t
                ready[stream_of[j]].append(j)
    return start, end, runs
