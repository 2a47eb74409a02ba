"""An NCCL wire protocol's start-up latency and share of the line rate: a mapping under a
topology's ``device.collective_protocols`` (:class:`tpsim.cluster.topology.Device`)."""
from __future__ import annotations

from ..base.record import record
from ..base.schema import spec
from ..base.units import US


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


SIMPLE = Protocol()
