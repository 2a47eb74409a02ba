"""The sustained clock: a training step's tensor-core rate against the kernel benchmarks'."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.base.errors import ConfigError
from tpsim.cluster.sustained import POWER_EXPONENT, kernel_clock, power_limited_clock, sustained
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import gemm_efficiency, gemm_time
from tpsim.training.predict import predict, predict_block

from tests.conftest import make_topology


def _with_clock(topo, clock):
    new = dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                               sustained_clock=clock))
    object.__setattr__(new, "path", topo.path)
    return new


def _uniform(topo):
    new = dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                               sustained_utilisation=None))
    object.__setattr__(new, "path", topo.path)
    return new


def test_the_peaks_scale_and_the_clock_is_spent():
    """Without sustained_utilisation: peak_step[dtype] = peak[dtype] x sustained_clock for every
    dtype; the result's own clock is 1 (applying it twice changes nothing), and a clock of 1
    returns the topology."""
    h100 = _uniform(load_topology("dgx-h100"))
    s = sustained(h100)
    assert s.device.sustained_clock == 1.0 and sustained(s) is s
    for dtype, peak in h100.device.peak_flops.items():
        assert s.device.peak(dtype) == pytest.approx(peak * h100.device.sustained_clock)
    assert sustained(load_topology("dgx-a100")) is load_topology("dgx-a100")


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5, 0.99), st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.5, 1.5),
       st.sampled_from(["fp8", "bf16", "fp16", "fp32"]))
def test_a_kernel_clock_from_its_utilisation(clock, u_ref, u, w, dtype):
    """On a training step's device a kernel at utilisation u runs at min(1, c_ref (u_ref /
    (u w))^(1/3)), w sustained_power_16bit for bf16 and fp16, 1 for the others: c_ref at u_ref
    in FP8, and w u c^3 the same (the power limit) for every kernel below boost; the YAML
    device itself runs at boost. (A sustained_utilisation needs a sustained_clock below 1: the
    device's own check; at 1 the YAML device is the step's and hypothesis found it failing.)"""
    dev = dataclasses.replace(load_topology("dgx-h100").device, sustained_clock=clock,
                              sustained_utilisation=u_ref, sustained_power_16bit=w)
    topo = dataclasses.replace(load_topology("dgx-h100"), device=dev)
    step = sustained(topo).device
    assert step.peak_flops == dev.peak_flops and kernel_clock(dev, u, dtype) == 1.0
    assert kernel_clock(step, u_ref, "fp8") == pytest.approx(clock)
    weight = w if dtype in ("bf16", "fp16") else 1.0
    c = kernel_clock(step, u, dtype)
    assert c == pytest.approx(min(1.0, clock * (u_ref / (u * weight)) ** (1 / 3)))
    assert c == 1.0 or weight * u * c ** 3 == pytest.approx(u_ref * clock ** 3)


def test_the_16bit_weight_is_the_h200_measurement():
    """The H100 presets' sustained_power_16bit is the closed form of the sustained H200 GEMMs
    it is derived from (bf16 708.5 TFLOP/s at 1465 MHz, FP8 1288.7 at 1374 MHz, the same draw;
    peaks 989 and 1979 TFLOP/s at 1830 MHz): an FP8 kernel draws 1.25x a bf16 one at the same
    utilisation and clock."""
    u16, u8 = 708.5 / (989 * 1465 / 1830), 1288.7 / (1979 * 1374 / 1830)
    for name in ("dgx-h100", "dgx-h100-ndr-cluster", "dgx-h200", "grand-teton-h100"):
        w = load_topology(name).device.sustained_power_16bit
        assert w == pytest.approx(u8 / u16 * (1374 / 1465) ** 3, abs=5e-3)


def test_a_training_gemm_runs_at_its_kernel_clock():
    """A compute-bound GEMM of a training layer (GPT-3 fc1 at TP 8: 2048 x 6144 x 12288) takes
    its benchmark time's compute part / its clock: kernel_launch + 2mnk / (peak x eff x
    min(1, c_ref (u_ref / (eff w))^(1/3))); the block harness (predict_block) keeps the
    benchmark's rate."""
    dev = load_topology("dgx-h100").device
    p = predict("gpt3", "dgx-h100", tp=8)
    fc1 = next(o for o in p.ops if o.name == "fwd.mlp_in")
    bench = gemm_time(2048, 6144, 12288, dev, "bf16")
    compute = bench - dev.kernel_launch_s
    eff = gemm_efficiency(2048, 6144, 12288, dev, dtype="bf16")
    w = dev.sustained_power_16bit
    clock = min(1.0, dev.sustained_clock * (dev.sustained_utilisation / (eff * w)) ** (1 / 3))
    assert clock > dev.sustained_clock      # bf16 at 85% draws less than FP8 at 75%: 0.68 < 0.748
    assert fc1.time_s == pytest.approx(dev.kernel_launch_s + compute / clock)
    block = predict_block("gpt3", "dgx-h100", 8, "mlp")
    assert next(o for o in block.ops if o.name == "fwd.mlp_in").time_s == pytest.approx(bench)


def test_mfu_stays_against_the_datasheet_peak():
    """MFU divides by the device's dense peak, not the sustained one."""
    p = predict("gpt3", "dgx-h100", tp=8)
    peak = load_topology("dgx-h100").device.peak("bf16")
    assert p.step.mfu == pytest.approx(p.step.tflops_per_gpu * 1e12 / peak)


@settings(max_examples=8, deadline=None)
@given(st.floats(0.5, 0.95), st.floats(0.01, 0.05))
def test_a_lower_clock_is_never_faster(clock, drop):
    """Monotone: a lower sustained clock never shortens the step."""
    h100 = load_topology("dgx-h100")
    hi = predict("gpt3-1.3b", _with_clock(h100, clock), tp=2, dp=2, global_batch=8)
    lo = predict("gpt3-1.3b", _with_clock(h100, clock - drop), tp=2, dp=2, global_batch=8)
    assert lo.step.time_s >= hi.step.time_s


def test_power_limited_clock_closed_form():
    """The same board gives its own clock back; at 8x the power above idle and 8x the SMs the
    rate grows 8x whatever k (n^(1-k) (P - P_idle)^k); the clock never passes 1."""
    b200 = load_topology("dgx-b200").device
    assert power_limited_clock(b200, 0.7, b200) == pytest.approx(0.7)
    idle = b200.idle_W
    big = dataclasses.replace(b200, tdp_W=idle + 8 * (b200.tdp_W - idle),
                              sm_count=8 * b200.sm_count,
                              peak_flops={"fp8": 8 * b200.peak_flops["fp8"]})
    assert power_limited_clock(b200, 0.1, big) == pytest.approx(0.1)
    assert power_limited_clock(b200, 0.9, dataclasses.replace(b200, tdp_W=5000)) == 1.0


@pytest.mark.parametrize("k", [1.0 / 3.0, POWER_EXPONENT, 1.0])
def test_power_limited_clock_exponent(k):
    """Twice the power above idle on the same SMs: the rate grows 2^k (2^(1/3) where the
    voltage follows the clock, 2 at the voltage floor); twice the SMs on the same power: 2^(1-k)."""
    b200 = load_topology("dgx-b200").device
    idle = b200.idle_W
    more_power = dataclasses.replace(b200, tdp_W=idle + 2 * (b200.tdp_W - idle))
    more_sms = dataclasses.replace(b200, sm_count=2 * b200.sm_count)
    assert power_limited_clock(b200, 0.2, more_power, k) == pytest.approx(0.2 * 2 ** k)
    assert power_limited_clock(b200, 0.2, more_sms, k) == pytest.approx(0.2 * 2 ** (1 - k))


@settings(max_examples=20, deadline=None)
@given(st.floats(0.3, 1.0), st.floats(200, 3000), st.floats(1.0, 500))
def test_more_power_never_lowers_the_clock(clock, tdp, more):
    b200 = load_topology("dgx-b200").device
    low = dataclasses.replace(b200, tdp_W=tdp)
    high = dataclasses.replace(b200, tdp_W=tdp + more)
    assert power_limited_clock(b200, clock, high) >= power_limited_clock(b200, clock, low)


@pytest.mark.parametrize("name,ref", [("dgx-b200-ndr-cluster", "dgx-b200"),
                                      ("gb200-nvl72", "dgx-b200"), ("gb300-nvl72", "dgx-b200"),
                                      ("grand-teton-h100", "dgx-h100")])
def test_derived_clocks_follow_their_fit(name, ref):
    """The shipped derived clocks (Blackwell from dgx-b200's fit, the 500 W H100 from
    dgx-h100's) are the power-limited clocks of their reference's fitted one (their YAML
    comments: derived, not fitted), to the 3 decimals shipped."""
    fitted = load_topology(ref).device
    dev = load_topology(name).device
    assert dev.sustained_clock == pytest.approx(
        power_limited_clock(fitted, fitted.sustained_clock, dev), abs=5e-4)


def test_a_utilisation_needs_a_clock_below_one():
    """sustained_utilisation names the kernels at sustained_clock: refused beside a clock of 1
    (a training step's device, at clock 1, is :func:`sustained`'s own rewrite)."""
    levels = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]
    with pytest.raises(ConfigError, match="sustained_utilisation"):
        make_topology(levels, {"sustained_utilisation": 0.7})
    assert make_topology(levels, {"sustained_utilisation": 0.7, "sustained_clock": 0.9})
