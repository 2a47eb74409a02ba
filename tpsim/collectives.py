"""Collective cost model: what an NCCL-style collective costs on a group's placement.

Every function here is pure: bytes, ranks and a :class:`~tpsim.topology.Topology` in, seconds
out. ``nbytes`` follows nccl-tests: the all-reduce buffer, the *full* (gathered) all-gather
output, the *full* reduce-scatter input, the broadcast buffer.

The time of one collective is the sum of four terms::

    t = launch + hops * alpha + bus_factor * nbytes / B_bottleneck + copy_bytes / B_copy

* ``launch``: the fixed cost of one collective call (``device.collective_launch_us``).
* ``hops * alpha``: the pipelined steps of the algorithm, each paying the latency of the level
  its hop crosses (NCCL's tuning model: ``nsteps * hwLat`` split into intra/inter steps).
* ``bus_factor * nbytes / B``: the bandwidth term of Thakur, Rabenseifner & Gropp (2005) with
  the bottleneck of the placement: the per-device link inside a node, or the aggregate NIC
  bandwidth of a node (``nics_per_node * bandwidth``) when the group crosses nodes, each times
  the level's per-algorithm efficiency.
* ``copy_bytes / B_copy``: the collective kernel streams its own input and output buffers
  through device memory (``device.collective_copy_bandwidth_GBps``), and on the few SMs NCCL
  uses this pass is not hidden behind the link. It does not shrink as ranks are added, which is
  why 2-rank all-reduce reaches a lower bus bandwidth than 8-rank on the same links (see
  docs/collectives.md: the vTrain A100 tables give 199 GB/s at 2 ranks, 232 GB/s at 8).

Every algorithm prices one :class:`~tpsim.topology.Placement` (the levels a process group spans,
computed once per group by ``Topology.place``); the protocol adds its own start-up
(``launch_us``), scales the per-hop latency (``hop_latency_scale``) and takes its share of the
line rate (``bandwidth_fraction``). Each :class:`CollectiveCost` names the function that priced
it (``formula``).

A ring is a pipeline: when it crosses several levels, its throughput is that of its slowest
stage, so the bandwidth and copy terms become ``max_k(stage_k)`` where the innermost stage
(SM-driven NVLink copies) carries the copy pass and an outer stage is the network's
``bus_factor * nbytes / (nics * B_nic * eff)``. On one level this is the plain sum above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .parallel import Group
from .topology import SIMPLE, LevelSpan, Placement, Protocol, Topology, load_topology

OPS = ("all-reduce", "reduce-scatter", "all-gather", "broadcast")
ALGORITHMS = ("ring", "tree", "hierarchical", "nvls")


@dataclass(frozen=True)
class CollectiveCost:
    """One priced collective. ``time_s = launch_s + latency_s + transfer_s + copy_s``.

    ``formula`` is the function that priced it (``tpsim.collectives.ring_time``, ...), ``group``
    the process group it ran on.
    """
    op: str
    algorithm: str
    nbytes: int
    ranks: int
    time_s: float
    launch_s: float = 0.0
    latency_s: float = 0.0
    transfer_s: float = 0.0
    copy_s: float = 0.0
    protocol: str = "simple"
    formula: str = ""
    group: str = ""

    @property
    def algbw_Bps(self) -> float:
        """nccl-tests algbw: bytes / time."""
        return self.nbytes / self.time_s if self.time_s > 0 else 0.0

    @property
    def busbw_Bps(self) -> float:
        """nccl-tests busbw: algbw times the op's bus factor (2(n-1)/n for all-reduce)."""
        return self.algbw_Bps * bus_factor(self.op, self.ranks)

    def as_dict(self) -> dict:
        return {"op": self.op, "algorithm": self.algorithm, "protocol": self.protocol,
                "ranks": self.ranks,
                "size_bytes": self.nbytes, "time_us": self.time_s * 1e6,
                "algbw_GBps": self.algbw_Bps / 1e9, "busbw_GBps": self.busbw_Bps / 1e9,
                "launch_us": self.launch_s * 1e6, "latency_us": self.latency_s * 1e6,
                "transfer_us": self.transfer_s * 1e6, "copy_us": self.copy_s * 1e6,
                "formula": self.formula, "group": self.group}


def bus_factor(op: str, ranks: int) -> float:
    """Bytes each rank must move per byte of ``nbytes`` (nccl-tests' busbw factor).

    all-reduce 2(n-1)/n; reduce-scatter and all-gather (n-1)/n; broadcast and send-recv 1.
    """
    n = ranks
    return {"all-reduce": 2 * (n - 1) / n, "reduce-scatter": (n - 1) / n,
            "all-gather": (n - 1) / n, "broadcast": 1.0, "send-recv": 1.0}[op]


def ring_passes(op: str) -> int:
    """Passes around the ring: all-reduce is a reduce-scatter then an all-gather (2), the others 1."""
    return 2 if op == "all-reduce" else 1


def ring_steps(op: str, ranks: int) -> int:
    """Pipelined steps of a ring on ``ranks`` ranks: ring_passes(op) * (n - 1)."""
    return ring_passes(op) * (ranks - 1)


def copy_bytes(op: str, nbytes: float, ranks: int) -> float:
    """Bytes of its own input and output one rank's kernel streams through device memory.

    all-reduce: input + output = 2S; reduce-scatter: S in + S/n out; all-gather: S/n in + S
    out; broadcast and send-recv: S.
    """
    return {"all-reduce": 2 * nbytes, "reduce-scatter": nbytes * (1 + 1 / ranks),
            "all-gather": nbytes * (1 + 1 / ranks), "broadcast": float(nbytes),
            "send-recv": float(nbytes)}[op]


def ring_hops(spans: tuple[LevelSpan, ...]) -> list[tuple[LevelSpan, int]]:
    """Hops of one pass around an open ring (n-1 steps), by the level each hop crosses.

    With u_k distinct units below level k, a ring filling inner levels first makes
    u_k - u_{k+1} hops at level k and u_K - 1 at the outermost level K crossed (NCCL's
    nInterSteps = nNodes - 1 for two levels). The counts sum to n - 1.
    """
    out = []
    for i, span in enumerate(spans):
        nxt = spans[i + 1].units if i + 1 < len(spans) else 1
        out.append((span, span.units - nxt))
    return out


def _stage_bandwidth(span: LevelSpan, algo: str, share: int = 1) -> float:
    """Per-direction bandwidth of one stage, bytes/s: the unit's links times ``algo`` efficiency."""
    return span.unit_bandwidth_Bps * getattr(span.level.efficiency, algo) / share


def _bottleneck(spans: tuple[LevelSpan, ...], algo: str, share: int = 1) -> float:
    """Slowest per-direction bandwidth of the placement, bytes/s."""
    return min(_stage_bandwidth(s, algo, share) for s in spans)


def _copy_s(op: str, nbytes: float, ranks: int, topo: Topology) -> float:
    bw = topo.device.collective_copy_Bps
    return copy_bytes(op, nbytes, ranks) / bw if bw else 0.0


def _protocol(topo: Topology, name: str) -> Protocol:
    return topo.device.protocols.get(name, SIMPLE)


def _pipelined(op, algo, nbytes, place: Placement, topo, latency_s, wire_bytes,
               proto: str, formula: str) -> CollectiveCost:
    """Price a pipeline whose stages are the levels in ``place.spans``: the slowest stage sets
    the pace.

    t = (collective_launch + protocol launch) + latency_s * hop_latency_scale
        + max_k [ wire_bytes / (B_k * eff_k[algo] * bandwidth_fraction) + copy_k ]
    where copy_k = copy_bytes / B_copy on the innermost stage and 0 on the others. Reported as
    transfer_s (the bottleneck stage's wire time) + copy_s (its copy share).
    """
    p = _protocol(topo, proto)
    n = place.size
    copy_s = _copy_s(op, nbytes, n, topo)
    stages = []
    spans = place.spans
    for s in spans:
        wire = wire_bytes / (_stage_bandwidth(s, algo) * p.bandwidth_fraction)
        copy = copy_s if s is spans[0] else 0.0
        stages.append((wire + copy, wire, copy))
    _, wire, copy = max(stages)
    launch = topo.device.collective_launch_s + p.launch_s
    latency = latency_s * p.hop_latency_scale
    return CollectiveCost(op, algo, int(nbytes), n, launch + latency + wire + copy,
                          launch, latency, wire, copy, proto, formula, place.group.name)


def _sequential(op, algo, nbytes, place: Placement, topo, latency_s, transfer_s,
                formula: str) -> CollectiveCost:
    """Phases that run one after another on the Simple protocol:

    t = (collective_launch + Simple launch) + latency_s + transfer_s + copy_bytes / B_copy
    """
    n = place.size
    copy_s = _copy_s(op, nbytes, n, topo)
    launch = topo.device.collective_launch_s + _protocol(topo, "simple").launch_s
    return CollectiveCost(op, algo, int(nbytes), n, launch + latency_s + transfer_s + copy_s,
                          launch, latency_s, transfer_s, copy_s, "simple", formula,
                          place.group.name)


def ring_time(op: str, nbytes: float, place: Placement, topo: Topology,
              protocol: str = "simple") -> CollectiveCost:
    """Ring (NCCL's default): n-1 pipelined steps per pass, two passes for all-reduce.

    With P = ring_passes(op), hops_k the ring's hops at level k (:func:`ring_hops`) and the
    pipeline's slowest stage k:

        t = (collective_launch + proto.launch)
            + hop_latency_scale * P * sum_k hops_k * alpha_k
            + max_k [ bus_factor(op, n) * S / (B_k * eff_k[ring] * proto.bandwidth_fraction)
                      + (k innermost) copy_bytes(op, S, n) / B_copy ]

    bus_factor: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n, broadcast 1 (a
    pipelined chain). Thakur, Rabenseifner & Gropp 2005; NCCL tuning.cc for the per-protocol
    launch, latency and bandwidth.
    """
    latency = ring_passes(op) * sum(h * s.level.latency_s for s, h in ring_hops(place.spans))
    return _pipelined(op, "ring", nbytes, place, topo, latency,
                      bus_factor(op, place.size) * nbytes, protocol,
                      "tpsim.collectives.ring_time")


def tree_time(nbytes: float, place: Placement, topo: Topology,
              protocol: str = "simple") -> CollectiveCost:
    """Double binary tree all-reduce (NCCL, multi-node only): log-depth latency across nodes.

        t = (collective_launch + proto.launch)
            + hop_latency_scale * 2 * (sum_{intra k} (fanout_k - 1) alpha_k
                                       + sum_{inter k} ceil(log2 fanout_k) alpha_k)
            + max_k [ 2 S / (B_k * eff_k[tree] * proto.bandwidth_fraction)
                      + (k innermost) 2 S / B_copy ]

    A chain inside the node, a tree across nodes; reduce up, broadcast down (NCCL's tuning
    model gives the tree algbw = busbw / 2, i.e. 2S on the wire).
    """
    spans = place.spans
    chain = sum((s.fanout - 1) * s.level.latency_s for s in spans if not s.inter_node)
    depth = sum(math.ceil(math.log2(s.fanout)) * s.level.latency_s for s in spans if s.inter_node)
    return _pipelined("all-reduce", "tree", nbytes, place, topo, 2 * (chain + depth),
                      2 * nbytes, protocol, "tpsim.collectives.tree_time")


def hierarchical_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """Reduce-scatter inside each node, all-reduce across nodes, all-gather inside each node.

    With g ranks per node and m nodes, each of the g inter-node rings carries S/g on a 1/g share
    of the node's NICs; the phases run in sequence on the Simple protocol:

        t = (collective_launch + Simple launch)
            + 2 [(g-1) alpha_0 + (g-1)/g S / B_0]
            + 2 sum_k hops_k alpha_k + 2(m-1)/m (S/g) / (B_net / g)
            + copy_bytes(all-reduce, S, n) / B_copy
    """
    spans = place.spans
    inner, outer = spans[0], spans[1:]
    g = inner.fanout
    intra_lat = 2 * (g - 1) * inner.level.latency_s
    intra_bw = 2 * (g - 1) / g * nbytes / _bottleneck((inner,), "ring")
    m = outer[0].units
    inter_lat = 2 * sum(h * s.level.latency_s for s, h in ring_hops(outer))
    inter_bw = 2 * (m - 1) / m * (nbytes / g) / _bottleneck(outer, "ring", share=g)
    return _sequential("all-reduce", "hierarchical", nbytes, place, topo,
                       intra_lat + inter_lat, intra_bw + inter_bw,
                       "tpsim.collectives.hierarchical_time")


def nvls_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """All-reduce reduced inside the NVSwitch (NVLink SHARP), one node, Simple protocol.

    Each GPU pushes its share to the switch and pulls the reduced result (multimem ld_reduce
    + st): per direction each GPU moves (1 + 1/n) S, so

        t = (collective_launch + Simple launch) + 2 alpha + (1 + 1/n) S / (B eff_nvls)
            + copy_bytes(all-reduce, S, n) / B_copy
    """
    (span,) = place.spans
    return _sequential("all-reduce", "nvls", nbytes, place, topo, 2 * span.level.latency_s,
                       (1 + 1 / place.size) * nbytes / _bottleneck((span,), "nvls"),
                       "tpsim.collectives.nvls_time")


def applicable_algorithms(op: str, group: int | Group, topo: Topology) -> list[str]:
    """Algorithms that exist for ``op`` on this group's placement."""
    return _applicable(op, topo.place(group))


def _applicable(op: str, place: Placement) -> list[str]:
    spans = place.spans
    algos = ["ring"]
    if op != "all-reduce" or not spans:
        return algos
    if place.crosses_nodes:
        algos.append("tree")
        if not spans[0].inter_node:
            algos.append("hierarchical")
    elif spans[0].level.in_switch_reduction:
        algos.append("nvls")
    return algos


def collective_time(op: str, nbytes: float, group: int | Group, topo: Topology,
                    algorithm: str = "auto", protocol: str = "auto") -> CollectiveCost:
    """Price ``op`` on ``group`` (ranks in a row, or a :class:`Group`) of ``topo`` (or its name).

    ``auto`` takes the fastest algorithm and protocol the topology offers, as NCCL's tuner does
    (ring and tree run with every protocol the device lists; hierarchical and NVLS with Simple).
    A group of one rank moves nothing: time 0, algorithm ``none``.
    """
    topo = topo if isinstance(topo, Topology) else load_topology(topo)
    if op not in OPS:
        raise ConfigError("--op", "", f"one of {', '.join(OPS)}", op)
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float)) or not 0 < nbytes <= 1e30:
        raise ConfigError("--bytes", "", "a positive number of bytes, at most 1e30", nbytes)
    if algorithm != "auto" and algorithm not in ALGORITHMS:     # before one rank returns
        raise ConfigError("--algo", "", f"auto or one of {', '.join(ALGORITHMS)}", algorithm)
    protocol = protocol.lower() if isinstance(protocol, str) else protocol   # LL128, NCCL_PROTO's
    protos = list(topo.device.protocols) if protocol == "auto" else [protocol]
    if protos[0] not in topo.device.protocols:
        raise ConfigError("--protocol", "", f"auto or a protocol {topo.name} lists "
                          f"({', '.join(topo.device.protocols)})", protocol)
    place = topo.place(group)
    n = place.size
    if not place.spans:
        return CollectiveCost(op, "none", int(nbytes), n, 0.0, group=place.group.name)
    choices = _applicable(op, place)
    if algorithm != "auto":
        if algorithm not in choices:
            raise ConfigError("--algo", "", f"an algorithm available for {op} on {n} ranks of "
                              f"{topo.name} ({', '.join(choices)})", algorithm)
        choices = [algorithm]
    costs = [_price(op, a, p, nbytes, place, topo) for a in choices for p in protos
             if p == "simple" or a in ("ring", "tree")]
    if not costs:
        raise ConfigError("--protocol", "", f"simple for the {choices[0]} algorithm", protocol)
    return min(costs, key=lambda c: c.time_s)


def _price(op, algo, proto, nbytes, place, topo) -> CollectiveCost:
    if algo == "ring":
        return ring_time(op, nbytes, place, topo, proto)
    if algo == "tree":
        return tree_time(nbytes, place, topo, proto)
    if algo == "hierarchical":
        return hierarchical_time(nbytes, place, topo)
    return nvls_time(nbytes, place, topo)


def send_recv_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """A point-to-point transfer between the two ranks of ``place`` (a pipeline-stage boundary).

        t = (collective_launch + Simple launch) + alpha_k + S / (B_k * eff_k[ring])

    at the outermost level k the pair crosses (NVLink inside a node, a NIC between nodes),
    on the Simple protocol as NCCL's send/recv runs; a pair on one device moves nothing.
    """
    if not place.spans:
        return CollectiveCost("send-recv", "none", int(nbytes), place.size, 0.0,
                              group=place.group.name)
    span = place.spans[-1]
    return _sequential("send-recv", "p2p", nbytes, place, topo, span.level.latency_s,
                       nbytes / _stage_bandwidth(span, "ring"),
                       "tpsim.collectives.send_recv_time")


# --------------------------------------------------------------------------- custom all-reduce
CUSTOM_AR_MAX_BYTES = 8 * 2**20     # vLLM CustomAllreduce(max_size=8192 * 1024)


def custom_all_reduce_time(nbytes: float, place: Placement, topo: Topology,
                           max_bytes: float = CUSTOM_AR_MAX_BYTES) -> CollectiveCost:
    """vLLM's custom all-reduce in one NVLink node (csrc/custom_all_reduce.cuh): one kernel that
    loads the peers' IPC-registered buffers over NVLink (no NCCL; no copy-in in a CUDA graph).

    One-shot (cross_device_reduce_1stage): barrier, each rank reads all n buffers and reduces
    all of S, barrier. Two-shot (_2stage): barrier, each rank reduces its S/n slice from every
    peer, barrier, each reads the n-1 other slices. A barrier is one flag store to each peer
    and a spin: alpha = the level's latency_s; B = its per-device bandwidth x ring efficiency:
        one-shot:  t = kernel_launch + 2 alpha + (n - 1) S / B
        two-shot:  t = kernel_launch + 2 alpha + 2 (n - 1)/n S / B
    REDUCE_CASE: one-shot for n = 2, or n <= 4 and S < 512 KiB, or n <= 8 and S < 256 KiB.
    It serves n in (2, 4, 6, 8) ranks of one node, all on NVLink unless n = 2, and S <
    max_bytes (8 MiB default; with symmetric memory on SM 9.0 vLLM caps n = 6 at 512 KiB and
    n = 8 at 256 KiB, all_reduce_utils.py); elsewhere vLLM runs NCCL and this raises ConfigError.
    """
    why = custom_all_reduce_unsupported(nbytes, place, max_bytes)
    if why:
        raise ConfigError("--allreduce", "", f"custom all-reduce where it runs ({why})", "custom")
    n, level = place.size, place.spans[0].level
    one_shot = n == 2 or nbytes < (512 if n <= 4 else 256) * 2**10
    moved = (n - 1) * nbytes if one_shot else 2 * (n - 1) / n * nbytes
    launch, latency = topo.device.kernel_launch_s, 2 * level.latency_s
    transfer = moved / (level.bandwidth_Bps * level.efficiency.ring)
    return CollectiveCost("all-reduce", "custom", int(nbytes), n, launch + latency + transfer,
                          launch, latency, transfer, 0.0, "one-shot" if one_shot else "two-shot",
                          "tpsim.collectives.custom_all_reduce_time", place.group.name)


def custom_all_reduce_unsupported(nbytes: float, place: Placement,
                                  max_bytes: float = CUSTOM_AR_MAX_BYTES) -> str:
    """Why the custom all-reduce does not run here ('' when it does): n not in (2, 4, 6, 8),
    a group leaving one node, n > 2 not all on NVLink (a level named nvlink*), S >= max_bytes."""
    n = place.size
    if n not in (2, 4, 6, 8):
        return f"{n} ranks; it serves 2, 4, 6 or 8"
    if len(place.spans) != 1 or place.crosses_nodes:
        return "the group leaves one node"
    if n > 2 and not place.spans[0].level.name.lower().startswith("nvlink"):
        return f"{n} ranks not all joined by NVLink"
    return "" if nbytes < max_bytes else f"{int(nbytes)} bytes, not under {int(max_bytes)}"
