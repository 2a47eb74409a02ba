"""The ops of one training step across all pipeline stages, run on in-order streams.

A :class:`StepGraph` collects ops that are already priced (a chunk of layers, a p2p transfer, a
gradient bucket's all-reduce, the optimizer) with their stream and their inputs, in the order
each stream issues them. :meth:`StepGraph.run` puts them in one valid program order (every op
after its inputs and after the op before it on its stream: a topological order of those edges,
ties broken by the order the ops were added), builds a :class:`tpsim.layer.template.Template` of them
and runs it with :func:`tpsim.sim.schedule.run`: op i starts at the end of its stream's previous op
and of its inputs. The makespan is a max-plus longest path, monotone in every duration.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..sim.schedule import Timeline, run
from ..layer.template import Node, Template


@dataclass(frozen=True)
class StepRun:
    """A step graph run: ``timeline`` indexes ops in program order; ``index[i]`` is the program
    position of the i-th op added; ``seconds`` per program position."""
    template: Template
    timeline: Timeline
    seconds: tuple[float, ...]
    index: tuple[int, ...]
    kinds: tuple[str, ...]      # per program position: compute, p2p, dp, sync, optimizer, ...

    def start(self, op: int) -> float:
        return self.timeline.start[self.index[op]]

    def end(self, op: int) -> float:
        return self.timeline.end[self.index[op]]


class StepGraph:
    """Priced ops with their stream, inputs, phase, block (the stage) and kind."""

    def __init__(self):
        self.names: list[str] = []
        self.streams: list[str] = []
        self.seconds: list[float] = []
        self.phases: list[str] = []
        self.blocks: list[str] = []
        self.kinds: list[str] = []
        self.deps: list[list[int]] = []

    def add(self, name: str, stream: str, seconds: float, deps=(), phase: str = "",
            block: str = "", kind: str = "compute") -> int:
        if seconds < 0:
            raise ValueError(f"{name}: negative duration {seconds}")
        self.names.append(name)
        self.streams.append(stream)
        self.seconds.append(float(seconds))
        self.phases.append(phase)
        self.blocks.append(block)
        self.kinds.append(kind)
        self.deps.append([d for d in deps if d is not None])
        return len(self.names) - 1

    def set_kind(self, op: int, kind: str) -> None:
        self.kinds[op] = kind

    def depend(self, op: int, deps) -> None:
        """``op`` also waits for ``deps`` (added after the op: a transfer learns its sides later)."""
        self.deps[op].extend(d for d in deps if d is not None)

    def _order(self) -> list[int]:
        """A topological order of the data edges and stream chains, earliest-added first."""
        n = len(self.names)
        succ: list[list[int]] = [[] for _ in range(n)]
        indeg = [0] * n
        last_on: dict[str, int] = {}
        for i in range(n):
            preds = set(self.deps[i])
            prev = last_on.get(self.streams[i])
            if prev is not None:
                preds.add(prev)
            last_on[self.streams[i]] = i
            for p in preds:
                succ[p].append(i)
            indeg[i] = len(preds)
        ready = [i for i in range(n) if indeg[i] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for j in succ[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready, j)
        if len(order) != n:
            stuck = next(self.names[i] for i in range(n) if indeg[i])
            raise RuntimeError(f"the step's program deadlocks: {stuck} never becomes ready")
        return order

    def run(self) -> StepRun:
        if len(set(self.names)) != len(self.names):
            raise ValueError("step graph op names must be unique")
        order = self._order()
        index = [0] * len(order)
        for pos, i in enumerate(order):
            index[i] = pos
        nodes = tuple(Node(self.names[i], self.phases[i], self.blocks[i], self.streams[i], None)
                      for i in order)
        edges = [(self.names[d], self.names[i], "data") for i in order for d in set(self.deps[i])]
        tpl = Template.from_nodes(nodes, edges, {})
        seconds = [self.seconds[i] for i in order]
        return StepRun(tpl, run(tpl, seconds), tuple(seconds), tuple(index),
                       tuple(self.kinds[i] for i in order))
