"""The tensor-core rate a training step sustains, against the one a kernel benchmark measures.

The GEMM and attention efficiencies of a device (:mod:`tpsim.cost.compute`) are fitted on short
kernel benchmarks, which run at the boost clock before the board reaches its power limit. A
training step keeps the tensor cores busy for seconds: the board sits at its power limit
(``tdp_W``) and the driver lowers the SM clock until the draw fits under it (``nvidia-smi -q``
reports the SW Power Cap as the clock's throttle reason; NVIDIA's datasheet peaks are at the
boost clock). Dynamic power grows with the clock and the square of the voltage, which falls
with it, so the clock falls until f V(f)^2 fits; a compute-bound kernel's rate falls with the
clock. tpsim states that sustained clock as a share of the benchmark's:

    peak_step[dtype] = peak[dtype] * sustained_clock

for every GEMM and attention kernel of a training step (memory-bound kernels are priced on the
memory bandwidth, which the HBM clock keeps). ``sustained_clock`` is a device parameter,
fitted on whole training steps (its YAML comment names them), 1 where no step was fitted.
Serving and the single-layer harness (``predict_block``) keep the benchmark's rate: their
kernels run in bursts shorter than the board's power-limit controller reacts to.

Another board of the same architecture at another power limit (:func:`power_limited_clock`):
an SM's dynamic CMOS power is C V^2 f and across the DVFS range the voltage scales with the
clock, so n SMs draw P - P_idle = c n f^3 above idle at a tensor rate r n f: at a power limit
f = ((P - P_idle) / (c n))^(1/3) and the rate grows as n^(2/3) (P - P_idle)^(1/3). A board
whose sustained rate is known at one limit then has, at another,

    rate = ref_clock x ref_peak x (n / ref_n)^(2/3) x ((P - P_idle) / (ref_P - ref_P_idle))^(1/3)
    sustained_clock = min(1, rate / peak)

with P the board's ``tdp_W``, P_idle its idle draw (:func:`tpsim.cluster.power.idle_W`), n its
``sm_count`` and ``peak`` its datasheet FP8 figure (NVIDIA quotes each board at its own limit's
boost clock: GB200 5 PF FP8 at 1,200 W against B200's 4.5 PF at 1,000 W). Below the voltage
floor the draw falls only as f, so the cube root is the smallest clock change a power change
can bring: an assumption, stated, not measured on these boards.
"""
from __future__ import annotations

import dataclasses

from ..base.memo import Memo
from .power import idle_W
from .topology import Device, Topology

_SUSTAINED = Memo("sustained topologies", 256)


def sustained(topo: Topology) -> Topology:
    """``topo`` with its device's peaks at the sustained clock (module docstring), its
    ``sustained_clock`` then 1: the topology a training step's kernels are priced on.
    Memoised by value: the same object for the same topology."""
    if topo.device.sustained_clock == 1.0:
        return topo
    return _SUSTAINED.get((topo, topo.path), _at_sustained_clock, topo)


def power_limited_clock(ref: Device, ref_clock: float, device: Device) -> float:
    """``device``'s sustained clock from ``ref``'s ``ref_clock``, the same architecture:
    min(1, ref_clock x ref_peak / peak x (n / ref_n)^(2/3) x ((P - P_idle) / (ref_P -
    ref_P_idle))^(1/3)), peaks FP8, n the SM counts, P the power limits (module docstring:
    an SM's dynamic power C V^2 f with V proportional to f)."""
    power = (device.tdp_W - idle_W(device)) / (ref.tdp_W - idle_W(ref))
    sms = device.sm_count / ref.sm_count
    rate = ref_clock * ref.peak_flops["fp8"] * sms ** (2.0 / 3.0) * power ** (1.0 / 3.0)
    return min(1.0, rate / device.peak_flops["fp8"])


def _at_sustained_clock(topo: Topology) -> Topology:
    dev = topo.device
    peaks = {dtype: rate * dev.sustained_clock for dtype, rate in dev.peak_flops.items()}
    device = dataclasses.replace(dev, peak_flops=peaks, sustained_clock=1.0)
    new = dataclasses.replace(topo, device=device)
    object.__setattr__(new, "path", topo.path)
    return new
