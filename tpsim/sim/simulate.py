"""One op graph priced and scheduled: a :class:`Simulation`, and what the results read from it.

:func:`simulate` makes a template's ops at the given sizes (:meth:`~tpsim.layer.template.Template.ops`),
prices each (:func:`tpsim.sim.price.price`) and schedules them on their streams
(:func:`tpsim.sim.schedule.run`). The per-op rows, the layer's totals and the collective summary
(:mod:`tpsim.sim.result`) are all read from the one :class:`Simulation`, never recomputed.
"""
from __future__ import annotations

from ..base.record import record
from ..base.formula import qualname
from ..base.memo import Memo
from .deterministic_attention import deterministic_attention
from .fill import filled_times
from .interference import interferences
from .price import Pricing, price_ops
from .result import CollectiveRow, LayerTimes, OpRow
from .launches import launch_times, phase_launch_s
from .schedule import COMM_STREAMS, Timeline, issue_bound, run, sync_waits
from ..layer.template import Template


@record
class Simulation:
    """A template at ``dims``: its ops, their prices and their schedule, index-aligned."""
    template: Template
    dims: object
    ops: tuple
    flops: float           # model FLOPs of the ops (recomputed copies left out)
    hardware_flops: float  # every op's FLOPs
    times: list[float]
    formulas: list[str]
    costs: list            # CollectiveCost of each comm op, None for compute ops
    timeline: Timeline
    host_dispatch_s: float = 0.0
    launch_s: tuple[float, ...] = ()   # per op: the host's C++ kernel launches (sim.launches)

    def digraph(self):
        """The ``networkx.DiGraph`` of the ops (see ``Template.digraph``) with ``time_s``,
        ``start_s``, ``end_s``, ``formula`` and, on collectives, ``algorithm`` per node."""
        g = self.template.digraph(self.dims)
        tl = self.timeline
        for i, name in enumerate(tl.names):
            a = g.nodes[name]
            a.update(time_s=self.times[i], start_s=tl.start[i], end_s=tl.end[i],
                     formula=self.formulas[i])
            if self.costs[i] is not None:
                a["algorithm"] = _algorithm(self.costs[i])
        return g

    def op_rows(self) -> tuple[OpRow, ...]:
        """One row per op in schedule order (start time, then issue order), on the layer's
        clock: a phase the host's issue rate bounds (:func:`phase_times`) ends with a
        ``host-wait`` row (stream ``host``) from its last op's end to the phase's end, the GPU
        idle until the host has issued the next ops, and the backward starts after the
        forward's wait; so the last row ends at the layer's total and ``share`` = time_s /
        total. (The steady state fixes how long the GPU waits per phase, not where:
        the rows put it at the phase's end.)"""
        tl = self.timeline
        (fwd, bwd), (gpu_fwd, gpu_bwd) = phase_times(self), gpu_phases(self)
        total = fwd + bwd or 1.0
        forward = set(self.template.forward)
        rows = []
        for t0, i in sorted(zip(tl.start, range(len(tl.start)))):
            node, op, cost = self.template.nodes[i], self.ops[i], self.costs[i]
            t = tl.end[i] - t0     # as it ran: slowed by a collective beside it, if any
            shift = 0.0 if i in forward else fwd - gpu_fwd
            rows.append(OpRow(node.name, op.kind, node.phase, node.stream, node.block, op.shape,
                              op.flops, op.bytes, op.comm_bytes, t, t0 + shift,
                              tl.end[i] + shift, t / total, getattr(op, "op", None),
                              _algorithm(cost) if cost else None, node.forward_of,
                              self.formulas[i], node.group, self.times[i]))
        waits = (("fwd", "forward", gpu_fwd, fwd), ("bwd", "backward", fwd + gpu_bwd, fwd + bwd))
        for prefix, phase, t0, t1 in waits:
            if t1 > t0:
                rows.append(OpRow(f"{prefix}.host-wait", "host-wait", phase, "host", "", "",
                                  0.0, 0.0, 0.0, t1 - t0, t0, t1, (t1 - t0) / total,
                                  formula=_ISSUE_BOUND, alone_s=t1 - t0))
        rows.sort(key=lambda r: r.start_s)
        return tuple(rows)

    def collective_rows(self) -> tuple[CollectiveRow, ...]:
        """Collectives grouped by (phase, op, bytes, group), in issue order."""
        groups: dict[tuple, list] = {}
        for node, op, cost in zip(self.template.nodes, self.ops, self.costs):
            if cost is not None:
                key = (node.phase, op.op, int(op.comm_bytes), node.group)
                groups.setdefault(key, []).append(cost)
        return tuple(CollectiveRow(op, phase, len(v), nbytes, v[0].time_s, _algorithm(v[0]),
                                   v[0].formula, group or "")
                     for (phase, op, nbytes, group), v in groups.items())


def simulate(template: Template, dims, pricing: Pricing,
             host_dispatch_s: float | None = None) -> Simulation:
    """Price and schedule ``template`` at ``dims`` on ``pricing``'s topology and groups.

    ``host_dispatch_s``: the host's time to issue one op (default: the device's
    ``host_dispatch_us``; 0 for a step captured in CUDA graphs)."""
    topo = pricing.topology
    host = topo.device.host_dispatch_s if host_dispatch_s is None else host_dispatch_s
    return _SIMULATIONS.get((template, dims, topo, pricing.parallelism, host), _simulate,
                            template, dims, pricing, host)


def _simulate(template: Template, dims, pricing: Pricing, host: float) -> Simulation:
    ops, flops, hardware = template.at(dims)
    times, formulas, costs = price_ops(ops, pricing)
    device = pricing.topology.device
    if dims.fill:       # --deterministic-mode: the attention's deterministic backward, and
        times, formulas = deterministic_attention(ops, times, formulas, device)
        times = filled_times(template.names, ops, times, dims.bpe, device)   # PyTorch's NaN fill
    launch_s = launch_times(template, dims, host, device.host_launch_s)
    losses = _LOSSES.get((template, device), interferences, ops, device)
    tl = run(template, times, device.comm_compute_interference, losses, host, launch_s)
    return Simulation(template, dims, ops, flops, hardware, times, formulas, costs, tl, host,
                      launch_s)


# Simulations are pure functions of their inputs: a sweep, a search or a step asks for the same
# layer again and again. Templates compare by identity (each is built once and kept), the
# topology and parallelism by value.
_SIMULATIONS = Memo("simulations", 1024)
# Each op's interference is a function of its node's kind and stream, the same at every size:
# kept per template and device.
_LOSSES = Memo("interferences", 1024)
_ISSUE_BOUND = qualname(issue_bound)


def _algorithm(cost) -> str:
    return f"{cost.algorithm}/{cost.protocol}"


def gpu_phases(sim: Simulation) -> tuple[float, float]:
    """(forward, backward) on the GPU alone: the forward ends with its last op; backward is
    the rest of the makespan."""
    end = sim.timeline.end
    fwd = max([end[i] for i in sim.template.forward], default=0.0)
    return fwd, sim.timeline.makespan_s - fwd


def phase_times(sim: Simulation) -> tuple[float, float]:
    """(forward_s, backward_s), each max(GPU time, its ops x host dispatch + the host's waits at
    its syncs + its ops' C++ kernel launches) in the steady state of layer after layer
    (:func:`tpsim.sim.schedule.issue_bound`, :func:`tpsim.sim.schedule.sync_waits`,
    :func:`tpsim.sim.launches.launch_times`)."""
    fwd, bwd = gpu_phases(sim)
    n_fwd, n_bwd = sim.template.host_ops
    h = sim.host_dispatch_s
    w_fwd, w_bwd = sync_waits(sim.template, sim.times, h, sim.launch_s)
    l_fwd, l_bwd = phase_launch_s(sim.template, sim.launch_s)
    return issue_bound(fwd, n_fwd, h, w_fwd + l_fwd), issue_bound(bwd, n_bwd, h, w_bwd + l_bwd)


def sync_idle_s(sim: Simulation) -> float:
    """Time inside the GPU's schedule when no stream runs: the GPU waiting for the host after a
    sync (:func:`tpsim.sim.schedule.run`; 0 without syncs, every op then starting at another's
    end)."""
    if not sim.template.syncs:
        return 0.0
    tl = sim.timeline
    return max(0.0, tl.makespan_s - tl.busy_s(tuple(tl.runs)))


def layer_times(sim: Simulation) -> LayerTimes:
    """The layer's totals (:func:`_layer_times`), computed once per simulation."""
    cached = sim.__dict__.get("_layer_times")
    if cached is None:
        cached = sim.__dict__["_layer_times"] = _layer_times(sim)
    return cached


def _layer_times(sim: Simulation) -> LayerTimes:
    """The layer's totals (:class:`~tpsim.sim.result.LayerTimes`) from its schedule.

    total = forward + backward (:func:`phase_times`); host wait = what the host adds to the GPU's
    phases (exactly 0 when the GPU is the slower side and no sync leaves it idle:
    :func:`sync_idle_s`); interference = compute busy time - the
    compute ops' own times. total = compute + exposed comm + host wait, up to float rounding.
    """
    tl = sim.timeline
    fwd, bwd = phase_times(sim)
    gpu_fwd, gpu_bwd = gpu_phases(sim)
    total = fwd + bwd
    comm, exposed = tl.busy_s(COMM_STREAMS), tl.exposed_s(COMM_STREAMS, "compute")
    nominal = sum([t for t, s in zip(sim.times, tl.streams) if s == "compute"])
    compute = tl.busy_s("compute")
    return LayerTimes(fwd, bwd, total, compute, comm, exposed,
                      comm / total if total else 0.0, exposed / total if total else 0.0,
                      sim.flops, (fwd - gpu_fwd) + (bwd - gpu_bwd) + sync_idle_s(sim),
                      max(0.0, compute - nominal),
                      sim.hardware_flops)


def saved_bytes(sim: Simulation) -> float:
    """Activations the simulated forward keeps for its backward, bytes."""
    return sim.template.saved_bytes(sim.dims)
