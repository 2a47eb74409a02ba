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
an SM's dynamic CMOS power is C V^2 f, so n SMs draw P - P_idle = c n f^(1/k) above idle at a
tensor rate r n f: at a power limit f = ((P - P_idle) / (c n))^k and the rate grows as
n^(1-k) (P - P_idle)^k. Where the voltage scales with the clock, 1/k = 3 (k = 1/3); at the
voltage floor, where a throttled board's clock has no voltage left to shed, 1/k = 1 (k = 1).
A board whose sustained rate is known at one limit then has, at another,

    rate = ref_clock x ref_peak x (n / ref_n)^(1-k) x ((P - P_idle) / (ref_P - ref_P_idle))^k
    sustained_clock = min(1, rate / peak)

with P the board's ``tdp_W``, P_idle its idle draw (:func:`tpsim.cluster.power.idle_W`), n its
``sm_count`` and ``peak`` its datasheet FP8 figure (NVIDIA quotes each board at its own limit's
boost clock: GB200 5 PF FP8 at 1,200 W against B200's 4.5 PF at 1,000 W). k is
:data:`POWER_EXPONENT`, 0.92: fitted (``python bench/power_exponent.py``) on the power trace
Zeus published (Chung et al., NSDI 2023: training epochs on a V100 at power limits 100-250 W,
time and measured draw; the rows whose draw is within 5% of the cap, 0.1 x TDP idle, which run
at 47-89% of the rate at 250 W): near the voltage floor, the range of a Blackwell board held
at ~70% of its boost clock. Measured on a V100,
not on these boards; the fit moves with the rows counted as capped (0.74 with the draw within
10% of the cap, 0.99 within 3%).
"""
from __future__ import annotations

import dataclasses

from ..base.memo import Memo
from .power import idle_W
from .topology import Device, Topology

_SUSTAINED = Memo("sustained topologies", 256)
POWER_EXPONENT = 0.92   # k, fitted on Zeus's V100 power trace (module docstring)


def sustained(topo: Topology) -> Topology:
    """``topo`` with its device's peaks at the sustained clock (module docstring), its
    ``sustained_clock`` then 1: the topology a training step's kernels are priced on.
    Memoised by value: the same object for the same topology."""
    if topo.device.sustained_clock == 1.0:
        return topo
    return _SUSTAINED.get((topo, topo.path), _at_sustained_clock, topo)


def power_limited_clock(ref: Device, ref_clock: float, device: Device,
                        exponent: float = POWER_EXPONENT) -> float:
    """``device``'s sustained clock from ``ref``'s ``ref_clock``, the same architecture:
    min(1, ref_clock x ref_peak / peak x (n / ref_n)^(1 - k) x ((P - P_idle) / (ref_P -
    ref_P_idle))^k), peaks FP8, n the SM counts, P the power limits, k ``exponent``
    (module docstring: :data:`POWER_EXPONENT`, measured on power-capped training)."""
    power = (device.tdp_W - idle_W(device)) / (ref.tdp_W - idle_W(ref))
    sms = device.sm_count / ref.sm_count
    rate = ref_clock * ref.peak_flops["fp8"] * sms ** (1.0 - exponent) * power ** exponent
    return min(1.0, rate / device.peak_flops["fp8"])


def _at_sustained_clock(topo: Topology) -> Topology:
    dev = topo.device
    peaks = {dtype: rate * dev.sustained_clock for dtype, rate in dev.peak_flops.items()}
    device = dataclasses.replace(dev, peak_flops=peaks, sustained_clock=1.0)
    new = dataclasses.replace(topo, device=device)
    object.__setattr__(new, "path", topo.path)
    return new
