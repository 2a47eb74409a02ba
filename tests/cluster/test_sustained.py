"""The sustained clock: a training step's tensor-core rate against the kernel benchmarks'."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.cluster.sustained import POWER_EXPONENT, power_limited_clock, sustained
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import gemm_time
from tpsim.training.predict import predict, predict_block


def _with_clock(topo, clock):
    new = dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                               sustained_clock=clock))
    object.__setattr__(new, "path", topo.path)
    return new


def test_the_peaks_scale_and_the_clock_is_spent():
    """peak_step[dtype] = peak[dtype] x sustained_clock for every dtype; the result's own
    clock is 1 (applying it twice changes nothing), and a clock of 1 returns the topology."""
    h100 = load_topology("dgx-h100")
    s = sustained(h100)
    assert s.device.sustained_clock == 1.0 and sustained(s) is s
    for dtype, peak in h100.device.peak_flops.items():
        assert s.device.peak(dtype) == pytest.approx(peak * h100.device.sustained_clock)
    assert sustained(load_topology("dgx-a100")) is load_topology("dgx-a100")


def test_a_training_gemm_runs_at_the_sustained_rate():
    """A compute-bound GEMM of a training layer (GPT-3 fc1 at TP 8: 2048 x 6144 x 12288) takes
    its benchmark time's compute part / sustained_clock: kernel_launch + 2mnk / (peak x clock x
    eff); the block harness (predict_block) keeps the benchmark's rate."""
    h100 = load_topology("dgx-h100")
    dev = h100.device
    p = predict("gpt3", "dgx-h100", tp=8)
    fc1 = next(o for o in p.ops if o.name == "fwd.mlp_in")
    bench = gemm_time(2048, 6144, 12288, dev, "bf16")
    compute = bench - dev.kernel_launch_s
    assert fc1.time_s == pytest.approx(dev.kernel_launch_s + compute / dev.sustained_clock)
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
