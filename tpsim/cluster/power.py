"""A device's electrical power as a function of how busy it is, and the energy of a run.

The shape is the linear server power model of Fan, Weber and Barroso ("Power provisioning for a
warehouse-sized computer", ISCA 2007), applied per GPU:

    P(a) = P_idle + (P_tdp - P_idle) * a,   0 <= a <= 1

with ``P_tdp`` the board power limit (:attr:`Device.tdp_W <tpsim.cluster.topology.Device>`,
NVIDIA's datasheets) and ``P_idle`` the board's draw with nothing running
(:attr:`Device.idle_W`). The activity ``a`` of a stretch of time is stated, not measured:

* ``COMPUTE_ACTIVITY`` = 1 while the compute stream runs (GEMMs, attention, the layers'
  elementwise kernels): large-model training holds GPUs at or near their power limit (Patel
  et al., "Characterizing Power Management Opportunities for LLMs in the Cloud", ASPLOS 2024:
  training iterations of GPT-class models on DGX A100/H100 draw close to TDP, with dips during
  communication and checkpointing);
* ``BOUND_ACTIVITY`` = 0.5 while the GPU waits on memory or links (exposed collectives, p2p,
  the optimizer's memory-bound Adam, a decode step that streams the weights): the SMs mostly
  stall, HBM and NVLink stay busy; 0.5 is an assumption, not a fit;
* 0 (idle power) while the GPU waits for others: the pipeline bubble, the host.

``idle_W`` is the draw of a GPU with nothing on it (~70 W for an H100 SXM5). A GPU that a
process holds at full clocks while it waits reads more (140-145 W on H100 80GB at 0%
utilisation with 72 GB allocated, P0: wilicc/gpu-burn issue #114), so bubbles and an engine
waiting for arrivals are priced low: the energy of a step with a large bubble is a lower bound.

Energy of one GPU over ``time_s`` with ``busy_s`` at activity 1 and ``bound_s`` at
BOUND_ACTIVITY: E = P(1) busy_s + P(0.5) bound_s + P_idle (time_s - busy_s - bound_s), joules.
A job of ``gpus`` such GPUs draws gpus * E at the wall socket times the data centre's PUE
(:attr:`Topology.pue`: facility energy / IT energy): cooling and power delivery.
"""
from __future__ import annotations

COMPUTE_ACTIVITY = 1.0
BOUND_ACTIVITY = 0.5
IDLE_SHARE = 0.1    # P_idle / P_tdp where a device gives no idle_W (H100 SXM: ~70 W of 700 W)
SECONDS_PER_HOUR = 3600.0


def idle_W(device) -> float:
    """The device's idle board power, W: its ``idle_W``, else IDLE_SHARE x tdp_W."""
    return device.idle_W if device.idle_W is not None else IDLE_SHARE * device.tdp_W


def power_W(device, activity: float) -> float:
    """P(a) = P_idle + (P_tdp - P_idle) a, W (module docstring)."""
    idle = idle_W(device)
    return idle + (device.tdp_W - idle) * activity


def gpu_energy_j(device, time_s: float, busy_s: float, bound_s: float) -> float:
    """One GPU's energy over ``time_s``, J: ``busy_s`` computing (activity 1), ``bound_s``
    waiting on memory or links (BOUND_ACTIVITY), the rest idle."""
    idle_s = max(time_s - busy_s - bound_s, 0.0)
    return (power_W(device, COMPUTE_ACTIVITY) * busy_s + power_W(device, BOUND_ACTIVITY) * bound_s
            + idle_W(device) * idle_s)


def job_energy_j(topo, gpus: int, time_s: float, busy_s: float, bound_s: float) -> float | None:
    """Energy of ``gpus`` alike GPUs at the facility, J: gpus x :func:`gpu_energy_j` x PUE;
    None where the topology's device gives no tdp_W."""
    if topo.device.tdp_W is None:
        return None
    return gpus * gpu_energy_j(topo.device, time_s, busy_s, bound_s) * topo.pue


def gpu_hours_usd(gpus: int, time_s: float, usd_per_gpu_hour: float | None) -> float | None:
    """What ``gpus`` GPUs cost over ``time_s`` rented at ``usd_per_gpu_hour``, USD:
    gpus x time_s / 3600 x price; None without a price."""
    if usd_per_gpu_hour is None:
        return None
    return gpus * time_s / SECONDS_PER_HOUR * usd_per_gpu_hour + 0.0    # a -0 price costs 0


__all__ = ["power_W", "idle_W", "gpu_energy_j", "job_energy_j", "gpu_hours_usd",
           "COMPUTE_ACTIVITY", "BOUND_ACTIVITY"]
