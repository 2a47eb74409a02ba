"""Streams as in-order queues: when each op of a priced op graph runs, and how long a phase takes.

A GPU stream is an in-order queue fed in program order. Each op runs on its stream (compute or
comm) for its time; it starts when the op before it on the same stream has ended and every op it
reads has ended:

    start_i = max(end of the previous op on stream(i), max_{p in inputs(i)} end_p)

so the makespan is a max-plus longest path through the data edges and the stream chains,
monotone in every duration (no op is reordered, unlike priority list scheduling, which can make
a shorter op give a longer schedule: Graham 1969). The program order is the template's node
order (Megatron's issue order), in which every op comes after its inputs.

A compute op that overlaps a collective issued before it runs ``1 - interference`` as fast for
the overlap (NCCL's kernels take SMs and memory bandwidth from it); where the device says how
many SMs each comm kernel holds and which compute kernels are persistent, each collective
slows each compute kernel by its own share instead (``losses``,
:mod:`tpsim.sim.interference`: a persistent GEMM runs a second pass, another kernel loses the
held SMs' share, a copy on the copy engines loses nothing).

The host issues ops one by one, ``host_dispatch_s`` each, and runs ahead of the GPU across
layers; in the steady state of many identical layers a phase (forward or backward) therefore
takes max(its GPU time, its ops x host_dispatch_s): :func:`issue_bound`.

A device-to-host synchronisation (a template's ``syncs``: Megatron-core's token dispatchers
reading the tokens per expert on the host) stops the host's run-ahead: before issuing op b the
host waits until op a (the op whose result it reads) has ended, then issues b and the ops after
it one by one, so within b's phase

    start_j >= end_a + host_dispatch_s x (host ops of b..j)

and the GPU idles until the host has got ahead again. Before a phase's first sync the host is
ahead as without one. A sync never makes an op start earlier (one more max term): the makespan
with it is never shorter.

The scheduler works on index arrays (a :class:`~tpsim.layer.template.Template`'s ``preds`` and
``stream_of``) and a list of durations; :func:`schedule` takes a ``networkx.DiGraph`` with
``stream`` and ``time_s`` node attributes for graphs built by hand.
"""
from __future__ import annotations

from functools import cached_property

from ..base.record import record

COMM_STREAMS = ("comm", "copy")   # NCCL's kernels, and copies on the copy engines


@record
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

    def busy_s(self, stream: str | tuple[str, ...]) -> float:
        """Time ``stream`` (or any of several streams) spends running ops."""
        return sum(b - a for a, b in self.intervals(stream))

    def intervals(self, stream: str | tuple[str, ...]) -> list[tuple[float, float]]:
        """(start, end) of the ops on ``stream``, in time order (they never overlap); for several
        streams, the union of their intervals, merged."""
        if isinstance(stream, str):
            return self.runs.get(stream, [])
        merged: list[tuple[float, float]] = []
        for a, b in sorted(r for s in stream for r in self.runs.get(s, [])):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def exposed_s(self, stream: str | tuple[str, ...] = "comm", under: str = "compute") -> float:
        """Time ``stream`` runs while ``under`` is idle: exposed (not overlapped) communication.

        exposed = busy(stream) - |intervals(stream) intersect intervals(under)|
        """
        return exposed_of(self.intervals(stream), self.intervals(under))


def exposed_of(mine, others) -> float:
    """Time the intervals ``mine`` cover outside ``others`` (both (start, end) lists sorted by
    start, each disjoint): sum |a| - |a intersect others|."""
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


def run(tpl, durations: list[float], interference: float = 0.0,
        losses=None, host_s: float = 0.0,
        launch_s: tuple[float, ...] = ()) -> Timeline:
    """In-order streams: op i (in program order) starts at the end of its stream's previous op
    and of its inputs; see the module docstring. ``interference`` slows compute ops beside the
    ``comm`` stream's collectives issued before them; ``losses``
    (:class:`tpsim.sim.interference.Losses`, per op): each collective's own slowdown instead,
    on a persistent compute kernel or another, copies on the ``copy`` stream (the copy
    engines) unslowed; ``host_s``: the host's time to issue
    one op after a sync (the template's ``syncs``; none: the host is always ahead);
    ``launch_s`` (per op, or empty): the host's time to launch the kernels its call issues
    from C++ (:func:`tpsim.sim.launches.launch_times`), added to its issue after a sync."""
    n = len(durations)
    waits = {b: a for a, b in tpl.syncs}
    clock, phase = None, None     # the host's issue time after a sync, and in which phase
    preds, stream_of, streams = tpl.preds, tpl.stream_of, tpl.streams
    comm = streams.index("comm") if "comm" in streams else -1
    free = [0.0] * len(streams)
    runs: list[list[tuple[float, float]]] = [[] for _ in streams]
    comm_runs = runs[comm] if comm >= 0 else []
    comm_losses: tuple[list[float], list[float]] = ([], [])
    copy = streams.index("copy") if losses is not None and "copy" in streams else -1
    start, end = [0.0] * n, [0.0] * n
    for i in range(n):
        s = stream_of[i]
        t0 = free[s]
        for p in preds[i]:
            if end[p] > t0:
                t0 = end[p]
        if waits:
            clock, phase = _host_clock(tpl, i, waits, end, clock, phase, host_s, launch_s)
            if clock is not None and clock > t0:
                t0 = clock
        loss = interference if losses is None else comm_losses[not losses.kernel[i]]
        if loss and s != comm and s != copy and comm_runs and comm_runs[-1][1] > t0:
            t1 = slowed_end(t0, durations[i], comm_runs, loss)
        else:
            t1 = t0 + durations[i]
        start[i] = t0
        end[i] = free[s] = t1
        runs[s].append((t0, t1))
        if losses is not None and s == comm:
            comm_losses[0].append(losses.persistent[i])
            comm_losses[1].append(losses.other[i])
    return Timeline(tpl.names, tuple(start), tuple(end), tpl.node_streams, max(end, default=0.0),
                    dict(zip(streams, runs)))


def _host_clock(tpl, i: int, waits: dict, end: list, clock, phase, host_s: float,
                launch_s: tuple = ()):
    """(the host's issue time of op i, its phase) after a sync: reset to end_a at a sync on op
    a, then host_s per host op plus each op's launch time; None before the phase's first sync
    (the host ahead)."""
    node = tpl.nodes[i]
    if node.phase != phase:
        clock, phase = None, node.phase
    if i in waits:
        a = waits[i]
        clock = end[a] if clock is None else max(clock, end[a])
    if clock is not None:
        clock += host_s * node.host_ops + (launch_s[i] if launch_s else 0.0)
    return clock, phase


def issue_bound(gpu_s: float, ops: int, host_dispatch_s: float, waits_s: float = 0.0) -> float:
    """How long a phase of ``ops`` ops takes, repeated layer after layer, when the host issues each
    op in ``host_dispatch_s``: the steady-state period of the host and the GPU in series,

        t = max(gpu_s, ops * host_dispatch_s + waits_s)

    (each layer's GPU work cannot start before the host has issued it; the host waits for the
    GPU only at a sync, ``waits_s`` in all: :func:`sync_waits`, plus the time it spends
    launching kernels from C++ inside its ops' calls: :mod:`tpsim.sim.launches`). Monotone in
    every term: more work or slower dispatch is never faster.
    """
    return max(gpu_s, ops * host_dispatch_s + waits_s)


def sync_waits(tpl, durations: list[float], host_s: float,
               launch_s: tuple[float, ...] = ()) -> tuple[float, float]:
    """(forward, backward): the host's waits at the template's syncs when the host is the slower
    side, the GPU running each op as soon as it is issued: at a sync on op a before op b,

        wait = max(0, t_a - host_s x (host ops issued after a, before b)
                          - (their launch times, ``launch_s``))

    (the host issued a, then the ops up to b, while a ran). A lower bound: a's inputs may
    still be running when the host issues it."""
    fwd = bwd = 0.0
    for a, b in tpl.syncs:
        between = sum(n.host_ops for n in tpl.nodes[a + 1:b])
        launched = sum(launch_s[a + 1:b]) if launch_s else 0.0
        wait = max(0.0, durations[a] - host_s * between - launched)
        if tpl.nodes[b].phase == "forward":
            fwd += wait
        else:
            bwd += wait
    return fwd, bwd


def schedule(graph, interference: float = 0.0) -> Timeline:
    """:func:`run` on a ``networkx.DiGraph`` whose nodes carry ``stream`` and ``time_s``
    (program order: the graph's node order)."""
    from ..layer.template import Node, Template
    nodes = tuple(Node(str(n), "", "", a["stream"], None) for n, a in graph.nodes(data=True))
    edges = [(str(u), str(v), "data") for u, v in graph.edges]
    tpl = Template.from_nodes(nodes, edges, {})
    return run(tpl, [a["time_s"] for _, a in graph.nodes(data=True)], interference)


def slowed_end(t0: float, work: float, busy: list[tuple[float, float]],
               loss: float | list[float]) -> float:
    """When an op needing ``work`` seconds alone, started at ``t0``, ends if it runs at
    (1 - loss) speed inside the sorted, disjoint ``busy`` intervals and at full speed outside
    (``loss``: one for all, or one per interval)."""
    per = loss if isinstance(loss, list) else None
    t, left, rate = t0, work, 1.0 - (0.0 if per is not None else loss)
    for k, (b0, b1) in enumerate(busy):
        if b1 <= t:
            continue
        if per is not None:
            rate = 1.0 - per[k]
        if b0 > t:
            if t + left <= b0:
                return t + left
            left, t = left - (b0 - t), b0
        if rate > 0 and t + left / rate <= b1:
            return t + left / rate
        left, t = left - (b1 - t) * rate, b1
    return t + left
