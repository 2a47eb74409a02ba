"""Two streams, one op at a time on each: list scheduling of a priced op graph.

Each op runs on its node's ``stream`` (compute or comm) for its ``time_s``, after every
predecessor has ended. Whenever a stream can start something, it starts, among the ops whose
inputs are ready by then, the one with the longest path to the end of the graph (its "bottom
level", own time included: critical-path list scheduling, Kwok & Ahmad 1999); ties go to the
op added to the graph first, so the schedule is deterministic. The makespan is the layer time.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class Timeline:
    """Start and end of every op, seconds from the graph's start."""
    start_s: dict[str, float]
    end_s: dict[str, float]
    stream: dict[str, str]
    makespan_s: float
    runs: dict[str, list[tuple[float, float]]]   # per stream: (start, end) in time order

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


def _adjacency(graph: nx.DiGraph) -> tuple[dict, dict]:
    """Predecessor and successor dicts. networkx's views (graph.pred, graph.nodes) cost a
    wrapper object per lookup; its underlying dicts (``_pred``, ``_succ``, ``_node``) are only
    read here."""
    return graph._pred, graph._succ


def topological_order(graph: nx.DiGraph, adjacency: tuple[dict, dict] | None = None) -> list[str]:
    """Kahn's algorithm, taking ready ops in the order they were added (deterministic)."""
    preds, succs = adjacency or _adjacency(graph)
    waiting = {n: len(p) for n, p in preds.items()}
    order = [n for n in graph if waiting[n] == 0]
    for n in order:                      # the list grows while we walk it
        for nxt in succs[n]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                order.append(nxt)
    if len(order) != len(waiting):
        raise ValueError("the op graph has a cycle")
    return order


def bottom_levels(graph: nx.DiGraph, order: list[str], succs: dict | None = None) -> dict:
    """Longest path from each op to a sink, counting the op's own time."""
    succs = succs or _adjacency(graph)[1]
    level: dict[str, float] = {}
    for n in reversed(order):
        after = [level[s] for s in succs[n]]
        level[n] = graph._node[n]["time_s"] + (max(after) if after else 0.0)
    return level


def schedule(graph: nx.DiGraph, host_dispatch_s: float = 0.0,
             interference: float = 0.0) -> Timeline:
    """Critical-path list schedule of a priced DAG on its streams.

    The host issues ops in program (graph) order, ``host_dispatch_s`` each. It runs ahead of the
    GPU whenever it can (layer after layer, kernels queue up), so a layer is host-bound only
    when issuing its n ops takes longer than running them: then op i cannot start before
    (i + 1) * host_dispatch_s, as eager frameworks run small models. Otherwise the host is
    invisible and the schedule is the GPU's alone.

    A compute op that runs beside a collective already under way runs ``1 - interference`` as
    fast for the overlap (NCCL's kernels take SMs and memory bandwidth from it).
    """
    gpu_only = _list_schedule(graph, dict.fromkeys(graph, 0.0), interference)
    if len(graph) * host_dispatch_s <= gpu_only.makespan_s:
        return gpu_only
    return _list_schedule(graph, {n: (i + 1) * host_dispatch_s for i, n in enumerate(graph)},
                          interference)


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


def _list_schedule(graph: nx.DiGraph, issued: dict, interference: float = 0.0) -> Timeline:
    """List scheduling, most critical ready op first; an op waits for its inputs and its issue."""
    preds, succs = adj = _adjacency(graph)
    prio = bottom_levels(graph, topological_order(graph, adj), succs)
    key = {n: (-prio[n], i) for i, n in enumerate(graph)}   # most critical first, then graph order
    attrs = graph._node
    dur = {n: a["time_s"] for n, a in attrs.items()}
    stream = {n: a["stream"] for n, a in attrs.items()}
    waiting = {n: len(p) for n, p in preds.items()}
    ready: dict[str, list[str]] = {s: [] for s in sorted(set(stream.values()))}
    ready_at, free = {}, dict.fromkeys(ready, 0.0)
    for n, w in waiting.items():
        if w == 0:
            ready[stream[n]].append(n)
            ready_at[n] = issued[n]
    start, end = {}, {}
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in ready}
    comm_runs = runs.get("comm", [])
    for _ in range(len(dur)):
        t0, s = _next_start(ready, ready_at, free)
        n = _most_critical(ready[s], ready_at, t0, key)
        ready[s].remove(n)
        start[n] = t0
        if interference and s == "compute" and comm_runs:
            end[n] = free[s] = slowed_end(t0, dur[n], comm_runs, interference)
        else:
            end[n] = free[s] = t0 + dur[n]
        runs[s].append((t0, end[n]))
        for nxt in succs[n]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready_at[nxt] = max([end[p] for p in preds[nxt]] + [issued[nxt]])
                ready[stream[nxt]].append(nxt)
    return Timeline(start, end, stream, max(end.values(), default=0.0), runs)


def _next_start(ready: dict, ready_at: dict, free: dict) -> tuple[float, str]:
    """The stream that can start an op soonest, and when: max(stream free, first op ready)."""
    best_t, best_s = float("inf"), ""
    for s, mine in ready.items():
        if mine:
            t0 = ready_at[mine[0]] if len(mine) == 1 else min(map(ready_at.__getitem__, mine))
            t0 = t0 if t0 > free[s] else free[s]
            if t0 < best_t:
                best_t, best_s = t0, s
    if not best_s:
        raise ValueError("the op graph has a cycle")
    return best_t, best_s


def _most_critical(mine: list[str], ready_at: dict, t0: float, key: dict) -> str:
    """Among the ops ready by ``t0``, the one with the longest path to the end."""
    if len(mine) == 1:
        return mine[0]
    best = None
    for m in mine:
        if ready_at[m] <= t0 and (best is None or key[m] < key[best]):
            best = m
    return best
