"""Compute cost functions against numbers derived by hand (CONTRACTS.md formulas)."""
from __future__ import annotations

import pytest

from tpsim.compute import (attention_exec_flops, attention_time, elementwise_time, gemm_efficiency,
                           gemm_time)

from conftest import make_topology

LEVEL = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]


def device(**kw):
    base = {"gemm_max_efficiency": 0.5, "gemm_half_efficiency_dim": 100, "memory_efficiency": 0.5,
            "kernel_launch_us": 2}
    return make_topology(LEVEL, {**base, **kw}).device


def test_gemm_efficiency_by_hand():
    """eff = 0.5 * 100/200 * 300/400 * 900/1000 = 0.16875."""
    assert gemm_efficiency(100, 300, 900, device()) == pytest.approx(0.16875)


def test_gemm_time_compute_bound():
    """m = n = k = 900 on 100 TFLOP/s bf16: eff = 0.5 * 0.9^3 = 0.3645;
    2 * 900^3 / (100e12 * 0.3645) = 1.458e9 / 3.645e13 = 40 us; bytes 3 * 810000 * 2 = 4.86 MB at
    1000 GB/s * 0.5 = 9.72 us < 40 us; plus 2 us launch = 42 us."""
    assert gemm_time(900, 900, 900, device(), "bf16") == pytest.approx(42e-6)


def test_skinny_gemm_runs_far_below_peak():
    """m = 1, n = k = 900: eff = 0.5 * 1/101 * 0.81 = 0.00401; 1.62e6 FLOP / (100e12 * 0.00401)
    = 4.04 us, above the 3.2472 us of its (900 + 810000 + 900) * 2 bytes at 500 GB/s: + 2 us."""
    assert gemm_time(1, 900, 900, device(), "bf16") == pytest.approx(2e-6 + 4.04e-6)


def test_gemm_time_memory_bound_and_batched():
    """With a flat curve (eff 1): m = 1, n = k = 900 is 0.0162 us of FLOPs but
    (900 + 810000 + 900) * 2 = 1,623,600 bytes at 500 GB/s = 3.2472 us. Batched x4: one launch,
    4x the work: 2 + 12.9888 us."""
    d = device(gemm_max_efficiency=1.0, gemm_half_efficiency_dim=0)
    assert gemm_time(1, 900, 900, d, "bf16") == pytest.approx(2e-6 + 3.2472e-6)
    assert gemm_time(1, 900, 900, d, "bf16", batch=4) == pytest.approx(2e-6 + 12.9888e-6)


def test_elementwise_time():
    """1 MB at 1000 GB/s * 0.5: 2 us, plus 2 us launch."""
    assert elementwise_time(1e6, device()) == pytest.approx(4e-6)


def test_attention_exec_flops():
    """Causal: half; flash backward: 2.5x the forward's work = 1.25x the conventional 2x count."""
    assert attention_exec_flops(100.0, causal=True, backward=False) == 50.0
    assert attention_exec_flops(200.0, causal=True, backward=True) == 125.0
    assert attention_exec_flops(100.0, causal=False, backward=False) == 100.0


def test_attention_time_by_hand():
    """seq 900 x 900, head_dim 100: eff = 0.5 * 0.9 * 0.9 * 0.5 = 0.2025; 2.025e9 FLOP at
    100e12 * 0.2025 = 100 us (memory 1 MB = 2 us smaller), plus 2 us launch."""
    assert attention_time(2.025e9, 1e6, 900, 900, 100, device(), "bf16") == pytest.approx(102e-6)


@pytest.mark.parametrize("m", [1, 64, 1024])
def test_more_work_never_faster(m):
    d = device()
    assert gemm_time(m, 512, 512, d, "bf16") <= gemm_time(2 * m, 512, 512, d, "bf16")
