"""Collective cost model: what an NCCL collective costs on a group's placement.

Every function here is pure: bytes, ranks and a :class:`~tpsim.cluster.topology.Topology` in, seconds
out. ``nbytes`` follows nccl-tests: the all-reduce buffer, the *full* (gathered) all-gather
output, the *full* reduce-scatter input, the broadcast buffer, all that one rank sends in an
all-to-all (its own slice included).

The time of one collective is a sum of five terms, each from a named source::

    t = launch + latency + transfer + pipeline + copy

* ``launch = s (collective_launch + proto.launch)``: one kernel launch plus the protocol's
  start-up (NCCL tuning.cc ``baseLat``).
* ``latency = s sum_hops hop(level, algorithm, protocol)``: every pipelined step pays the
  per-hop latency of the link it crosses (NCCL tuning.cc ``hwLat[link][algorithm][protocol]``,
  ``levels[i].hop_latency_us``); NVLS pays its switch latency once.
* ``transfer``: bytes over the bottleneck, ``bus_factor S / (B eff proto.bandwidth_fraction)``
  (Thakur, Rabenseifner & Gropp 2005): a GPU's own links inside a node, the node's NICs
  (``nics_per_node x bandwidth``) across nodes.
* ``pipeline``: NVLS only, the per-step cost of its chunked pipeline (:mod:`tpsim.cost.nvls_pipeline`).
* ``copy = copy_bytes / B_copy``: the kernel streams its own input and output through device
  memory on the few SMs NCCL uses (``collective_copy_bandwidth_GBps``); fitted on the vTrain
  A100 tables, where 2-rank all-reduce reaches a lower bus bandwidth than 8-rank (docs).

``s`` is the device's ``collective_latency_scale``: NCCL's latency table holds for Hopper;
latency-bound steps run at the SM clock, so A100 scales them by 1.98 / 1.41 GHz.

A ring is a pipeline: when it crosses several levels its pace is its slowest stage, so the
transfer and copy terms become ``max_k(stage_k)``: the innermost stage (SM-driven NVLink copies)
carries the copy pass, an outer one is the network's ``bus_factor S / (nics B_nic eff)``.
Every algorithm prices one :class:`~tpsim.cluster.topology.Placement` (``Topology.place(group)``) and
each :class:`CollectiveCost` names the function that priced it (``formula``).
"""
from __future__ import annotations

from .collective_cost import (CollectiveCost, bus_factor, copy_bytes, ring_passes,  # noqa: F401
                              ring_steps)                      # re-exported: the public API
from ..base.errors import ConfigError
from ..base.formula import qualname
from .nccl_tuning import (ll_cap_Bps, ll_host_s, ring_hops, ring_plateau,  # noqa: F401
                          stage_cap_Bps, tree_cap_Bps, tree_correction, tree_hops,  # re-exported
                          tree_load)
from .nvls_pipeline import nvls_terms, nvls_tree_terms
from .all_to_all import P2P_AUTO, all_to_all_time
from .collective_ops import OPS, op_name  # noqa: F401 (OPS re-exported)
from ..spec.parallel import Group
from ..cluster.topology import SIMPLE, LevelSpan, Placement, Protocol
from ..cluster.nccl import Topology, topology_of

ALGORITHMS = ("ring", "tree", "nvls", "nvls_tree", "hierarchical", "p2p")
NCCL_ALGORITHMS = ("ring", "tree", "nvls", "nvls_tree", "p2p")     # what `auto` chooses among


def _stage_bandwidth(span: LevelSpan, algo: str, share: int = 1) -> float:
    """Per-direction bandwidth of one stage, bytes/s: the unit's links times ``algo`` efficiency."""
    eff = getattr(span.level.efficiency, "tree" if algo == "nvls_tree" else algo)
    return span.unit_bandwidth_Bps * eff / share


def _bottleneck(spans: tuple[LevelSpan, ...], algo: str, share: int = 1) -> float:
    """Slowest per-direction bandwidth of the placement, bytes/s."""
    return min(_stage_bandwidth(s, algo, share) for s in spans)


def _copy_s(op: str, nbytes: float, ranks: int, topo: Topology) -> float:
    bw = topo.device.collective_copy_Bps
    return copy_bytes(op, nbytes, ranks) / bw if bw else 0.0


def _protocol(topo: Topology, name: str) -> Protocol:
    return topo.device.protocols.get(name, SIMPLE)


def _launch_s(topo: Topology, proto: str) -> float:
    """s (collective_launch + proto.launch): the kernel launch and NCCL's baseLat."""
    dev = topo.device
    return dev.collective_latency_scale * (dev.collective_launch_s + _protocol(topo, proto).launch_s)


def _cost(op, algo, proto, nbytes, place, launch, latency, transfer, copy, formula,
          pipeline=0.0) -> CollectiveCost:
    return CollectiveCost(op, algo, int(nbytes), place.size,
                          launch + latency + transfer + pipeline + copy, launch, latency,
                          transfer, copy, proto, formula, place.group.name, pipeline)


def _pipelined(op, algo, nbytes, place: Placement, topo, hops, wire_bytes, proto: str,
               formula: str, lat_factor: float = 1.0, bw_factor: float = 1.0,
               load=lambda span: 1.0) -> CollectiveCost:
    """Price a pipeline whose stages are the levels in ``place.spans``: the slowest stage sets
    the pace. ``hops``: (span, count) pairs, each paying that level's ``algo``/``proto`` hop.

    t = s (collective_launch + proto.launch) + s lat_factor sum count * hop(level, algo, proto)
        + LL host hops (:func:`~tpsim.cost.nccl_tuning.ll_host_s`) + max_k [ load_k wire_bytes / min(B_k eff_k[algo] bandwidth_fraction bw_factor, cap_k)
                  + copy_k ]
    where copy_k = copy_bytes / B_copy on the innermost stage and 0 on the others, and cap_k
    a network level's LL or tree cap (:func:`~tpsim.cost.nccl_tuning.stage_cap_Bps`).
    """
    p = _protocol(topo, proto)
    copy_s = _copy_s(op, nbytes, place.size, topo)
    latency = topo.device.collective_latency_scale * lat_factor * sum(
        count * span.level.hop_latency_s(algo, proto) for span, count in hops
    ) + ll_host_s(hops, proto)
    stages = []
    for s in place.spans:
        wire = load(s) * wire_bytes / min(
            _stage_bandwidth(s, algo) * p.bandwidth_fraction * bw_factor,
            stage_cap_Bps(s, algo, proto, bw_factor, load(s)))
        copy = copy_s if s is place.spans[0] else 0.0
        stages.append((wire + copy, wire, copy))
    _, wire, copy = max(stages)
    return _cost(op, algo, proto, nbytes, place, _launch_s(topo, proto), latency, wire, copy,
                 formula)


def ring_time(op: str, nbytes: float, place: Placement, topo: Topology,
              protocol: str = "simple") -> CollectiveCost:
    """Ring (NCCL's default): n-1 pipelined steps per pass, two passes for all-reduce.

    With P = ring_passes(op), hops_k the ring's hops at level k (:func:`ring_hops`), s the
    device's collective_latency_scale and the pipeline's slowest stage k:

        t = s (collective_launch + proto.launch)
            + s P sum_k hops_k hop_k[ring][proto]
            + max_k [ bus_factor(op, n) S / (B_k eff_k[ring] proto.bandwidth_fraction)
                      + (k innermost) copy_bytes(op, S, n) / B_copy ]

    bus_factor: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n, broadcast 1 (a
    pipelined chain). Thakur, Rabenseifner & Gropp 2005; NCCL tuning.cc (baseLat, hwLat:
    ``lat = baseLat + nsteps hwLat`` with nsteps = 2(n-1) for all-reduce) for the latencies.
    Across nodes NCCL's tuning model adds (:mod:`tpsim.cost.nccl_tuning`): the hop sum times
    :func:`ring_plateau` (1.4 on Simple), LL's bandwidth at most the host's LL cap, and LL's
    network hops the host's :func:`ll_host_s` each.
    """
    hops = [(s, ring_passes(op) * h) for s, h in ring_hops(place.spans)]
    return _pipelined(op, "ring", nbytes, place, topo, hops, bus_factor(op, place.size) * nbytes,
                      protocol, qualname(ring_time),
                      ring_plateau(op, nbytes, place.size, protocol, place.crosses_nodes))


def tree_time(nbytes: float, place: Placement, topo: Topology,
              protocol: str = "simple") -> CollectiveCost:
    """Double binary tree all-reduce (NCCL, multi-node only): log-depth latency across nodes.

        t = s (collective_launch + proto.launch)
            + s 2 (sum_{intra k} (fanout_k - 1) hop_k[tree][proto]
                   + sum_{inter k} ceil(log2 fanout_k) hop_k[tree][proto]) + LL host hops
            + max_k [ l_k 2 S / min(B_k eff_k[tree] proto.bandwidth_fraction f(S, proto),
                                    LL cap_k, l_k f(S, proto) T_k) + (k innermost) 2 S / B_copy ]

    A chain inside the node, a tree across nodes; reduce up, broadcast down (NCCL tuning.cc:
    ``lat = baseLat + 2((ppn-1) intraLat + log2(nNodes) interLat)``, algbw = busbw / 2, i.e.
    2S on the wire). f: NCCL's treeCorrectionFactor (:func:`tree_correction`, 0.4-1: trees
    fall short of their bandwidth at medium sizes); LL cap_k: :func:`ll_cap_Bps`; T_k: NCCL's
    per-channel tree caps (:func:`tree_cap_Bps`); LL host hops: :func:`ll_host_s`; l_k: 1.5 on a
    network level of more than two nodes, where an inner node carries both children's halves
    (:func:`tree_load`), else 1.
    """
    return _pipelined("all-reduce", "tree", nbytes, place, topo, tree_hops(place.spans),
                      2 * nbytes, protocol, qualname(tree_time),
                      bw_factor=tree_correction(nbytes, protocol), load=tree_load)


def hierarchical_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """Reduce-scatter inside each node, all-reduce across nodes, all-gather inside each node.

    Not an NCCL algorithm (``auto`` never picks it); kept to compare against. With g ranks per
    node and m nodes, each of the g inter-node rings carries S/g on a 1/g share of the node's
    NICs; the phases run in sequence on the Simple protocol:

        t = s (collective_launch + Simple launch)
            + s [2 (g-1) hop_0[ring][simple] + 2 sum_k hops_k hop_k[ring][simple]]
            + 2 (g-1)/g S / B_0 + 2(m-1)/m (S/g) / (B_net / g)
            + copy_bytes(all-reduce, S, n) / B_copy
    """
    spans = place.spans
    inner, outer = spans[0], spans[1:]
    g = inner.fanout
    m = outer[0].units
    hops = [(inner, 2 * (g - 1)), *((s, 2 * h) for s, h in ring_hops(outer))]
    latency = topo.device.collective_latency_scale * sum(
        c * s.level.hop_latency_s("ring", "simple") for s, c in hops)
    transfer = (2 * (g - 1) / g * nbytes / _bottleneck((inner,), "ring")
                + 2 * (m - 1) / m * (nbytes / g) / _bottleneck(outer, "ring", share=g))
    return _cost("all-reduce", "hierarchical", "simple", nbytes, place, _launch_s(topo, "simple"),
                 latency, transfer, _copy_s("all-reduce", nbytes, place.size, topo),
                 qualname(hierarchical_time))


def _nvls_stage(nbytes: float, span: LevelSpan, ranks: int, topo: Topology) -> tuple[float, float]:
    """(transfer, pipeline) of the in-switch reduction on ``ranks`` GPUs of ``span``'s level."""
    lv = span.level
    return nvls_terms(nbytes, ranks, _stage_bandwidth(span, "nvls"),
                      topo.device.collective_latency_scale * lv.nvls_step_s, lv.nvls_channels,
                      lv.nvls_chunk_bytes, lv.nvls_fixed_grid)


def nvls_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """All-reduce reduced inside the NVSwitch (NVLink SHARP), one node, Simple protocol.

    Each GPU sends its buffer to the switch to be reduced and takes back the reduced result:
    w = 1 + 1/n bytes per direction per byte of S (:func:`~tpsim.cost.nvls_pipeline.nvls_wire_factor`).
    NCCL runs it as ``ops = nvls_channels x n`` chunked pipelines (:mod:`tpsim.cost.nvls_pipeline`):

        t = s collective_launch + s hop[nvls]                          (NCCL hwLat NVLS: 25 us, 23 to 2.20)
            + w S / (B eff_nvls)                                       transfer
            + m s step + (s step + w c ops / (B eff_nvls))             pipeline: m chunks, fill
            + copy_bytes(all-reduce, S, n) / B_copy

    with c NCCL's chunk for S (16 KiB .. nvls_chunk_bytes), m = S / (ops c), step = ``nvls_step_us``
    (NCCL 2.18-2.19's fixed grid, ``nvls_fixed_grid``: c, m of its busiest channel, nvls_terms).
    """
    (span,) = place.spans
    n = place.size
    scale = topo.device.collective_latency_scale
    transfer, pipeline = _nvls_stage(nbytes, span, n, topo)
    return _cost("all-reduce", "nvls", "simple", nbytes, place,
                 scale * topo.device.collective_launch_s,
                 scale * span.level.hop_latency_s("nvls", "simple"), transfer,
                 _copy_s("all-reduce", nbytes, n, topo), qualname(nvls_time), pipeline)


def nvls_tree_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """NVLS inside each node, a tree of nodes between them (NCCL's NVLSTree), Simple protocol.

    Each of a node's g GPUs carries 1/g of the node's reduced buffer up and down the tree
    through its NIC. In a chain of two nodes a NIC moves S/g each way; in a deeper tree an inner
    node also takes its second child's S/g (NCCL tuning.cc halves the inter-node bandwidth
    above two nodes): k = 1 (m <= 2 nodes) or 2. The network hops sit inside NVLS's chunked
    pipeline (:func:`~tpsim.cost.nvls_pipeline.nvls_tree_terms`, NCCL's NVLS-tree chunk):

        t = s collective_launch + s (hop_0[nvls] + sum_{inter k} h_k hop_k[nvls_tree])
            + (m - 1) max(a, b) + 2 a + sum_k h_k b  + copy_bytes(all-reduce, S, n) / B_copy
        a = s step + w c ops / (B eff_nvls),  b = k c ops / min_{inter k} (B_k eff_k[tree])

    with h_k = 2 ceil(log2 fanout_k) hops up and down the tree, ops = nvls_channels x g,
    c the chunk and m = S / (ops c); transfer is max(w S / (B eff_nvls), k S / B_net), the
    rest of the pipelined time is ``pipeline``.
    """
    inner, outer = place.spans[0], place.spans[1:]
    scale, lv = topo.device.collective_latency_scale, inner.level
    hops = tree_hops(outer)
    latency = scale * (lv.hop_latency_s("nvls", "simple") + sum(
        c * s.level.hop_latency_s("nvls_tree", "simple") for s, c in hops))
    k = 1 if outer[-1].units <= 2 else 2
    net_Bps = min(_stage_bandwidth(s, "nvls_tree") for s in outer) / k
    transfer, pipeline = nvls_tree_terms(
        nbytes, inner.fanout, _stage_bandwidth(inner, "nvls"), scale * lv.nvls_step_s,
        lv.nvls_channels, lv.nvls_chunk_bytes, outer[-1].units, net_Bps, sum(c for _, c in hops))
    return _cost("all-reduce", "nvls_tree", "simple", nbytes, place,
                 scale * topo.device.collective_launch_s, latency, transfer,
                 _copy_s("all-reduce", nbytes, place.size, topo),
                 qualname(nvls_tree_time), pipeline)


def applicable_algorithms(op: str, group: int | Group, topo: Topology) -> list[str]:
    """Algorithms that exist for ``op`` on this group's placement."""
    return _applicable(op, topo.place(group))


def _applicable(op: str, place: Placement) -> list[str]:
    spans = place.spans
    algos = ["p2p" if op == "all-to-all" else "ring"]     # all-to-all: grouped send/recv
    if op != "all-reduce" or not spans:
        return algos
    switch = not spans[0].inter_node and spans[0].level.in_switch_reduction
    if place.crosses_nodes:
        algos.append("tree")
        if switch:
            algos.append("nvls_tree")
        if not spans[0].inter_node:
            algos.append("hierarchical")
    elif switch:
        algos.append("nvls")
    return algos


def collective_time(op: str, nbytes: float, group: int | Group, topo: Topology,
                    algorithm: str = "auto", protocol: str = "auto", nccl=None) -> CollectiveCost:
    """Price ``op`` (tpsim's, nccl-tests' or NCCL's name) on ``group`` (ranks in a row, or a :class:`Group`) of ``topo`` (or its name).

    ``auto`` takes NCCL's minimum-time choice over its algorithms (ring, tree, NVLS, NVLS-tree)
    and the protocols the device lists, each priced by tpsim's formulas (ring and tree run with
    every protocol; NVLS, NVLS-tree and hierarchical with Simple). ``all-to-all`` runs as NCCL
    runs it, grouped send/recv (``p2p``: auto is NCCL's own LL-or-Simple rule, ``p2p_protocol``);
    ``nccl``: the NCCL release priced (:func:`~tpsim.cluster.nccl.topology_of`)."""
    topo, op = topology_of(topo, nccl), op_name(op)      # nccl-tests' and NCCL's names too
    if op not in OPS:
        raise ConfigError("--op", "", f"one of {', '.join(OPS)}", op)
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float)) or not 0 < nbytes <= 1e30:
        raise ConfigError("--bytes", "", "a positive number of bytes, at most 1e30", nbytes)
    if algorithm != "auto" and algorithm not in ALGORITHMS:     # before one rank returns
        raise ConfigError("--algo", "", f"auto or one of {', '.join(ALGORITHMS)}", algorithm)
    protocol = protocol.lower() if isinstance(protocol, str) else protocol   # LL128, NCCL_PROTO's
    protos = list(topo.device.protocols) if protocol == "auto" else [protocol]
    if not isinstance(protos[0], str) or protos[0] not in topo.device.protocols:
        raise ConfigError("--protocol", "", f"auto or a protocol {topo.name} lists "
                          f"({', '.join(topo.device.protocols)})", protocol)
    place = topo.place(group)
    if not place.spans:
        return CollectiveCost(op, "none", int(nbytes), place.size, 0.0, group=place.group.name)
    choices = [a for a in _applicable(op, place) if a in NCCL_ALGORITHMS]
    if algorithm != "auto":
        choices = _applicable(op, place)        # hierarchical too, when asked for by name
        if algorithm not in choices:
            raise ConfigError("--algo", "", f"an algorithm available for {op} on {place.size} "
                              f"ranks of {topo.name} ({', '.join(choices)})", algorithm)
        choices = [algorithm]
    costs = [_price(op, a, p, nbytes, place, topo, protocol) for a in choices for p in protos
             if p == "simple" or a in ("ring", "tree")]
    if not costs:
        raise ConfigError("--protocol", "", f"auto or simple for the {choices[0]} algorithm", protocol,
                          P2P_AUTO if choices[0] == "p2p" else "")
    return min(costs, key=lambda c: c.time_s)


def _price(op, algo, proto, nbytes, place, topo, asked="auto") -> CollectiveCost:
    if algo in ("ring", "tree"):
        return (ring_time(op, nbytes, place, topo, proto) if algo == "ring"
                else tree_time(nbytes, place, topo, proto))
    return {"nvls": nvls_time, "nvls_tree": nvls_tree_time, "hierarchical": hierarchical_time,
            "p2p": lambda *a: all_to_all_time(*a, asked)}[algo](nbytes, place, topo)


def send_recv_time(nbytes: float, place: Placement, topo: Topology) -> CollectiveCost:
    """A point-to-point transfer between the two ranks of ``place`` (a pipeline-stage boundary).

        t = s (collective_launch + Simple launch) + s hop_k[ring][simple] + S / (B_k eff_k[ring])

    at the outermost level k the pair crosses (NVLink inside a node, a NIC between nodes),
    on the Simple protocol as NCCL's send/recv runs; a pair on one device moves nothing.
    """
    if not place.spans:
        return CollectiveCost("send-recv", "none", int(nbytes), place.size, 0.0,
                              group=place.group.name)
    span = place.spans[-1]
    latency = topo.device.collective_latency_scale * span.level.hop_latency_s("ring", "simple")
    return _cost("send-recv", "p2p", "simple", nbytes, place, _launch_s(topo, "simple"), latency,
                 nbytes / _stage_bandwidth(span, "ring"),
                 _copy_s("send-recv", nbytes, place.size, topo), qualname(send_recv_time))


# --------------------------------------------------------------------------- custom all-reduce
CUSTOM_AR_MAX_BYTES = 8 * 2**20     # vLLM CustomAllreduce(max_size=8192 * 1024)


def custom_all_reduce_time(nbytes: float, place: Placement, topo: Topology,
                           max_bytes: float = CUSTOM_AR_MAX_BYTES) -> CollectiveCost:
    """vLLM's custom all-reduce in one NVLink node (csrc/custom_all_reduce.cuh), priced by
    :func:`custom_kernel_time` for the kernel vLLM's REDUCE_CASE picks by size: one-shot for
    n = 2, or n <= 4 and S < 512 KiB, or n <= 8 and S < 256 KiB; two-shot otherwise. Where vLLM
    runs NCCL instead (:func:`custom_all_reduce_unsupported`) this raises ConfigError."""
    why = custom_all_reduce_unsupported(nbytes, place, max_bytes)
    if why:
        raise ConfigError("--allreduce", "", f"custom all-reduce where it runs ({why})", "custom")
    n = place.size
    kind = "one-shot" if n == 2 or nbytes < (512 if n <= 4 else 256) * 2**10 else "two-shot"
    launch, latency, transfer = custom_kernel_time(kind, nbytes, n, place.spans[0].level,
                                                   topo.device)
    return CollectiveCost("all-reduce", "custom", int(nbytes), n, launch + latency + transfer,
                          launch, latency, transfer, 0.0, kind,
                          qualname(custom_all_reduce_time), place.group.name)


def custom_kernel_time(kind: str, nbytes: float, n: int, level, device) -> tuple[float, ...]:
    """(launch, latency, transfer) of vLLM's one-shot or two-shot kernel on ``n`` ranks.

    One-shot (cross_device_reduce_1stage): start barrier, each rank reads all n buffers and
    reduces all of S, end barrier. Two-shot (_2stage): start barrier, each rank reduces its S/n
    slice from every peer into its buffer, a barrier that orders those stores before any peer
    reads them, then each reads the n-1 other slices. A barrier (a flag store to each peer and
    a spin) costs alpha = the level's latency_s; B = per-device bandwidth x ring efficiency:
        one-shot:  t = kernel_launch + 2 alpha + (n - 1) S / B
        two-shot:  t = kernel_launch + 2 alpha + custom_two_shot_sync
                       + 2 (n - 1)/n S / (B x custom_two_shot_efficiency)
    (the level's fitted two-shot terms; 0 and 1 when a file leaves them out)."""
    launch, latency = device.kernel_launch_s, 2 * level.latency_s
    rate = level.bandwidth_Bps * level.efficiency.ring
    if kind == "one-shot":
        return launch, latency, (n - 1) * nbytes / rate
    return (launch, latency + level.custom_two_shot_sync_s,
            2 * (n - 1) / n * nbytes / (rate * level.custom_two_shot_efficiency))


def custom_all_reduce_unsupported(nbytes: float, place: Placement,
                                  max_bytes: float = CUSTOM_AR_MAX_BYTES) -> str:
    """Why the custom all-reduce does not run here ('' when it does): n not in (2, 4, 6, 8),
    a group leaving one node, n > 2 not all on NVLink (a level of kind nvlink-domain), S >= max_bytes
    (8 MiB by default; with symmetric memory on SM 9.0 vLLM caps n = 6 at 512 KiB and n = 8 at
    256 KiB, all_reduce_utils.py)."""
    n = place.size
    if n not in (2, 4, 6, 8):
        return f"{n} ranks; it serves 2, 4, 6 or 8"
    if len(place.spans) != 1 or place.crosses_nodes:
        return "the group leaves one node"
    if n > 2 and place.spans[0].level.kind != "nvlink-domain":
        return f"{n} ranks not all joined by NVLink"
    return "" if nbytes < max_bytes else f"{int(nbytes)} bytes, not under {int(max_bytes)}"
