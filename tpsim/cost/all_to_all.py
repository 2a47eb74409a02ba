"""All-to-all: NCCL's (every rank sends a slice to every other) and the two-level MoE dispatch
DeepEP runs (RDMA to the same GPU index on each target node, then NVLink forwarding).

Conventions follow nccl-tests (``src/alltoall.cu``: ``AlltoAllGetBw``): ``nbytes`` S is what
one rank sends *in total, its own slice included* (count x nranks x type size); it sends S/n to
each of the n ranks. ``algbw = S / t`` and ``busbw = algbw (n - 1)/n``: the share of S that
leaves the rank.

NCCL runs an all-to-all as one group of sends and receives, one pair per rank, itself
included (``ncclGroupStart``; ``AlltoAllRunColl`` in the same file), every peer in flight at
once on NCCL's point-to-point channels. Its protocol is a rule, not NCCL's tuning model: LL
where a peer's S/n fits the release's limit (the device's ``collective_protocols.ll
.p2p_peer_bytes``: 16 KiB, or 512 KiB in NCCL 2.22-2.28, :mod:`tpsim.cluster.nccl`), Simple
above (priced so inside a node only: :func:`p2p_protocol`). Each level of the hierarchy the group crosses is a stage every byte that
leaves a unit of the level below must pass; the stages run at once (different links), so the
slowest sets the pace. With d_k the group's ranks inside one unit below level k (1 at the
innermost level: a GPU; the ranks of one node at the network level) and p_k B_k that unit's
links out (:attr:`~tpsim.cluster.placement.LevelSpan.unit_bandwidth_Bps`: a GPU's own NVLink
ports; the node's NICs this group uses), a rank sends S (n - d_k)/n out of its unit and owns
1/d_k of the unit's links:

    t = s (collective_launch + P launch) + s sum_k hop_k[ring][P] + LL host hops
        + transfer + max(0, pipeline - transfer) + S / B_copy
    transfer = max_k  S (n - d_k)/n / (p_k B_k eff_k[ring] f_P / d_k)

with P the protocol (:func:`p2p_protocol`), f_P its ``bandwidth_fraction`` (LL: half the
line rate) and LL's network hops the host's ``ll_host_latency_us`` each
(:func:`~tpsim.cost.nccl_tuning.ll_host_s`). ``pipeline`` is NCCL's p2p schedule inside one
node: on Simple :func:`~tpsim.cost.p2p_pipeline.p2p_pipeline_s` (the channels a peer's S/n
takes, the CTAs they share, each part's chunks at an SM's copy rate, the device's
``deepep_sm_copy_GBps``), on LL :func:`~tpsim.cost.p2p_pipeline.p2p_ll_s` (each part at its
receiving warps' share of a ring CTA's LL rate, ``collective_protocols.ll.cta_GBps``); 0
across nodes and on a device that lists no such rate.

Inside a node this is (n - 1)/n S over a GPU's own links, as for an all-gather; across DGX
nodes (one NIC per GPU) the inter-node share (n - g)/n S of a rank's data crosses its own NIC.
The latency charges one hop per level crossed: the sends go out together, not in n - 1 rounds
(an assumption no published small-message curve here checks). ``eff[ring]`` is the level's
measured fraction of line rate that NCCL's copy kernels reach (the ring's, the same kernels).
"""
from __future__ import annotations

import math

from ..base.record import record
from .collective_cost import CollectiveCost
from .interference import compute_loss
from ..base.formula import qualname
from ..cluster.placement import LevelSpan, Placement
from ..cluster.topology import SIMPLE, Topology
from .nccl_tuning import ll_host_s
from .p2p_pipeline import p2p_ll_s, p2p_pipeline_s


def _launch_s(topo: Topology, proto: str = "simple") -> float:
    dev = topo.device
    return dev.collective_latency_scale * (dev.collective_launch_s
                                           + dev.protocols.get(proto, SIMPLE).launch_s)


def _hop_s(spans, topo: Topology, proto: str = "simple") -> float:
    """s sum_k hop_k[ring][proto] + LL host hops: one hop at every level the group crosses."""
    return topo.device.collective_latency_scale * sum(
        s.level.hop_latency_s("ring", proto) for s in spans) + ll_host_s(
        [(s, 1) for s in spans], proto)


# what --protocol auto means for an all-to-all (the hint of a refused --protocol)
P2P_AUTO = ("auto runs LL where NCCL does (a peer's bytes within the --nccl release's LL rule, "
            "inside a node), Simple above; simple forces Simple")


def p2p_protocol(peer_bytes: float, place: Placement, topo: Topology) -> str:
    """The protocol tpsim prices ``peer_bytes`` to each peer of ``place`` with: LL at most
    the device's ``collective_protocols.ll.p2p_peer_bytes`` inside a node (where it lists LL),
    Simple above. NCCL (src/enqueue.cc ``addP2pToPlan``, ``P2P_LL_THRESHOLD`` 16384): 2.18-2.21
    LL where a channel's part fits it, a peer's bytes up to 64 KiB one part, so b <= 16 KiB;
    2.22-2.28 where b <= p2pnChannelsPerPeer x 16 KiB (512 KiB on an 8-GPU NVSwitch node);
    2.29-2.30 where b <= its channels x 16 KiB, one channel up to 64 KiB, so b <= 16 KiB.

    Across nodes NCCL's rule picks LL too, but there the host's proxy thread posts and polls
    every remote peer's send and receive, a per-peer cost tpsim does not price: two-node
    all-to-alls of 1 KiB measured 49.8 us (8x A100 NDmv4 x 2, NCCL 2.17.1; microsoft/mscclpp
    docs/performance-ndmv4.md) and 37.6 us (8x B200 x 2, tests/data/published_collectives),
    above even Simple's price (40.5, 28.8 us); LL's there would be 18 and 13 us. Simple is
    kept across nodes until that term is modelled."""
    ll = topo.device.protocols.get("ll")
    return "ll" if ll and not place.crosses_nodes and peer_bytes <= ll.p2p_peer_bytes else "simple"


def _rank_bandwidth(span: LevelSpan, kernel: str = "ring") -> float:
    """One rank's share of the links out of its unit below ``span``'s level, bytes/s:
    p B eff[kernel] / d (a GPU's own links at the innermost level); a kernel the level lists
    no efficiency for runs at the ring's."""
    eff = span.level.efficiency
    return span.unit_bandwidth_Bps * (getattr(eff, kernel) or eff.ring) / span.devices_per_unit


def all_to_all_time(nbytes: float, place: Placement, topo: Topology,
                    protocol: str = "auto") -> CollectiveCost:
    """NCCL all-to-all of S = ``nbytes`` per rank (its own slice included) on ``place``; see the
    module docstring for the formula. ``protocol``: ``auto`` (NCCL's rule, :func:`p2p_protocol`)
    or ``simple`` (NCCL_PROTO=Simple). A group of one rank moves nothing."""
    n = place.size
    if not place.spans:
        return CollectiveCost("all-to-all", "none", int(nbytes), n, 0.0, group=place.group.name)
    proto = p2p_protocol(nbytes / n, place, topo) if protocol == "auto" else protocol
    fraction = topo.device.protocols.get(proto, SIMPLE).bandwidth_fraction
    transfer = max(nbytes * (n - s.devices_per_unit) / n / (_rank_bandwidth(s) * fraction)
                   for s in place.spans)
    bw = topo.device.collective_copy_Bps
    copy = nbytes / bw if bw else 0.0
    pipeline = _p2p_pipeline_s(nbytes / n, place, topo, proto, transfer)
    launch, latency = _launch_s(topo, proto), _hop_s(place.spans, topo, proto)
    return CollectiveCost("all-to-all", "p2p", int(nbytes), n,
                          launch + latency + transfer + pipeline + copy, launch, latency,
                          transfer, copy, proto, qualname(all_to_all_time), place.group.name,
                          pipeline)


def _p2p_pipeline_s(peer_bytes: float, place: Placement, topo: Topology, proto: str,
                    transfer: float) -> float:
    """What NCCL's p2p kernel adds above the wire time inside one node: max(0, pipeline -
    transfer), on Simple where the device lists an SM's copy rate
    (:func:`~tpsim.cost.p2p_pipeline.p2p_pipeline_s`), on LL where it lists a ring CTA's LL
    rate (:func:`~tpsim.cost.p2p_pipeline.p2p_ll_s`, at the release's step); 0 across nodes or
    without the rate."""
    if place.crosses_nodes:
        return 0.0
    ll = topo.device.protocols.get("ll") if proto == "ll" else None
    if ll and ll.cta_Bps:
        return max(0.0, p2p_ll_s(peer_bytes, place.size, ll.cta_Bps, ll.p2p_step_bytes) - transfer)
    rate = topo.device.deepep_sm_copy_Bps
    if proto != "simple" or not rate:
        return 0.0
    return max(0.0, p2p_pipeline_s(peer_bytes, place.size, rate) - transfer)


# ---------------------------------------------------------------- MoE dispatch across nodes
@record
class DispatchCost:
    """One MoE dispatch (or combine: the same bytes the other way) on one rank.

    ``network_bytes``: what the rank's NIC carries; ``nvlink_bytes``: what it forwards or
    delivers over NVLink; ``network_s`` and ``nvlink_s`` the two stages' transfer times, which
    overlap (``time_s = launch_s + latency_s + max(network_s, nvlink_s)``)."""
    time_s: float
    launch_s: float
    latency_s: float
    network_s: float
    nvlink_s: float
    network_bytes: float
    nvlink_bytes: float
    formula: str

    @property
    def bottleneck(self) -> str:
        return "network" if self.network_s >= self.nvlink_s else "nvlink"


def hierarchical_dispatch_time(tokens: float, token_bytes: float, place: Placement,
                               topo: Topology, remote_nodes_per_token: float,
                               ranks_per_token: float, kernel: str = "ring",
                               sms: int | None = None) -> DispatchCost:
    """Two-level dispatch as DeepEP's normal kernels run it (deepseek-ai/DeepEP,
    ``csrc/kernels/internode.cu``; DeepSeek-V3 report, section 3.2.2): a token bound for
    experts on another node crosses the network *once per target node*, to the GPU of the same
    local index there, which forwards it over NVLink to each destination GPU of that node.

    With T = ``tokens`` on this rank, b = ``token_bytes``, r = ``remote_nodes_per_token`` (the
    distinct other nodes a token's experts sit on, on average), R = ``ranks_per_token`` (the
    distinct GPUs, all nodes), g = the group's ranks per node:

        network = T b r                                      over the rank's own NIC share
        nvlink  = T b R (g - 1)/g                            over the rank's NVLink
        t = s (collective_launch + Simple launch) + s (hop_nvlink + hop_net)
            + max(network / (p B_net eff_net[kernel] / g), nvlink / (B_nvl eff_nvl[kernel]))

    (``kernel``: ring, NCCL's copy kernels' fraction of line rate, unless the level lists the
    dispatch kernel's own, :func:`flex_dispatch_time`). Inside one node, with ``sms`` (the SMs
    DeepEP's intranode kernel runs on) and the device's ``deepep_sm_copy_GBps`` r, the SMs
    bound the NVLink stage too: half of them copy every row a rank sends (its own slice
    included) into the peers' buffers, the other half out of its own, each at r,

        nvlink_s = max(nvlink / (B_nvl eff_nvl[kernel]),  T b R / (sms r))

    (``csrc/kernels/legacy/intranode.cu`` ``dispatch``: even blocks send, odd blocks receive;
    across nodes its internode kernel splits the SMs otherwise: not bounded here).

    By symmetry what a rank forwards equals what it receives; a delivery arrives on the GPU of
    the sender's local index, which is the destination itself one time in g (uniform senders),
    so (g - 1)/g of the R deliveries per token cross NVLink. The stages pipeline (chunks are
    forwarded while later ones arrive), so the slower one sets the pace. Inside one node
    (r = 0) it is the plain dispatch: each token reaches its R GPUs, (g - 1)/g of them peers.
    """
    intra = place.intra_node
    inter = place.inter_node
    g = intra[0].fanout if intra else 1
    network = tokens * token_bytes * remote_nodes_per_token
    nvlink = tokens * token_bytes * ranks_per_token * (g - 1) / g
    network_s = network / _rank_bandwidth(inter[0], kernel) if inter and network else 0.0
    nvlink_s = nvlink / _rank_bandwidth(intra[0], kernel) if intra and nvlink else 0.0
    copy_Bps = topo.device.deepep_sm_copy_Bps
    if sms and copy_Bps and nvlink and not inter:
        nvlink_s = max(nvlink_s, tokens * token_bytes * ranks_per_token / (sms * copy_Bps))
    launch = _launch_s(topo) if place.spans else 0.0
    latency = _hop_s(intra[:1] + inter[:1], topo)
    return DispatchCost(launch + latency + max(network_s, nvlink_s), launch, latency, network_s,
                        nvlink_s, network, nvlink, qualname(hierarchical_dispatch_time))


def _none_hit(items: int, per_unit: int, draws: int) -> float:
    """Probability that ``draws`` distinct items drawn uniformly from ``items`` miss every one
    of a unit's ``per_unit`` items: C(items - per_unit, draws) / C(items, draws)."""
    if draws > items - per_unit:
        return 0.0
    return math.comb(items - per_unit, draws) / math.comb(items, draws)


def uniform_fanout(experts: int, top_k: int, ranks: int, ranks_per_node: int) -> tuple[float, float]:
    """(remote nodes, distinct ranks) a token reaches on average when its ``top_k`` experts are
    ``top_k`` distinct of ``experts`` drawn uniformly (a balanced router, no group limit), the
    experts split evenly over ``ranks`` ranks of ``ranks_per_node`` per node:

        R = n (1 - C(E - E/n, k) / C(E, k))          distinct ranks (hypergeometric miss)
        r = (m - 1) (1 - C(E - E/m, k) / C(E, k))    distinct other nodes, m = n / g nodes
    """
    nodes = ranks // ranks_per_node
    ranks_hit = ranks * (1 - _none_hit(experts, experts // ranks, top_k))
    remote = (nodes - 1) * (1 - _none_hit(experts, experts // nodes, top_k))
    return remote, ranks_hit


def round_robin_fanout(experts: int, top_k: int, ranks: int, ranks_per_node: int
                       ) -> tuple[float, float]:
    """(remote nodes, distinct ranks) a token reaches on average when token t takes experts
    k t, ..., k t + k - 1 mod E (NeMo AutoModel's ``FakeBalancedGate``,
    ``nemo_automodel/components/moe/layers.py``: ``arange(T k).view(-1, k) % E``), the
    experts split in contiguous blocks of E/n over ``ranks`` = n ranks (``ExpertParallel``'s
    ``Shard(0)``), g = ``ranks_per_node`` a node, m = n / g nodes: over one period
    P = E / gcd(E, k) of t,

        R = mean_t |{e // (E/n)}|                 distinct ranks of token t's experts
        r = mean_t |{e // (E/n) // g}| (1 - 1/m)  its nodes, less the sender's own (1 in m)

    (E 128, k 8 on 8 ranks: R = 1, where a balanced random router reaches 5.3; E 256, k 8 on
    64 ranks of 8 a node: R = 2, r = 7/8, where it reaches 7.7 and 4.6: :func:`uniform_fanout`)."""
    per = experts // ranks
    nodes = max(ranks // ranks_per_node, 1)
    period = experts // math.gcd(experts, top_k)
    hit = [{(top_k * t + j) % experts // per for j in range(top_k)} for t in range(period)]
    ranks_hit = sum(len(h) for h in hit) / period
    spanned = sum(len({r // ranks_per_node for r in h}) for h in hit) / period
    return spanned * (1 - 1 / nodes), ranks_hit


FANOUTS = {"uniform": uniform_fanout, "round-robin": round_robin_fanout}


# Megatron-core gives DeepEP's kernels 20 SMs unless --moe-flex-dispatcher-num-sms sets another
# count (megatron/core/transformer/moe/token_dispatcher.py, _DeepepManager: "None -> 20 (DeepEP's
# historical mcore default)"); the DeepSeek-V3 report, section 3.2.2: "only 20 SMs are
# sufficient to fully utilize the bandwidths of IB and NVLink".
DEEPEP_SMS = 20


def flex_dispatch_time(tokens: float, token_bytes: float, experts: int, top_k: int,
                       place: Placement, topo: Topology, backend: str = "deepep",
                       probs: bool = False, routing: str = "uniform") -> CollectiveCost:
    """One dispatch (or combine) of Megatron-core's flex dispatcher on the EP group ``place``
    (``token_dispatcher.py`` ``MoEFlexTokenDispatcher``: DeepEP's or HybridEP's fused kernels,
    which send a token once per target node and once per target GPU, never once per expert):
    :func:`hierarchical_dispatch_time` at the ``routing``'s fan-out (``FANOUTS``: a balanced
    router's by default, :func:`round_robin_fanout`'s with ``round-robin``),

        r, R = uniform_fanout(E, k, n, g)       n = the group's ranks, g = its ranks per node
        t = hierarchical_dispatch_time(T, b + p, place, r, R, kernel)

    with T = ``tokens``, b = ``token_bytes``, E = ``experts``, k = ``top_k``; p = 4 (E/n) g
    with ``probs`` (HybridEP: each row carries the fp32 probabilities of its target node's E/n g
    experts, its ``prob_per_token``, over both stages: deepseek-ai/DeepEP branch ``hybrid-ep``,
    ``csrc/hybrid_ep/backend/hybrid_ep_backend.cuh``), else 0. The permutation
    of the tokens into per-rank send buffers runs inside the kernel (no separate permute op).
    As an all-to-all of S = T (b + p) (``nbytes``), its transfer the slower of the two stages.

    ``kernel`` is ``deepep`` for DeepEP (each level's ``efficiency.deepep``, on NVLink ~0.64 of
    the line rate where NCCL reaches 0.80-0.82: ``bench/deepep_published.py``), at DEEPEP_SMS
    SMs, and ``hybridep`` for HybridEP across nodes: each level's ``efficiency.hybridep``,
    the rate its kernels reach there (``bench/hybridep_published.py``: on H100 the NVLink stage
    ~200 GB/s, about half of NCCL's 370, which bounds them on 2 nodes), fitted at 16 SMs.
    HybridEP gives them 8 across nodes by default (deepseek-ai/DeepEP branch ``hybrid-ep``,
    ``csrc/hybrid_ep/config.cuh`` ``Configurer``; 24 inside one node), Megatron-Bridge's
    performance harness 32 (``scripts/performance/utils/overrides.py``:
    ``moe_hybridep_num_sms = 32``); its published table runs no faster at 16 than at 8.
    Ring otherwise (HybridEP inside a node)."""
    intra = place.intra_node
    g = intra[0].fanout if intra else 1
    remote, ranks = FANOUTS[routing](experts, top_k, place.size, g)
    kernel = "ring" if backend == "hybridep" and not place.crosses_nodes else backend
    b = token_bytes + (4 * experts // place.size * g if probs else 0)
    d = hierarchical_dispatch_time(tokens, b, place, topo, remote, ranks, kernel,
                                   DEEPEP_SMS if backend == "deepep" else None)
    return CollectiveCost("all-to-all", backend, int(tokens * b), place.size, d.time_s,
                          d.launch_s, d.latency_s, max(d.network_s, d.nvlink_s), 0.0, "simple",
                          qualname(flex_dispatch_time), place.group.name)


def flex_sm_share(backend: str, device) -> float | None:
    """The share of ``device``'s SMs the flex dispatcher's kernels take from the compute beside
    them: for DeepEP, a non-persistent kernel's loss beside DEEPEP_SMS held, DEEPEP_SMS /
    sm_count (:func:`tpsim.cost.interference.compute_loss`); None (the device's
    ``comm_compute_interference``, as for NCCL) for HybridEP, whose count Megatron-core
    leaves to the library (8 across nodes, 24 inside one) and Megatron-Bridge's performance
    harness sets to 32 (``scripts/performance/utils/overrides.py``: on H100 32 of 132 SMs), or
    for a device that lists no sm_count. Used where the device lists no ``collective_sms``;
    where it does, each kernel's loss follows its kind (:mod:`tpsim.sim.interference`)."""
    if backend != "deepep" or not device.sm_count:
        return None
    return compute_loss(DEEPEP_SMS, device.sm_count, persistent=False)
