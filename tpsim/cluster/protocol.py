"""An NCCL wire protocol's start-up latency and share of the line rate: a mapping under a
topology's ``device.collective_protocols`` (:class:`tpsim.cluster.topology.Device`)."""
from __future__ import annotations

from ..base.record import record
from ..base.schema import check_built, spec
from ..base.units import GB, US

PROTOCOLS = ("simple", "ll", "ll128")


@record
class Protocol:
    """One NCCL wire protocol: its own start-up latency and share of the line rate. NCCL
    prices Simple, LL and LL128 separately and runs the fastest (src/graph/tuning.cc): LL sends
    8-byte stores that carry 4 bytes of data and a flag (half the bandwidth, no per-step sync),
    LL128 128-byte lines with 120 bytes of data. Each protocol's per-hop latency is a property
    of the link it crosses: ``levels[i].hop_latency_us``."""
    launch_s: float = spec("launch_us", scale=US, ge=0, default=0.0,
                           doc="start-up latency of this protocol, us (NCCL tuning.cc baseLat), "
                               "on top of collective_launch_us")
    bandwidth_fraction: float = spec(gt=0, le=1, default=1.0,
                                     doc="fraction of the link bandwidth the protocol delivers")
    cta_Bps: float | None = spec("cta_GBps", scale=GB, gt=0, default=None, doc=(
        "data rate of one CTA of NCCL's ring kernel on this protocol, GB/s (LL: tuning.cc "
        "llMaxBws[generation][one node] / the ring's CTAs); prices NCCL's p2p LL kernel "
        "(tpsim.cost.p2p_pipeline.p2p_ll_s); null: the wire bound alone"))
    p2p_peer_bytes: int = spec(gt=0, default=16384, doc=(
        "LL only: the most bytes to one peer NCCL's p2p runs on LL inside a node (NCCL 2.18-2.21, "
        "2.29-2.30: 16384; 2.22-2.28: 32 x 16384; tpsim.cluster.nccl)"))
    p2p_step_bytes: int = spec(gt=0, default=524288, doc=(
        "LL only: the step NCCL's p2p splits a peer's LL bytes over channels by (parts of at "
        "least 1/8 of it): Simple's 512 KiB chunk, LL's own 64 KiB step in NCCL 2.22-2.28"))

    __post_init__ = check_built   # built in code: checked as the loader checks a file


SIMPLE = Protocol()
