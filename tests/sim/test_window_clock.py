"""clock_window: step: every tensor kernel of a layer at the clock of the layer's mean draw."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cluster.power import COMPUTE_ACTIVITY
from tpsim.cluster.sustained import at_clock, kernel_clock, kernel_draw, sustained, with_device
from tpsim.cluster.topology import Device, load_topology
from tpsim.layer.ops import Attention, Gemm, MemoryBound
from tpsim.sim.price import (MIN_CLOCK, Pricing, executed_flops, kernel_time,
                             window_clock, window_pricing)
from tpsim.training.predict import predict

GEMM = Gemm(8192, 8192, 8192, "fp8")


def _device(**fields) -> Device:
    """The H100 preset's device with ``fields`` replaced, launch-free (a kernel's utilisation
    is then its efficiency at every clock)."""
    return dataclasses.replace(load_topology("dgx-h100").device, kernel_launch_s=0.0, **fields)


def _step(dev: Device) -> Device:
    return sustained(with_device(load_topology("dgx-h100"), dev)).device


def _mean_draw(ops, dev: Device, clock: float) -> float:
    """sum t d / sum t over ``ops`` at ``clock``, stated here from the module docstring."""
    at = at_clock(dev, clock)
    busy = drawn = 0.0
    for op in ops:
        t = kernel_time(op, at)
        u = executed_flops(op, at) / (t * at.peak(op.dtype)) if type(op) in (Gemm, Attention) \
            else None
        busy += t
        drawn += t * (COMPUTE_ACTIVITY if u is None else kernel_draw(dev, u, op.dtype, clock))
    return drawn / busy


@pytest.mark.parametrize("clock", [0.7, 0.855, 0.95])
def test_fp8_gemms_at_u_ref_run_at_c_ref_in_both_modes(clock):
    """A step of FP8 GEMMs at u_ref alone: each runs at c_ref per kernel (kernel_clock), and
    their mean draw is the limit at c_ref (window_clock): the two modes agree where the step
    has one kind of kernel."""
    u = executed_flops(GEMM, _device()) / (kernel_time(GEMM, _device()) * _device().peak("fp8"))
    for window in ("kernel", "step"):
        step = _step(_device(sustained_clock=clock, sustained_utilisation=u, clock_window=window))
        assert kernel_clock(step, u, "fp8") == pytest.approx(clock)
        assert window_clock([GEMM] * 3, step) == pytest.approx(clock, rel=1e-5)


def _mixed_ops(dtype: str):
    return [Gemm(8192, 8192, 8192, dtype), Gemm(4096, 1024, 512, dtype),
            Attention(1, 32, 32, 4096, 4096, 128, "bf16"), MemoryBound(4e8)]


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_the_fixed_point_draws_the_limit(dtype):
    """The solved clock c is a fixed point: the kernels' times at c weight a mean draw of
    exactly the limit (or c = 1 with the mean below it at boost)."""
    ops = _mixed_ops(dtype)
    step = _step(_device(clock_window="step"))
    c = window_clock(ops, step)
    assert MIN_CLOCK < c < 1.0
    assert _mean_draw(ops, step, c) == pytest.approx(1.0, rel=1e-5)
    assert _mean_draw(ops, step, c * 0.99) < 1.0 < _mean_draw(ops, step, min(1.0, c * 1.01))


def test_a_heavier_16bit_draw_lowers_the_clock():
    """The window clock of a bf16 layer falls as sustained_power_16bit (w) grows, and is 1
    where w is small enough that the mean at boost is under the limit."""
    ops = _mixed_ops("bf16")
    clocks = [window_clock(ops, _step(_device(clock_window="step", sustained_power_16bit=w)))
              for w in (0.3, 0.6, 0.8, 1.0, 1.3)]
    assert clocks[0] == 1.0
    assert all(a > b for a, b in zip(clocks[1:], clocks[2:]))


def test_kernel_mode_prices_as_before():
    """clock_window: kernel (the default) leaves the pricing as it is; step puts the layer on
    one clock below 1 for a bf16 layer of the H100 preset, every tensor peak at it."""
    topo = load_topology("dgx-h100")
    pricing = Pricing(sustained(topo), None)
    assert topo.device.clock_window == "kernel" and window_pricing(None, None, pricing) is pricing
    step = with_device(topo, dataclasses.replace(topo.device, clock_window="step"))
    a = predict("llama2-7b", topo, tp=2, seq_len=4096, dtype="bf16")
    b = predict("llama2-7b", step, tp=2, seq_len=4096, dtype="bf16")
    assert a.step.time_s != b.step.time_s


def test_an_unknown_window_is_refused():
    with pytest.raises(ConfigError, match="clock_window"):
        _device(clock_window="layer").validate("dgx-h100.yaml", "device")
