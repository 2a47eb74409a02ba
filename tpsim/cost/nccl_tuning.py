"""How many hops an NCCL ring or tree makes at each level, and the three corrections NCCL's own
tuning model (src/graph/tuning.cc, NCCL 2.19-2.30) applies to them beyond link rates and hop
latencies: the vocabulary :mod:`tpsim.cost.collectives` prices rings and trees with.

* :func:`tree_correction`: NCCL's trees reach only part of their bandwidth at medium sizes
  (``treeCorrectionFactor``: 0.4-0.9 from 1 KiB to 256 MiB). Its comment: "Trees are not
  perfectly sticking to the model for medium sizes"; the table is NVIDIA's, from runs tpsim
  does not hold.
* :func:`ring_plateau`: a ring all-reduce across nodes on Simple pays 1.4x its per-step latency
  once it carries data (``lat *= 1.4 // Plateau effect of ring``, SM 8.0 and later).
* :func:`tree_load`: beyond two nodes an inner node of a binary tree carries both children's
  halves (NCCL's tuning model leaves this to its per-channel caps).
* :func:`ll_cap_Bps`: LL's buffers across the network live in host memory (src/transport/net.cc
  maps every protocol's buffer in GPU memory under GPUDirect RDMA except LL's), so LL's bus
  bandwidth across nodes is capped by the host: ``llMaxBws`` by CPU vendor and node count
  (``levels[i].ll_max_busbw_GBps``). LL128 and Simple go GPU to NIC directly.
* :func:`tree_cap_Bps`: a tree's bus bandwidth across nodes is at most its channels times
  NVIDIA's measured per-channel maximum (``perChMaxTreeBws``, ``perChMaxTreeLL128Bws``), by GPU
  generation and node count (``levels[i].tree_max_busbw_GBps``).
* :func:`ll_host_s`: for the same reason every LL hop across the network waits on the host's
  PCIe path (the receiving GPU polls host memory): where it is slower than on the hosts NCCL's
  hwLat table was measured on, each such hop pays ``levels[i].ll_host_latency_us`` more.
"""
from __future__ import annotations

import math

from ..cluster.topology import LevelSpan

# tuning.cc treeCorrectionFactor[protocol][log2(S / 64 B)], 64 B .. 256 MiB (NCCL 2.17-2.30)
TREE_CORRECTION = {
    "ll": (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0,
           1.0, 1.0, 1.0),
    "ll128": (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9,
              .9, .9, 1.0, 1.0),
    "simple": (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7,
               .8, .9, .9),
}
RING_PLATEAU = 1.4          # tuning.cc: Simple ring all-reduce latency across nodes, SM >= 8.0
PLATEAU_BYTES_PER_RANK = 4096   # from S >= n/16 x 64 KiB (NCCL 2.17-2.18's test)


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


def tree_hops(spans: tuple[LevelSpan, ...]) -> list[tuple[LevelSpan, int]]:
    """Up and down a chain inside the node (fanout - 1 hops per intra level) and a binary tree
    across nodes (ceil(log2 fanout) hops per inter level): NCCL's tree latency shape."""
    return [(s, 2 * (math.ceil(math.log2(s.fanout)) if s.inter_node else s.fanout - 1))
            for s in spans]


def tree_load(span: LevelSpan) -> float:
    """Bytes a node's NICs carry per direction in a double binary tree of ``span.units`` nodes,
    relative to a chain of two: 1.5 beyond two nodes, else 1.

    Each tree carries half the buffer, and every node is an inner node in at most one tree and
    a leaf in the other (NCCL's double binary trees, after Sanders, Speck & Traeff 2009): an
    inner node takes both children's halves and sends its half on, 2 S/2 + S/2 = 1.5 S each
    way, where each node of a two-node chain moves S/2 in each tree, S in all."""
    return 1.5 if span.inter_node and span.units > 2 else 1.0


def tree_correction(nbytes: float, protocol: str) -> float:
    """NCCL's treeCorrectionFactor for an all-reduce of ``nbytes``: the fraction of its modelled
    bandwidth a tree reaches, f_i at i = floor(log2(S / 64 B)), 1 outside 64 B .. 512 MiB.

    Where the table rises, a message just above a power of two would finish before one just
    below it; the factor returned is the monotone envelope S / max(S / f_i, max_{j <= i}
    64 B 2^j / f_{j-1}), so a larger message never finishes sooner.
    """
    table = TREE_CORRECTION[protocol]

    def f(i: int) -> float:
        return table[i] if 0 <= i < len(table) else 1.0
    i = (int(nbytes) >> 6).bit_length() - 1
    worst = max([nbytes / f(i)] + [64 * 2**j / f(j - 1) for j in range(min(i, len(table)) + 1)])
    return nbytes / worst


def ring_plateau(op: str, nbytes: float, ranks: int, protocol: str, crosses_nodes: bool) -> float:
    """Multiplier on a ring's per-step latencies: RING_PLATEAU for a Simple all-reduce across
    nodes from 4 KiB per rank, 1 otherwise (tuning.cc ncclTopoGetAlgoTime)."""
    plateau = (op == "all-reduce" and protocol == "simple" and crosses_nodes
               and nbytes >= PLATEAU_BYTES_PER_RANK * ranks)
    return RING_PLATEAU if plateau else 1.0


def ll_cap_Bps(span: LevelSpan, protocol: str) -> float:
    """LL's bus-bandwidth cap on a network level, bytes/s (inf for other protocols and levels
    that list none): ``ll_max_busbw_GBps`` for two nodes, its last entry for more."""
    return _by_nodes(span, span.level.ll_busbw_caps_Bps) if protocol == "ll" else math.inf


def _by_nodes(span: LevelSpan, caps) -> float:
    """A network level's cap from a list by node count: its first entry for two nodes, its last
    for more; inf inside a node or where the level lists none."""
    if not span.inter_node or not caps:
        return math.inf
    return caps[0] if span.units <= 2 else caps[-1]


def tree_cap_Bps(span: LevelSpan, protocol: str) -> float:
    """A tree all-reduce's bus-bandwidth cap on a network level, bytes/s (inf for LL and levels
    that list none): ``tree_max_busbw_GBps[protocol]`` for two nodes, its last entry for more.

    NCCL's tuning model (tuning.cc, NCCL 2.18-2.30) takes a tree's bus bandwidth as
    min(busBw x 0.92, nChannels x perChMaxTreeBws) on Simple and min(that x 120/128, nChannels x
    perChMaxTreeLL128Bws) on LL128, per-channel maxima NVIDIA measured by GPU generation and
    node count (Hopper: 41.4 / 36.0 GB/s and 36.7 / 29.0 at 2 / more nodes), then applies its
    tree correction to the capped figure; LL's own cap is the host's (:func:`ll_cap_Bps`)."""
    return _by_nodes(span, (span.level.tree_busbw_caps_Bps or {}).get(protocol))


def stage_cap_Bps(span: LevelSpan, algo: str, protocol: str, correction: float,
                  load: float) -> float:
    """What bounds a stage's bandwidth beyond its links, bytes/s, in the units the pipeline
    divides ``load x wire bytes`` by: the LL cap (:func:`ll_cap_Bps`) and, for a tree, the tree
    cap (:func:`tree_cap_Bps`) x load x the tree correction f (NCCL corrects the capped
    bandwidth; a cap on bus bandwidth bounds S / t, so the stage's load scales it)."""
    cap = ll_cap_Bps(span, protocol)
    return min(cap, tree_cap_Bps(span, protocol) * load * correction) if algo == "tree" else cap


def ll_host_s(hops, protocol: str) -> float:
    """Extra latency of LL's network hops, s: sum over the network levels k of count_k x
    ``ll_host_latency_us``_k for LL, 0 for LL128 and Simple.

    LL's network buffers are in host memory (src/transport/net.cc), so an LL hop across the
    network adds a GPU poll of host memory across PCIe that LL128 and Simple (GPU memory under
    GPUDirect RDMA) do not; NCCL's hwLat[NET][*][LL] holds it at the value of NVIDIA's hosts
    (the level's 0). Not scaled by the SM clock: it is the host's, not the kernel's."""
    if protocol != "ll":
        return 0.0
    return sum(count * span.level.ll_host_latency_s for span, count in hops if span.inter_node)
