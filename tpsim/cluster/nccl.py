"""What differs between NCCL releases in how they run NVLS and point-to-point LL, as data: a
topology priced as a given NCCL runs it (:func:`with_nccl`, ``tpsim collective --nccl``).

A shipped topology holds the NCCL 2.21-2.27 NVLS values. Three things differ in other releases, all
read from NCCL's code (github.com/NVIDIA/nccl, at each release's tag):

* the latency NCCL's tuning model gives an NVLS all-reduce on one node, ``baseLat[NVLS][Simple]
  + hwLat[NVLINK][NVLS][Simple]`` in src/graph/tuning.cc: 23 + 0 us in 2.18 (v2.18.5-1),
  0 + 23 in 2.19-2.20 (v2.19.3-1, v2.20.5-1), 0 + 25 from 2.21 (v2.21.5-1 .. v2.27.7-1, and
  in 2.28-2.30's ``.baseLatencies``/``.hwLatencies``, v2.28.3-1 .. v2.30.7-1); tpsim
  pays it once per NVLS all-reduce (``hop_latency_us.nvls.simple`` of the level);
* the latency of an NVLS-tree hop across the network, ``hwLat[NET][NVLSTree][Simple]``: 19 us in
  2.18, 14 in 2.19-2.27 and in 2.28's first patches (v2.28.3-1, v2.28.7-1: release ``2.28.3``,
  ``2.28.7``), 20.9 from v2.28.9-1 (``ncclTunerConstantsDefaults`` in src/graph/tuning.cc,
  v2.28.9-1 .. v2.30.7-1): release ``2.28`` means v2.28.9-1, its last patch;
* how a message is laid over NVLS's channels: 2.18-2.19 walk a fixed grid of chunks, channel by
  channel (src/collectives/device/all_reduce.h, v2.18.5-1; src/device/all_reduce.h, v2.19.3-1:
  ``offset = gridOffset + bid*nHeads*chunkSize``), so a small message runs on one channel; 2.20
  splits it evenly over the channels (src/enqueue.cc ``workCount`` per channel, the kernel's
  ``oneNode`` path, v2.20.3-1 .. v2.30.7-1): the level's ``nvls_fixed_grid``
  (:func:`tpsim.cost.nvls_pipeline.nvls_terms` prices both).

Point-to-point (an all-to-all's sends and receives, :data:`NCCL_P2P`), src/enqueue.cc
``addP2pToPlan``, ``P2P_LL_THRESHOLD`` 16384: 2.18-2.21 (v2.18.5-1, v2.21.5-1) run a channel's
part on LL where it fits the threshold, a peer's bytes up to 64 KiB one part (``calcP2pChunkSize``
at Simple's 512 KiB step), so LL up to 16 KiB a peer; 2.22-2.28 (v2.22.3-1 .. v2.27.3-1,
v2.28.3-1 .. v2.28.9-1) where a peer's bytes fit ``thresholdLL = nChannelsMax x
P2P_LL_THRESHOLD``, nChannelsMax = ``p2pnChannelsPerPeer`` (32 on an 8-GPU NVSwitch node: 2 x 18 NVLinks to a peer, capped at the
32 p2p channels, src/graph/paths.cc), so up to 512 KiB a peer, and split LL's bytes over channels
at LL's own step (``buffSizes[LL] / NCCL_STEPS`` = 8 lines x 512 threads x 16 B = 64 KiB, parts of
at least 8 KiB); 2.29-2.30 (v2.29.2-1 .. v2.30.7-1) split at Simple's step first (parts of at
least ``p2pChunkSize/8`` = 64 KiB in a node) and run LL where the peer's bytes fit its channels
x 16 KiB (``bytes[dir] <= nChannels[dir] * ncclParamP2pLLThreshold()``): 16 KiB a peer in a
node. The shipped files hold that rule (``collective_protocols.ll.p2p_peer_bytes`` 16384,
``p2p_step_bytes`` 524288).

The release is one setting of a run's layout (``nccl``, declared once in
:mod:`tpsim.spec.release`; ``--nccl`` on every command that prices collectives, ``nccl=`` in the
Python API); every command loads its topology through :func:`topology_of`, the one place it is
applied and a release tpsim does not know refused.
"""
from __future__ import annotations

import dataclasses
import re

from ..base.errors import ConfigError
from .topology import Topology, load_topology

# release -> (NVLS latency on one node, us: tuning.cc baseLat + hwLat[NVLINK][NVLS];
#             hwLat[NET][NVLSTree], us; fixed grid)
NCCL_NVLS = {
    "2.18": (23.0, 19.0, True),    # baseLat {0, 0, 23.0}, hwLat NVLINK NVLS 0: v2.18.1-1..v2.18.6-1
    "2.19": (23.0, 14.0, True),    # baseLat 0, hwLat NVLINK NVLS 23: v2.19.1-1..v2.19.4-1
    "2.20": (23.0, 14.0, False),   # hwLat 23; the oneNode path: v2.20.3-1, v2.20.5-1
    **{f"2.{minor}": (25.0, 14.0, False) for minor in range(21, 28)},  # v2.21.5-1..v2.27.7-1
    # tuning.cc .hwLatencies: NVLINK NVLS {0, 0, 25}, NET NVLSTree {0, 0, 14}: v2.28.3-1, v2.28.7-1
    "2.28.3": (25.0, 14.0, False), "2.28.7": (25.0, 14.0, False),
    # NET NVLSTree {0, 0, 20.9}: v2.28.9-1, v2.29.2-1..v2.29.7-1, v2.30.3-1..v2.30.7-1
    **{f"2.{minor}": (25.0, 20.9, False) for minor in range(28, 31)},
}
NCCL_RELEASES = ("topology", *NCCL_NVLS)     # topology: the file's own values

# release -> (the most bytes a peer runs on LL inside a node, the step LL's parts split by)
NCCL_P2P = {
    **{f"2.{minor}": (16384, 524288) for minor in range(18, 22)},       # part <= 16 KiB
    # thresholdLL = nChannelsMax x 16 KiB: v2.22.3-1 .. v2.28.9-1
    **{key: (32 * 16384, 65536) for key in NCCL_NVLS if "2.22" <= key < "2.29"},
    # nChannels[dir] x 16 KiB, split at Simple's step first: v2.29.2-1 .. v2.30.7-1
    **{f"2.{minor}": (16384, 524288) for minor in (29, 30)},
}


def nccl_release(text: str) -> str:
    """``2.18.5``, ``v2.18.5-1`` or ``2.18`` -> ``2.18``; a patch the tables key apart stays
    itself (``v2.28.7-1`` -> ``2.28.7``); anything else (``2.18.abc``, ``2.18-rc``,
    ``2.18.5.1``) comes back unchanged (for the caller's error to name)."""
    m = re.fullmatch(r"v?2\.(\d+)(?:\.(\d+))?(?:-\d+)?", str(text).strip())
    if m is None:
        return str(text)
    minor, patch = f"2.{m[1]}", f"2.{m[1]}.{m[2]}"
    return patch if patch in NCCL_NVLS else minor


def release_of(release: str | None) -> str:
    """``release`` as the tables key it (:func:`nccl_release`), ``topology`` for None; an
    unknown release is a ConfigError naming ``--nccl``."""
    if release is None or release == "topology":
        return "topology"
    key = nccl_release(release)
    if key not in NCCL_NVLS:
        raise ConfigError("--nccl", "", f"an NCCL release tpsim knows ({', '.join(NCCL_RELEASES)})",
                          release)
    return key


def topology_of(topology, release: str | None = None) -> Topology:
    """The topology a command runs on: ``topology`` (a :class:`Topology`, a shipped name or a
    YAML path) as NCCL ``release`` runs it (:func:`with_nccl`). Every command and API function
    resolves its topology here, with its layout's ``nccl`` (:mod:`tpsim.spec.release`)."""
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    return with_nccl(topo, release)


def nccl_text(release: str) -> str:
    """How a report's header names the release priced: '' for the file's own values, else
    `` under NCCL 2.18``."""
    return "" if release == "topology" else f" under NCCL {release}"


def with_nccl(topo: Topology, release: str | None) -> Topology:
    """``topo`` as NCCL ``release`` runs NVLS (:data:`NCCL_NVLS`): on every level with in-switch
    reduction that release's NVLS latency (``hop_latency_us.nvls.simple``) and
    ``nvls_fixed_grid``, on every network level its ``hop_latency_us.nvls_tree.simple``, and
    where the device lists LL its p2p rule (:data:`NCCL_P2P`: ``p2p_peer_bytes``,
    ``p2p_step_bytes``). None or ``topology``: ``topo`` as it is. An unknown release is a
    ConfigError naming ``--nccl``."""
    key = release_of(release)
    if key == "topology":
        return topo
    nvls_us, tree_us, grid = NCCL_NVLS[key]
    levels = tuple(_hop(dataclasses.replace(lv, nvls_fixed_grid=grid), "nvls", nvls_us)
                   if lv.in_switch_reduction else
                   _hop(lv, "nvls_tree", tree_us) if lv.inter_node else lv for lv in topo.levels)
    return topo.replaced(levels=levels, device=_p2p_ll(topo.device, *NCCL_P2P[key]))


def _p2p_ll(device, peer_bytes: int, step: int):
    """``device`` with its LL protocol's p2p rule set (unchanged where it lists no LL)."""
    protocols = dict(device.collective_protocols or {})
    if "ll" not in protocols:
        return device
    protocols["ll"] = dataclasses.replace(protocols["ll"], p2p_peer_bytes=peer_bytes,
                                          p2p_step_bytes=step)
    return dataclasses.replace(device, collective_protocols=protocols)


def _hop(lv, algorithm: str, latency_us: float):
    """``lv`` with ``hop_latency_us[algorithm].simple`` = ``latency_us``."""
    hops = dict(lv.hop_latencies or {})
    hops[algorithm] = {**hops.get(algorithm, {}), "simple": latency_us * 1e-6}
    return dataclasses.replace(lv, hop_latencies=hops)
