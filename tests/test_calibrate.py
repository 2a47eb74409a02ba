"""tpsim.calibrate recovers known parameters from timings made by tpsim's own cost functions
plus noise, and writes a topology that tpsim loads and prices back to the same times."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import make_topology

from tpsim.calibrate import (Calibration, fit_collectives, fit_compute, nonnegative_lstsq,
                             write_calibrated_topology)
from tpsim.collectives import collective_time
from tpsim.compute import elementwise_time, gemm_time
from tpsim.topology import load_topology

OPS = ("all-reduce", "all-gather", "reduce-scatter")
SIZES = [2 ** i for i in range(12, 27, 2)]


def _collective_topo(ranks=4):
    return make_topology([{"name": "host", "size": ranks, "bandwidth_GBps": 12.5,
                           "latency_us": 7.0}], device={"collective_launch_us": 40.0})


def _noisy(t, rng, rel=0.02):
    return t * (1 + rel * rng.standard_normal())


@pytest.mark.parametrize("ranks", [2, 4])
def test_collective_fit_recovers_launch_latency_bandwidth(ranks):
    """Launch 40 us, 7 us per ring step, 12.5 GB/s; timings from collective_time with 2% noise."""
    topo, rng = _collective_topo(ranks), np.random.default_rng(0)
    samples = [(op, s, _noisy(collective_time(op, s, ranks, topo).time_s, rng))
               for op in OPS for s in SIZES for _ in range(3)]
    fit = fit_collectives(samples, ranks)
    assert fit.launch_s == pytest.approx(40e-6, rel=0.15)
    assert fit.latency_s == pytest.approx(7e-6, rel=0.25)
    assert fit.bandwidth_Bps == pytest.approx(12.5e9, rel=0.05)
    assert fit.rms_rel_err < 0.05


def test_collective_fit_exact_without_noise():
    """Noise-free: the two step counts (2(N-1) vs N-1) separate launch from latency exactly."""
    topo = _collective_topo(2)
    fit = fit_collectives([(op, s, collective_time(op, s, 2, topo).time_s)
                           for op in OPS for s in SIZES], 2)
    assert (fit.launch_s, fit.latency_s) == pytest.approx((40e-6, 7e-6), rel=1e-6)
    assert fit.rms_rel_err < 1e-9


def _device_topo():
    return make_topology([{"name": "host", "size": 2, "bandwidth_GBps": 10, "latency_us": 1}],
                         device={"peak_tflops": {"fp32": 0.1}, "gemm_max_efficiency": 0.9,
                                 "gemm_half_efficiency_dim": 24.0, "kernel_launch_us": 15.0,
                                 "memory_bandwidth_GBps": 20.0, "memory_efficiency": 0.75})


def test_compute_fit_recovers_throughput_half_dim_bandwidth_launch():
    """Peak 0.1 TFLOP/s x 0.9, h = 24, 15 us launch, 20 GB/s x 0.75, 2% noise."""
    dev, rng = _device_topo().device, np.random.default_rng(1)
    dims = (32, 96, 256, 640, 1024)
    gemms = [(m, n, k, 1, _noisy(gemm_time(m, n, k, dev, "fp32"), rng))
             for m in dims for n in dims for k in dims]
    gemms += [(256, 256, 64, 8, _noisy(gemm_time(256, 256, 64, dev, "fp32", batch=8), rng))]
    elem = [(b, _noisy(elementwise_time(b, dev), rng)) for b in np.geomspace(1e5, 1e8, 12)]
    fit = fit_compute(gemms, elem)
    assert fit.flops == pytest.approx(0.09e12, rel=0.03)
    assert fit.half_dim == pytest.approx(24.0, rel=0.15)
    assert fit.memory_Bps == pytest.approx(15e9, rel=0.03)
    assert fit.launch_s == pytest.approx(15e-6, rel=0.3)


def test_nonnegative_lstsq_drops_a_negative_coefficient():
    """y = 2x exactly, with a free intercept that least squares would make negative."""
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    b = np.array([1.9, 4.0, 6.1]) - 0.2
    x = nonnegative_lstsq(a, b)
    assert x[0] == 0.0 and x[1] > 0


def test_calibrated_yaml_loads_and_prices_back(tmp_path):
    """The written topology gives tpsim's collective_time and gemm_time back the fitted model."""
    topo, dev = _collective_topo(2), _device_topo().device
    coll = fit_collectives([(op, s, collective_time(op, s, 2, topo).time_s)
                            for op in OPS for s in SIZES], 2)
    dims = (64, 256, 1024)
    comp = fit_compute([(m, n, k, 1, gemm_time(m, n, k, dev, "fp32"))
                        for m in dims for n in dims for k in dims],
                       [(b, elementwise_time(b, dev)) for b in (1e5, 1e6, 1e7)])
    path = write_calibrated_topology(tmp_path / "calibrated.yaml",
                                     Calibration(coll, comp, "fp32", 'CPU "test"', 24.0))
    loaded = load_topology(path)
    assert loaded.max_ranks == 2 and loaded.levels[0].name == "host"
    assert path.read_text().startswith("# Fitted by tpsim validate/run.py")
    for op in OPS:
        assert collective_time(op, 1 << 20, 2, loaded).time_s == \
            pytest.approx(collective_time(op, 1 << 20, 2, topo).time_s, rel=1e-4)
    assert gemm_time(512, 512, 512, loaded.device, "fp32") == \
        pytest.approx(gemm_time(512, 512, 512, dev, "fp32"), rel=0.02)
    assert elementwise_time(1e6, loaded.device) == pytest.approx(elementwise_time(1e6, dev),
                                                                 rel=0.02)


def test_extreme_fits_are_written_as_yaml_numbers(tmp_path):
    """A fit on a loaded machine can pin a rate at its cap (1e6 GB/s): written as '1e+06', YAML
    1.1 would read it back as a string; the writer must emit a float literal ('1.0e+06')."""
    import dataclasses
    topo, dev = _collective_topo(2), _device_topo().device
    coll = fit_collectives([(op, s, collective_time(op, s, 2, topo).time_s)
                            for op in OPS for s in SIZES], 2)
    coll = dataclasses.replace(coll, bandwidth_Bps=1e15, latency_s=1e-12)
    comp = fit_compute([(m, m, m, 1, gemm_time(m, m, m, dev, "fp32")) for m in (64, 256, 1024)],
                       [(b, elementwise_time(b, dev)) for b in (1e5, 1e6, 1e7)])
    path = write_calibrated_topology(tmp_path / "c.yaml", Calibration(coll, comp, "fp32", "x", 1e6))
    import yaml
    assert isinstance(yaml.safe_load(path.read_text())["levels"][0]["bandwidth_GBps"], float)
    loaded = load_topology(path)
    assert loaded.levels[0].bandwidth_Bps == pytest.approx(1e15)
    assert loaded.device.memory_bytes == pytest.approx(1e15)
