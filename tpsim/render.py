"""Text rendering of results for people. Human units (us, GB/s) appear only here."""
from __future__ import annotations

from .units import format_size


def collective_table(costs, topo) -> str:
    """A nccl-tests-style table. GB/s here is 1e9 bytes per second, as in nccl-tests."""
    c0 = costs[0]
    head = [f"# {c0.op} on {c0.ranks} ranks of {topo.name} ({topo.device.name})",
            "# size: bytes as nccl-tests counts them; algbw = size/time; busbw = algbw * bus factor;"
            " GB/s = 1e9 B/s",
            f"{'size':>10s} {'bytes':>12s} {'time_us':>12s} {'algbw_GBps':>11s} {'busbw_GBps':>11s}"
            f"  algorithm/protocol"]
    rows = [f"{format_size(c.nbytes):>10s} {c.nbytes:12d} {c.time_s * 1e6:12.2f} "
            f"{c.algbw_Bps / 1e9:11.2f} {c.busbw_Bps / 1e9:11.2f}  {c.algorithm}/{c.protocol}"
            for c in costs]
    return "\n".join(head + rows)
