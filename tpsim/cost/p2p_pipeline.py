"""NCCL's point-to-point schedule inside one node: how many CTAs an all-to-all's sends run on,
and the chunked pipeline each one runs. Why an all-to-all's bus bandwidth climbs with size and
stays below the NVLink line rate up to ~1 GiB a rank on 8 GPUs.

NCCL runs the sends and receives of a group on its p2p channels, one CTA (one SM) each
(NCCL 2.22-2.30, ``src/enqueue.cc`` ``scheduleP2pTasksToPlan``, ``addP2pToPlan``):

* ``P2P_CHANNELS`` = 32 channels (``p2pnChannels``: the node's ring channels rounded up to a
  power of two, ``src/graph/paths.cc`` ``ncclTopoComputeP2pChannels``; an 8-GPU NVSwitch node
  runs 24 ring channels, ``collective_sms``), and as many per peer (2 x the NVLinks to it,
  36 on NVLink 4 and 5, capped at ``p2pnChannels``).
* A peer's b bytes take k = min(k_min, ceil(b / (c/8))) channels, k_min the largest power of
  two with k_min n <= 32 (4 on 8 GPUs), doubled while a part b / k exceeds 32 c and k <= 16,
  c = ``P2P_NVL_CHUNKSIZE`` (512 KiB; the 4 MiB buffer over NCCL_STEPS 8 keeps it).
  Round r of the n rounds (``ncclP2pSchedule``: peer rank + r) starts at channel r
  (``ncclP2pChannelBaseForRound``) and spreads its parts by bit reversal
  (``ncclP2pChannelForPart``), so the n k parts fill the 32 CTAs evenly: w = ceil(n k / 32)
  parts a CTA, which split its warps (``src/device/sendrecv.h``: nWarps / nWorks each).
* A part moves in chunks of c (``runSend``/``runRecv``): the sender's warps write a chunk
  into the peer's FIFO, the peer's receiving warps copy it out to the user buffer; the chunk
  is posted whole (``ProtoSimple<1,1>``: one step a slice), so the last one is copied after it
  lands: m + 1 chunk times for m = b / (k c) chunks (c = the part where it is smaller), as
  NVLS's two-stage pipeline (:mod:`tpsim.cost.nvls_pipeline`).

A CTA's copy rate r is the SM's: an SM of DeepEP's intranode kernel copies the device's
``deepep_sm_copy_GBps`` of what a rank sends (half its SMs write into the peers, half copy
out; the same ld/st loop over NVLink as NCCL's send and receive warps, one CTA an SM). A
NCCL CTA does both copies of a part, so a part runs at r / w::

    pipeline = (m + 1) c w / r

The wire bound (n-1)/n S over the GPU's links at the ring's efficiency still holds beside it
(:func:`tpsim.cost.all_to_all.all_to_all_time` takes the larger). On 8 B200 at 22.1 GB/s an
SM, 4 channels a peer reach 28 x 22.1 = 619 GB/s bus bandwidth from 2 MiB to 512 MiB a rank,
below the 722 GB/s of the links; above 64 MiB a peer 8 channels fill all 32 CTAs.

On LL (:func:`p2p_ll_s`) a part's bytes go line by line: each thread of the receiving warps
polls one 16-byte line (8 bytes of data, two 4-byte flags) and stores its data, one line a
trip (``src/device/prims_ll.h`` ``LLGenericOp``), so a CTA's rate is its polling threads over
the trip time. NCCL's tuning model gives a ring CTA's LL rate: ``llMaxBws[generation][one
node]`` over the ring's CTAs (``src/graph/tuning.cc``; the device's ``collective_protocols.ll
.cta_GBps``), 512 threads (``NCCL_LL_MAX_NTHREADS``) each moving one line a trip; a p2p work
receives on ``nRecvWarpPerWork`` warps of the 20 (``NCCL_MAX_NTHREADS`` 640) its CTA's works
share (``src/device/sendrecv.h``, NCCL 2.22-2.30)::

    W = floor(20 / w),  W_recv = W // 2 (W <= 4) else (W - 1) // 2
    r_LL = r_ring 32 W_recv / 512,    t_LL = (b / k) / r_LL

with k the channels a peer's b bytes take at the release's step (LL's own 64 KiB in 2.22-2.28,
whose parts are at least 8 KiB; Simple's 512 KiB otherwise) and w = ceil(n k / P).
"""
from __future__ import annotations

import math

P2P_CHANNELS = 32               # p2pnChannels = p2pnChannelsPerPeer on an 8-GPU NVSwitch node
P2P_NVL_CHUNK = 512 * 1024      # NCCL_P2P_NVL_CHUNKSIZE default (src/init.cc, 2.18-2.30)
MIN_PART_PER_CHUNK = 8          # addP2pToPlan: minPartSize = stepSize / 8 inside one node
MAX_PART_CHUNKS = 32            # addP2pToPlan: maxPartSize = stepSize * 32 inside one node
STAGES = 2                      # the sender's write into the FIFO, the receiver's copy out
P2P_WARPS = 640 // 32           # NCCL_MAX_NTHREADS / WARP_SIZE: the warps of a p2p CTA
LL_RING_THREADS = 512           # NCCL_LL_MAX_NTHREADS: a ring CTA's threads on LL


def p2p_channels_per_peer(peer_bytes: float, ranks: int, step: int = P2P_NVL_CHUNK) -> int:
    """k: the channels (CTAs) NCCL splits one peer's ``peer_bytes`` over inside one node
    (``addP2pToPlan``): min(k_min, ceil(b / (c/8))), doubled while b / k > 32 c and
    k <= P/2, with k_min = P / 2^j the largest with k_min n <= P (or 1); c = ``step``
    (Simple's chunk; LL's 64 KiB step where the release splits LL by it)."""
    k_min = P2P_CHANNELS
    while k_min * ranks > P2P_CHANNELS and k_min > 1:
        k_min //= 2
    min_part = step // MIN_PART_PER_CHUNK
    k = max(1, min(k_min, math.ceil(peer_bytes / min_part)))
    part = max(min_part, peer_bytes / k)
    while part > MAX_PART_CHUNKS * step and k <= P2P_CHANNELS // 2:
        k *= 2
        part = peer_bytes / k
    return k


def p2p_pipeline_s(peer_bytes: float, ranks: int, cta_Bps: float) -> float:
    """Seconds the slowest of an all-to-all's p2p parts takes to move ``peer_bytes`` to one
    peer on ``ranks`` GPUs of one node, each CTA copying ``cta_Bps``:

        k = p2p_channels_per_peer(b, n),  w = ceil(n k / P),  c = min(P2P_NVL_CHUNK, b / k)
        pipeline = (b / (k c) + STAGES - 1) c w / r
    """
    if peer_bytes <= 0:
        return 0.0
    k = p2p_channels_per_peer(peer_bytes, ranks)
    works = math.ceil(ranks * k / P2P_CHANNELS)
    part = peer_bytes / k
    chunk = min(P2P_NVL_CHUNK, part)
    return (part / chunk + STAGES - 1) * chunk * works / cta_Bps


def p2p_recv_warps(works: int) -> int:
    """The warps that receive one of the ``works`` p2p works sharing a CTA (``sendrecv.h``:
    nWarpPerWork = 20 // w; (W - 1) // 2 of them receive, W // 2 where W <= 4); at least 1."""
    per_work = max(1, P2P_WARPS // works)
    return max(1, per_work // 2 if per_work <= 4 else (per_work - 1) // 2)


def p2p_ll_s(peer_bytes: float, ranks: int, ring_cta_Bps: float, step: int) -> float:
    """Seconds the slowest p2p part takes on LL to move ``peer_bytes`` to one peer on ``ranks``
    GPUs of one node, a ring CTA moving ``ring_cta_Bps`` on LL (see the module docstring):

        k = p2p_channels_per_peer(b, n, step),  w = ceil(n k / P)
        t = (b / k) / (r_ring 32 p2p_recv_warps(w) / LL_RING_THREADS)
    """
    if peer_bytes <= 0:
        return 0.0
    k = p2p_channels_per_peer(peer_bytes, ranks, step)
    works = math.ceil(ranks * k / P2P_CHANNELS)
    rate = ring_cta_Bps * 32 * p2p_recv_warps(works) / LL_RING_THREADS
    return peer_bytes / k / rate
