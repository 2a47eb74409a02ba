"""What a priced collective is, and how many bytes it moves: the vocabulary of
:mod:`tpsim.cost.collectives`.

``nbytes`` follows nccl-tests: the all-reduce buffer, the *full* (gathered) all-gather output,
the *full* reduce-scatter input, the broadcast buffer, an all-to-all rank's whole send buffer
(its own slice included). ``algbw = S / t`` and ``busbw = algbw x
bus_factor`` exactly as nccl-tests defines them.
"""
from __future__ import annotations

from ..base.record import record


@record
class CollectiveCost:
    """One priced collective: ``time_s = launch_s + latency_s + transfer_s + pipeline_s + copy_s``.

    ``formula`` is the function that priced it (``tpsim.cost.collectives.ring_time``, ...), ``group``
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
    pipeline_s: float = 0.0

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
                "transfer_us": self.transfer_s * 1e6, "pipeline_us": self.pipeline_s * 1e6,
                "copy_us": self.copy_s * 1e6, "formula": self.formula, "group": self.group}


def bus_factor(op: str, ranks: int) -> float:
    """Bytes each rank must move per byte of ``nbytes`` (nccl-tests' busbw factor).

    all-reduce 2(n-1)/n; reduce-scatter, all-gather and all-to-all (n-1)/n (nccl-tests
    alltoall: the n-1 slices that leave the rank); broadcast and send-recv 1.
    """
    n = ranks
    return {"all-reduce": 2 * (n - 1) / n, "reduce-scatter": (n - 1) / n,
            "all-gather": (n - 1) / n, "all-to-all": (n - 1) / n, "broadcast": 1.0,
            "send-recv": 1.0}[op]


def ring_passes(op: str) -> int:
    """Passes around the ring: all-reduce is a reduce-scatter then an all-gather (2), the others 1."""
    return 2 if op == "all-reduce" else 1


def ring_steps(op: str, ranks: int) -> int:
    """Pipelined steps of a ring on ``ranks`` ranks: ring_passes(op) * (n - 1)."""
    return ring_passes(op) * (ranks - 1)


def copy_bytes(op: str, nbytes: float, ranks: int) -> float:
    """Bytes of its own input and output one rank's kernel streams through device memory.

    all-reduce: input + output = 2S; reduce-scatter: S in + S/n out; all-gather: S/n in + S
    out; broadcast, send-recv and all-to-all: S (each byte read once from the send buffer or
    written once to the receive buffer by this rank's kernel).
    """
    return {"all-reduce": 2 * nbytes, "reduce-scatter": nbytes * (1 + 1 / ranks),
            "all-gather": nbytes * (1 + 1 / ranks), "broadcast": float(nbytes),
            "send-recv": float(nbytes), "all-to-all": float(nbytes)}[op]
