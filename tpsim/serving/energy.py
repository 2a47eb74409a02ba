"""The energy and the cost of a ``tpsim serve`` run (:mod:`tpsim.cluster.power`).

Each of the replica's GPUs (tp x pp) runs every engine step (with pp > 1 a round of the
pipeline's micro-batches: every stage is taken as busy through it, an upper bound where
fewer sequences than stages run). A step with a prefill chunk (mixed with
decodes or not) is priced at full activity: its GEMMs are compute-bound at thousands of tokens
a step; a decode-only step streams the weights and the KV cache and is priced at
:data:`~tpsim.cluster.power.BOUND_ACTIVITY`; the rest of the run's duration (waiting for
arrivals) at idle power. Energy and cost are per output token, as serving benchmarks quote
them (e.g. the ML.ENERGY leaderboard's J per response token).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cluster.power import gpu_hours_usd, job_energy_j


@dataclass(frozen=True)
class Energy:
    """The run's energy at the facility (:func:`tpsim.serving.energy.run_energy`): ``j`` over
    the duration for the TP group's GPUs, ``j_per_output_token`` = j / output tokens;
    ``prefill_busy_s`` and ``decode_busy_s``: the engine's steps with a prefill chunk (priced
    at full activity) and decode-only (memory-bound); the rest of the duration idle. The
    energies are None where the device gives no tdp_W; ``pue``: the topology's facility factor
    in them."""
    j: float | None
    j_per_output_token: float | None
    prefill_busy_s: float
    decode_busy_s: float
    pue: float = 1.0


@dataclass(frozen=True)
class Cost:
    """The GPUs' rent over the run at ``usd_per_gpu_hour``: ``usd`` = GPUs x duration / 3600 x
    price, ``usd_per_million_output_tokens`` = usd / output tokens x 1e6; None without a price."""
    usd: float | None
    usd_per_million_output_tokens: float | None
    usd_per_gpu_hour: float | None


def run_energy(topo, gpus: int, duration_s: float, prefill_busy_s: float, decode_busy_s: float,
               output_tokens: int, usd_per_gpu_hour: float | None) -> tuple[Energy, Cost]:
    """E = gpus x [P(1) prefill_busy_s + P(0.5) decode_busy_s + P_idle (duration_s - busy)]
    x PUE, J (:func:`tpsim.cluster.power.job_energy_j`); j_per_output_token = E / output
    tokens. cost = gpus x duration_s / 3600 x usd_per_gpu_hour, USD; per million output
    tokens: cost / output tokens x 1e6. None where the device gives no tdp_W (energy) or
    without a price (cost)."""
    joules = job_energy_j(topo, gpus, duration_s, prefill_busy_s, decode_busy_s)
    usd = gpu_hours_usd(gpus, duration_s, usd_per_gpu_hour)
    per_token = None if joules is None else joules / output_tokens
    per_million = None if usd is None else usd / output_tokens * 1e6
    return (Energy(joules, per_token, prefill_busy_s, decode_busy_s, topo.pue),
            Cost(usd, per_million, usd_per_gpu_hour))


__all__ = ["run_energy", "Energy", "Cost"]
