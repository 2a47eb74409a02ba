"""The energy and the cost of one training step of the whole job (:mod:`tpsim.cluster.power`).

Per GPU, the step's split (:class:`~tpsim.sim.result.TimeSplit`, per-GPU means over the stages)
says how busy it is: compute_s at full activity (the layers' and the model's ends' kernels);
the exposed TP, PP and DP communication and the optimizer (memory-bound Adam, the gradient
norm) at :data:`~tpsim.cluster.power.BOUND_ACTIVITY`; host wait and the pipeline bubble idle.
"""
from __future__ import annotations

from ..cluster.power import gpu_hours_usd, job_energy_j


def bound_s(split) -> float:
    """The split's time waiting on links or memory: exposed TP, PP, DP and the optimizer, s."""
    return (split.tp_comm_exposed_s + split.pp_comm_exposed_s + split.dp_comm_exposed_s
            + split.optimizer_s)


def step_energy_j(topo, gpus: int, step) -> float | None:
    """E = gpus x [P(1) compute_s + P(0.5) bound_s + P_idle (time_s - compute_s - bound_s)]
    x PUE, J (:func:`tpsim.cluster.power.job_energy_j`); None without the device's tdp_W."""
    return job_energy_j(topo, gpus, step.time_s, step.compute_s, bound_s(step))


def step_cost_usd(gpus: int, step, usd_per_gpu_hour: float | None) -> float | None:
    """cost = gpus x time_s / 3600 x usd_per_gpu_hour, USD; None without a price."""
    return gpu_hours_usd(gpus, step.time_s, usd_per_gpu_hour)


__all__ = ["step_energy_j", "step_cost_usd", "bound_s"]
