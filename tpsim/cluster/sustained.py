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
With ``sustained_utilisation`` (u_ref) the clock is a kernel's own. The board's dynamic power
is its switching activity times C V^2 f; the activity of the tensor cores grows with their
utilisation u (achieved / peak at the boost clock, as tpsim prices the kernel: its GEMM or
attention efficiency), the linear power-in-activity model of :mod:`tpsim.cluster.power` (Fan
et al., ISCA 2007), and V falls with f, so a kernel draws P_idle + (P_full - P_idle) w u (f /
f_boost)^3, w its operands' weight (below). Held at the power limit, w u f^3 is the same for
every kernel, the clock the FP8 kernels at u_ref run at being ``sustained_clock`` (c_ref):

    clock(u) = min(1, c_ref (u_ref / (u w))^(1/3))    (:func:`kernel_clock`, w below; 1 for FP8)

The activity of a tensor kernel depends on its operands' type as well: sustained GEMMs on an
H200 (the H100's GH100 die at the same 700 W; stas00/ml-engineering's mamf-finder, its
sustained figures, MSMF) hold 1465 MHz in bf16 (708.5 TFLOP/s, ~693 W) and 1374 MHz in FP8
(1288.7 TFLOP/s, ~693 W), at 0.895 and 0.867 of their peaks at those clocks: at the same u and
f a bf16 kernel draws w = (0.867 / 0.895) (1374 / 1465)^3 = 0.80 of an FP8 one's
(``sustained_power_16bit``; on a B200 the two hold 1339 and 1331 MHz: w ~1). With u_ref the
utilisation of FP8 kernels, a bf16 or fp16 kernel counts as u w. The same law puts kernels
with less tensor work at a higher clock, as measured: FlashAttention 4 in bf16 on a B200 at
64% of the peak holds ~1580 MHz at its 1,000 W limit (flashinfer PR #2899), where its bf16
GEMMs at 95% hold 1339, (0.95 / 0.64)^(1/3) x 1339 = 1524 by the formula.
A FlashAttention kernel in Triton at 35-45% of the tensor peak then runs at the boost clock
(llm-foundry's MPT runs on 8 H100, 8k-64k tokens: ``python bench/whole_job_bf16_published.py``
prints the speed-up of attention they would need, 1.14-1.21 = ~1 / 0.865 at one clock for
every kernel, 0.99-1.04 at these), a large FP8 GEMM at its best efficiency at c_ref. The exponent 1/3 holds where
the voltage still follows the clock (H100's clock above ~80% of boost), not at the voltage
floor of :data:`POWER_EXPONENT`.

A step's kernels alternate within the power controller's averaging window (B200: ~5 ms of
back-to-back kernels before the clock falls, flashinfer PR #2899), so the per-kernel clock is
an assumption (``clock_window: kernel``). With ``clock_window: step`` the controller follows
the window's mean draw and every tensor kernel runs at the one clock c of the mean: over a
layer's compute-stream kernels (forward, backward and recomputation, the unit that repeats
through the step), each kernel i's draw above idle, a share of the limit's, is
d_i = w u_i c^3 / u_1 for a tensor kernel (:func:`kernel_draw`; u_i its achieved / peak at
the clock it runs at, launch and memory time included) and ``COMPUTE_ACTIVITY`` (1) for a
memory-bound one (the layer's elementwise kernels, which :mod:`tpsim.cluster.power` counts at
the compute stream's activity; at its ``BOUND_ACTIVITY``, 0.5, the mean falls and c rises:
docs/training-step.md, Known gaps), and c solves

    sum_i t_i(c) d_i(c) / sum_i t_i(c) = 1,   c = 1 where the mean at boost is below 1

t_i(c) the kernel's time at c: a fixed point, solved by :func:`tpsim.sim.price.window_pricing`
(the mean grows with c: bisection). A step of FP8 kernels at u_ref alone runs at c_ref in both
modes. The priced device is :func:`at_clock`'s: every tensor peak at c (the CUDA-core work
inside an attention kernel, attention dropout's, at the boost clock). Measured against the
per-kernel clock, c_ref refitted on the same Llama 3 70B FP8 rows (``python
bench/whole_job_published.py --fit --clock-window step``: 0.855, 0.860 per kernel), the window mean reads
every bf16 H100 whole-job row faster still (Megatron-LM CI 7B -11.1/-14.9% -> -12.6/-15.9% in
time, llm-foundry's mean +2.3% -> +6.0%), so the presets keep ``kernel``
(docs/training-step.md, Known gaps).
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
from ..base.schema import deferred
from .power import idle_W
from .topology import Device, Topology

_SUSTAINED = Memo("sustained topologies", 256)
CLOCK_EXPONENT = 1.0 / 3.0   # clock ~ (power / activity)^(1/3): V follows f (module docstring)
SIXTEEN_BIT = ("bf16", "fp16")   # the tensor kernels sustained_power_16bit weighs
POWER_EXPONENT = 0.92   # k, fitted on Zeus's V100 power trace (module docstring)


def sustained(topo: Topology) -> Topology:
    """``topo`` with its device's peaks at the sustained clock (module docstring), its
    ``sustained_clock`` then 1: the topology a training step's kernels are priced on. With a
    ``sustained_utilisation`` u_ref the peaks stay and u_ref becomes u_ref c_ref^3, the
    utilisation up to which a kernel keeps the boost clock (:func:`kernel_clock`: the same
    clocks). Memoised by value: the same object for the same topology."""
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


def kernel_clock(device: Device, utilisation: float, dtype: str) -> float:
    """The clock, a share of boost, that a training kernel at ``utilisation`` (its efficiency)
    in ``dtype`` runs at on a :func:`sustained` device: min(1, (u_1 / (u w))^(1/3)), u_1 its
    ``sustained_utilisation``, w its ``sustained_power_16bit`` for a bf16 or fp16 kernel, 1
    for any other (module docstring); 1 on any other device."""
    if device.sustained_clock != 1.0 or device.sustained_utilisation is None:
        return 1.0
    weight = _weight(device, dtype)
    return min(1.0, (device.sustained_utilisation / (utilisation * weight)) ** CLOCK_EXPONENT)


def kernel_draw(device: Device, utilisation: float, dtype: str, clock: float) -> float:
    """A tensor kernel's draw above idle on a :func:`sustained` device, a share of the power
    limit's: w u clock^3 / u_1, u its achieved / peak at ``clock``, u_1 the device's
    ``sustained_utilisation``, w as :func:`kernel_clock` (module docstring)."""
    return _weight(device, dtype) * utilisation * clock ** 3 / device.sustained_utilisation


def at_clock(device: Device, clock: float) -> Device:
    """``device`` with every tensor peak at ``clock`` (a share of boost) and no sustained
    clock left: each kernel at that one clock."""
    peaks = {dtype: rate * clock for dtype, rate in device.peak_flops.items()}
    return dataclasses.replace(device, peak_flops=peaks, sustained_clock=1.0,
                               sustained_utilisation=None)


def with_device(topo: Topology, device: Device) -> Topology:
    """``topo`` on ``device``, its file path kept (:meth:`Topology.replaced`)."""
    return topo.replaced(device=device)


def _weight(device: Device, dtype: str) -> float:
    return device.sustained_power_16bit if dtype in SIXTEEN_BIT else 1.0


def _at_sustained_clock(topo: Topology) -> Topology:
    dev = topo.device
    clock, u_ref = dev.sustained_clock, dev.sustained_utilisation
    if u_ref is None:
        return with_device(topo, at_clock(dev, clock))
    with deferred():     # a state no file states (sustained_utilisation at clock 1), from a checked one
        dev = dataclasses.replace(dev, sustained_clock=1.0,
                                  sustained_utilisation=u_ref * clock ** (1 / CLOCK_EXPONENT))
    return with_device(topo, dev)
