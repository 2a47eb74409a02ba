"""tpsim.calibrate.fitting recovers known parameters from timings priced by tpsim's own cost model plus
noise, level by level; validate/'s writer puts them into a topology file that tpsim loads, keeps
the user's levels, keys and comments, and never yields an MFU above 1."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from tests.conftest import REPO, make_topology

from tpsim.calibrate import fitting as C
from tpsim.layer.ops import Collective, Gemm, MemoryBound
from tpsim.cluster.topology import load_topology

pytest.importorskip("scipy")
OPS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all")   # what validate/ times
SIZES = [2 ** i for i in range(12, 27, 2)]
DEVICE = {"peak_tflops": {"fp32": 0.2}, "gemm_max_efficiency": 0.45,
          "gemm_half_efficiency_dim": 24.0, "kernel_launch_us": 15.0,
          "memory_bandwidth_GBps": 20.0, "memory_efficiency": 0.75, "collective_launch_us": 40.0}
START = {"gemm_max_efficiency": 0.8, "gemm_half_efficiency_dim": 64.0, "kernel_launch_us": 0.0,
         "memory_efficiency": 0.5, "collective_launch_us": 0.0}


def _levels(bw0=12.5, lat0=7.0, bw1=3.0, lat1=30.0, nodes=None):
    levels = [{"name": "node", "size": 2, "bandwidth_GBps": bw0, "latency_us": lat0}]
    if nodes:
        levels.append({"name": "network", "size": nodes, "bandwidth_GBps": bw1,
                       "latency_us": lat1})
    return levels


def _truth(nodes=None):
    return make_topology(_levels(nodes=nodes), device=DEVICE)


def _start(nodes=None):
    return make_topology(_levels(1.0, 100.0, 1.0, 100.0, nodes), device={**DEVICE, **START})


def _noisy(samples, rng, rel):
    return [C.Sample(s.op, s.seconds * (1 + rel * rng.standard_normal()), s.ranks) for s in samples]


def _priced(topo, ops, ranks=1):
    return [C.Sample(op, t, ranks) for op, t in zip(ops, C.price_samples(topo, [C.Sample(o, 1.0, ranks)
                                                                        for o in ops]))]


def _compute_ops():
    dims = (32, 96, 256, 640, 1024)
    ops = [Gemm(m, n, k, "fp32") for m in dims for n in dims for k in dims[1:]]
    ops += [Gemm(256, 256, 64, "fp32", 8), Gemm(1024, 512, 256, "fp32", 1, True)]
    return ops + [MemoryBound(b) for b in np.geomspace(1e5, 1e8, 12)]


def _colls():
    return [Collective(op, s, "tp") for op in OPS for s in SIZES]


def test_compute_fit_recovers_each_parameter_within_its_standard_error():
    """eff 0.45 of 0.2 TFLOP/s, h = 24 (m, n and k), 15 us launch, 20 GB/s x 0.75; 2% noise. Each fitted value
    lies within 4 standard errors of the truth, and the errors are small."""
    rng = np.random.default_rng(1)
    samples = _noisy(_priced(_truth(), _compute_ops()), rng, 0.02)
    fit = C.fit(_start(), list(C.COMPUTE_PARAMS), samples)
    truth = {"device.gemm_max_efficiency": 0.45, "device.gemm_half_efficiency_dim": 24.0,
             "device.gemm_k_half_dim": 24.0, "device.kernel_launch_s": 15e-6,
             "device.memory_efficiency": 0.75}
    for p in fit.params:
        assert not p.at_bound and 0 < p.stderr < 0.2 * p.value, p
        assert abs(p.value - truth[p.path]) < 4 * p.stderr, p
    assert fit.rms_log == pytest.approx(0.02, rel=0.3)


def test_gemm_memory_serial_recovered_beside_the_size_curve():
    """A CPU whose GEMMs wait 1.5 passes over their bytes past a 1 MiB cache, and the
    attention core's thin batched GEMMs (k or n = 64) among the ops: with 2% noise the fit
    recovers 1.5 within 4 standard errors, and the GEMM efficiency its truth."""
    cpu = {**DEVICE, "gemm_cache_MiB": 1.0}
    truth = make_topology(_levels(), device={**cpu, "gemm_memory_serial": 1.5})
    ops = _compute_ops() + [Gemm(s, s, 64, "fp32", b) for b, s in ((1, 2048), (3, 1280), (8, 640))] \
        + [Gemm(s, 64, s, "fp32", b) for b, s in ((1, 2048), (3, 1280), (8, 640))]
    samples = _noisy(_priced(truth, ops), np.random.default_rng(4), 0.02)
    start = make_topology(_levels(), device={**cpu, **START})
    fit = C.fit(start, list(C.COMPUTE_PARAMS + (C.GEMM_MEMORY_SERIAL,)), samples)
    p = next(p for p in fit.params if p.path == "device.gemm_memory_serial")
    assert 0 < p.stderr < 0.2 and abs(p.value - 1.5) < 4 * p.stderr, p
    assert fit.value("device.gemm_max_efficiency") == pytest.approx(0.45, rel=0.05)
    assert fit.topology.device.gemm_cache_bytes == 2 ** 20


def test_collective_fit_exact_without_noise():
    """Noise-free: the two step counts (2(N-1) vs N-1) separate launch from per-step latency."""
    samples = _priced(_truth(), _colls(), 2)
    fit = C.fit(_start(), list(C.level_params(0, True, True)), samples)
    assert fit.value("device.collective_launch_s") == pytest.approx(40e-6, rel=1e-4)
    assert fit.value("levels[0].latency_s") == pytest.approx(7e-6, rel=1e-4)
    assert fit.value("levels[0].bandwidth_Bps") == pytest.approx(12.5e9, rel=1e-4)
    assert fit.rms_log < 1e-6


def test_all_to_all_priced_in_closed_form_and_fitted_with_the_others():
    """validate/ times all_to_all_single beside the other collectives. On 2 ranks tpsim prices
    an all-to-all of S bytes (one rank's, its own half included) at launch + one hop + (S/2)/B
    (tpsim.cost.all_to_all), so noise-free samples of all four (OPS) recover the level exactly."""
    a2a = [Collective("all-to-all", s, "tp") for s in SIZES]
    priced = _priced(_truth(), a2a, 2)
    assert [p.seconds for p in priced] == pytest.approx(
        [40e-6 + 7e-6 + s / 2 / 12.5e9 for s in SIZES], rel=1e-12)
    fit = C.fit(_start(), list(C.level_params(0, True, True)), _priced(_truth(), _colls(), 2))
    assert fit.value("device.collective_launch_s") == pytest.approx(40e-6, rel=1e-4)
    assert fit.value("levels[0].latency_s") == pytest.approx(7e-6, rel=1e-4)
    assert fit.value("levels[0].bandwidth_Bps") == pytest.approx(12.5e9, rel=1e-4)


def test_each_level_fitted_on_its_own_group():
    """Two nodes of two: the node level from 2-rank collectives, then the network level (node
    level fixed) from 4-rank ones; both levels keep their own values."""
    truth, rng = _truth(nodes=2), np.random.default_rng(3)
    local = _noisy(_priced(truth, _colls(), 2), rng, 0.01)
    span = _noisy(_priced(truth, _colls(), 4), rng, 0.01)
    f0 = C.fit(_start(2), list(C.level_params(0, True, True)), local)
    f1 = C.fit(f0.topology, list(C.level_params(1, False, True)), span)
    topo = f1.topology
    assert len(topo.levels) == 2 and topo.levels[1].inter_node
    assert topo.levels[0].bandwidth_Bps == pytest.approx(12.5e9, rel=0.03)
    assert topo.levels[1].bandwidth_Bps == pytest.approx(3e9, rel=0.03)
    assert topo.levels[1].latency_s == pytest.approx(30e-6, rel=0.2)
    assert topo.device.collective_launch_s == pytest.approx(40e-6, rel=0.2)


def test_ring_efficiency_fitted_against_a_stated_line_rate():
    """With the link's line rate kept (a datasheet figure), the ring efficiency carries the fit:
    12.5 GB/s measured on a 25 GB/s link is 0.5."""
    samples = _priced(_truth(), _colls(), 2)
    stated = make_topology(_levels(25.0, 1.0), device={**DEVICE, **START})
    fit = C.fit(stated, list(C.level_params(0, True, False)), samples)
    assert fit.value("levels[0].efficiency.ring") == pytest.approx(0.5, rel=1e-4)
    assert fit.topology.levels[0].bandwidth_Bps == 25e9


def test_fit_prices_through_the_cost_model_it_is_given(monkeypatch):
    """The fit has no formula of its own: with tpsim.cost.compute.gemm_time replaced by another law
    (time ~ flops^0.9), data made by that law are fitted exactly by the same parameters. The
    memos hold the prices of the law they were made by: each swap forgets them."""
    from tpsim.base.memo import clear_all
    from tpsim.cost import compute
    real = compute.gemm_time

    def other(m, n, k, device, dtype, batch=1, accumulate=False):
        return device.kernel_launch_s + (2.0 * m * n * k * batch) ** 0.9 / (
            device.peak(dtype) * compute.gemm_efficiency(m, n, k, device)) * 1e-1
    monkeypatch.setattr(compute, "gemm_time", other)
    clear_all()
    ops = [o for o in _compute_ops() if isinstance(o, Gemm)]
    samples = _priced(_truth(), ops)
    fit = C.fit(_start(), list(C.COMPUTE_PARAMS[:4]), samples)
    assert fit.rms_log < 1e-5
    assert fit.value("device.gemm_half_efficiency_dim") == pytest.approx(24.0, rel=1e-3)
    monkeypatch.setattr(compute, "gemm_time", real)
    clear_all()
    assert C.fit(_start(), list(C.COMPUTE_PARAMS[:4]), samples).rms_log > 0.1


def test_arithmetic_costs_fitted_by_kind_from_closed_form_timings():
    """Copies (no arithmetic) and gelu, gelu_backward and softmax kernels timed by hand:
    t = 15 us + max(bytes / (20 GB/s x 0.75), elements x c_kind), c = 4, 9 and 0.2 ns
    (softmax's below its memory term: 8 bytes at 15 GB/s are 0.53 ns an element). The fit
    recovers the memory efficiency, the launch and the two arithmetic-bound costs; softmax's
    ends anywhere at or below its memory term, which prices it the same."""
    cost = {"gelu": 4e-9, "gelu_backward": 9e-9, "softmax": 0.2e-9}
    per_byte = {"": 8, "gelu": 8, "gelu_backward": 12, "softmax": 8}
    ops = [MemoryBound(per_byte[k] * n, (n // 64, 64), k)
           for k in per_byte for n in (2 ** 12, 2 ** 15, 2 ** 18, 2 ** 21)]
    samples = [C.Sample(op, 15e-6 + max(op.nbytes / 15e9, op.elements * cost.get(op.arith, 0)))
               for op in ops]
    arith = C.arith_params(samples)
    assert [p.path for p in arith] == [f"device.elementwise_element_s[{k}]"
                                       for k in ("gelu", "gelu_backward", "softmax")]
    start = C.with_arith_start(_start(), arith)
    assert start.device.elementwise_element_s == {k: C.ARITH_START_S for k in cost}
    fit = C.fit(start, list(C.COMPUTE_PARAMS[3:] + arith), samples)
    assert fit.value("device.memory_efficiency") == pytest.approx(0.75, rel=1e-4)
    assert fit.value("device.kernel_launch_s") == pytest.approx(15e-6, rel=1e-3)
    for kind in ("gelu", "gelu_backward"):
        assert fit.value(f"device.elementwise_element_s[{kind}]") == \
            pytest.approx(cost[kind], rel=1e-4)
    assert fit.value("device.elementwise_element_s[softmax]") <= 8 / 15e9 * (1 + 1e-6)
    assert fit.rms_log < 1e-5
    assert C.yaml_location(fit.topology, "device.elementwise_element_s[gelu]") == \
        (["device", "elementwise_ns_per_element", "gelu"], 1e-9)


def test_parameter_paths_and_their_yaml_keys():
    topo = _truth(nodes=2)
    assert C.get_param(topo, "levels[1].latency_s") == pytest.approx(30e-6)
    moved = C.with_params(topo, {"levels[1].efficiency.ring": 0.5, "device.kernel_launch_s": 1e-6})
    assert moved.levels[1].efficiency.ring == 0.5 and moved.device.kernel_launch_s == 1e-6
    assert moved.levels[0] == topo.levels[0] and topo.levels[1].efficiency.ring == 1.0
    assert C.yaml_location(topo, "levels[0].latency_s") == (["levels", 0, "latency_us"], 1e-6)
    assert C.yaml_location(topo, "device.memory_bandwidth_Bps") == \
        (["device", "memory_bandwidth_GBps"], 1e9)
    with pytest.raises(ValueError):
        C.fit(topo, list(C.COMPUTE_PARAMS), _priced(topo, [Gemm(8, 8, 8, "fp32")]))


def test_peak_is_an_upper_bound_on_every_measured_rate():
    assert C.peak_bound(1e11, 1.6e11) == (1.6e11, "stated")
    assert C.peak_bound(1e11, 0.9e11)[0] == pytest.approx(C.UNSTATED_PEAK_FACTOR * 1e11)
    assert C.peak_bound(1e11, None)[0] == pytest.approx(C.UNSTATED_PEAK_FACTOR * 1e11)


# --------------------------------------------------------------------------- the written file

@pytest.fixture
def validate_modules(monkeypatch):
    pytest.importorskip("ruamel.yaml")
    monkeypatch.syspath_prepend(str(REPO / "validate"))
    import calibration
    import topology_file
    yield calibration, topology_file
    for name in ("calibration", "topology_file"):
        sys.modules.pop(name, None)


def _run(calibration, truth, world, local, stated_peak=None):
    rng = np.random.default_rng(7)
    kern = [{"op": s.op, "time_s": s.seconds} for s in
            _noisy(_priced(truth, _compute_ops()), rng, 0.02)]
    coll = lambda n: [{"op": s.op.op, "size_bytes": s.op.nbytes, "time_s": s.seconds}  # noqa
                      for s in _noisy(_priced(truth, _colls(), n), rng, 0.02)]
    return calibration.Run("fp32", 'CPU "test"', 24.0, world, local, kern, coll(local),
                           coll(world) if world > local else [], stated_peak)


def test_fresh_calibrated_topology_loads_and_prices_back(tmp_path, validate_modules):
    calibration, _ = validate_modules
    truth = _truth()
    summary = calibration.calibrate(_run(calibration, truth, 2, 2), tmp_path / "c.yaml", None,
                                    ["Calibrated by a test."])
    text = (tmp_path / "c.yaml").read_text()
    assert text.startswith("# Calibrated by a test.") and "fitted on" in text and "+-" in text
    topo = load_topology(tmp_path / "c.yaml")
    assert [lv.size for lv in topo.levels] == [2] and list(topo.device.peak_flops) == ["fp32"]
    ops = _compute_ops()[::7] + _colls()[::3]
    got = C.price_samples(topo, [C.Sample(o, 1.0, 2) for o in ops])
    want = C.price_samples(truth, [C.Sample(o, 1.0, 2) for o in ops])
    assert got == pytest.approx(want, rel=0.08)
    assert {p["parameter"] for p in summary["parameters"]} >= {"device.gemm_max_efficiency",
                                                               "levels[0].bandwidth_Bps"}


def test_cpu_run_states_its_cache_and_fits_the_gemm_memory_term(tmp_path, validate_modules):
    """A CPU run (its L2 known: 1 MiB) of a device whose GEMMs wait 1.5 passes over the bytes
    past it: the file states gemm_cache_MiB (not fitted), fits gemm_memory_serial and prices
    the attention-like GEMMs back within 8%; a run with no cache (a GPU's) writes neither."""
    calibration, _ = validate_modules
    truth = make_topology(_levels(), device={**DEVICE, "gemm_cache_MiB": 1.0,
                                             "gemm_memory_serial": 1.5})
    thin = [Gemm(s, s, 64, "fp32", b) for b, s in ((1, 2048), (3, 1280))] \
        + [Gemm(s, 64, s, "fp32", b) for b, s in ((1, 2048), (3, 1280))]
    kern = [{"op": s.op, "time_s": s.seconds} for s in
            _noisy(_priced(truth, _compute_ops() + thin), np.random.default_rng(7), 0.02)]
    coll = [{"op": s.op.op, "size_bytes": s.op.nbytes, "time_s": s.seconds}
            for s in _priced(truth, _colls(), 2)]
    for cache in (2.0 ** 20, None):
        run = calibration.Run("fp32", "CPU test", 24.0, 2, 2, kern, coll, [], None,
                              cache_bytes=cache)
        calibration.calibrate(run, tmp_path / "c.yaml", None, ["h"])
        text = (tmp_path / "c.yaml").read_text()
        keys = {line.split(":")[0].strip(): line for line in text.splitlines()}
        if cache is None:
            assert "gemm_cache_MiB" not in keys and "gemm_memory_serial" not in keys
            continue
        assert "not fitted" in keys["gemm_cache_MiB"] and "fitted on" in keys["gemm_memory_serial"]
        topo = load_topology(tmp_path / "c.yaml")
        assert topo.device.gemm_cache_bytes == 2 ** 20
        got = C.price_samples(topo, [C.Sample(o, 1.0) for o in thin])
        assert got == pytest.approx(C.price_samples(truth, [C.Sample(o, 1.0) for o in thin]),
                                    rel=0.08)


def test_user_topology_keeps_its_levels_keys_and_comments(tmp_path, validate_modules):
    """A two-level user file: both levels refitted (each on its own group), the network level
    kept between nodes, untouched keys and comments as they were, fitted keys commented."""
    calibration, _ = validate_modules
    src = tmp_path / "mine.yaml"
    text = (REPO / "topologies" / "dgx-a100-hdr-cluster.yaml").read_text()
    text = text.replace("size: 8                        # GPUs per node", "size: 2  # GPUs per node")
    src.write_text(text)
    before = load_topology(src)
    truth = C.with_params(before, {"levels[0].latency_s": 7e-6, "levels[1].latency_s": 30e-6,
                                   "levels[0].efficiency.ring": 0.6,
                                   "levels[1].efficiency.ring": 0.7,
                                   "device.collective_launch_s": 40e-6,
                                   "device.gemm_max_efficiency": 0.5})
    summary = calibration.calibrate(_run(calibration, truth, 4, 2), tmp_path / "out.yaml",
                                    str(src), ["h"])
    out = (tmp_path / "out.yaml").read_text()
    after = load_topology(tmp_path / "out.yaml")
    assert [lv.name for lv in after.levels] == ["nvlink", "infiniband"]
    assert after.levels[1].inter_node and after.levels[1].nics_per_node == 8
    assert after.levels[1].size == before.levels[1].size
    assert after.levels[1].efficiency.tree == before.levels[1].efficiency.tree
    assert after.device.peak_flops["bf16"] == before.device.peak_flops["bf16"]
    assert after.device.comm_compute_interference == before.device.comm_compute_interference
    fitted = {p["yaml_key"].split(".")[-1] for p in summary["parameters"]} | {"peak_tflops"}
    kept = [line.split("#", 1)[1].strip() for line in text.splitlines()[1:] if "#" in line
            and line.split(":")[0].strip(" -#") not in fitted
            and (line.split("#")[0].strip() or line.index("#") < 20)]   # not a fitted key's
    assert kept and all(comment in out for comment in kept)
    assert "collectives on 4 ranks across 2 nodes" in out and "collectives on 2 ranks in" in out
    assert after.levels[1].efficiency.ring == pytest.approx(0.7, rel=0.05)
    assert after.levels[0].efficiency.ring == pytest.approx(0.6, rel=0.05)
    assert after.levels[1].bandwidth_Bps == before.levels[1].bandwidth_Bps
    assert after.device.gemm_max_efficiency == pytest.approx(0.5, rel=0.05)


def test_counted_rate_bound_keeps_every_time_and_caps_the_rate(monkeypatch):
    """A 16384^3 GEMM at gemm_max_efficiency 1 and h = 5 runs at (16384/16389)^3 of the peak
    (less its launch): no kernel tpsim prices beats the peak in model FLOPs. Where one would (factor 1.5, forced
    here), every peak is raised 1.5x and gemm_max_efficiency divided by 1.5: times unchanged."""
    from tpsim.layer.ops import Attention
    topo = make_topology(_levels(), device={**DEVICE, "gemm_max_efficiency": 1.0,
                                            "gemm_half_efficiency_dim": 5.0})
    factor = C.counted_rate_factor(topo, "fp32")
    assert (16384 / 16389) ** 3 - 1e-5 <= factor <= 1.0
    assert C.bound_counted_rates(topo, "fp32") == (topo, 1.0)
    monkeypatch.setattr(C, "counted_rate_factor", lambda t, d: 1.5)
    bounded, f = C.bound_counted_rates(topo, "fp32")
    assert f == 1.5 and bounded.device.peak("fp32") == pytest.approx(0.2e12 * 1.5)
    assert bounded.device.gemm_max_efficiency == pytest.approx(1 / 1.5)
    ops = _compute_ops()[::5] + [Attention(1, 8, 8, 4096, 4096, 128, "fp32", True, b)
                                 for b in (False, True)]
    assert C.price_samples(bounded, [C.Sample(o, 1.0) for o in ops]) == \
        pytest.approx(C.price_samples(topo, [C.Sample(o, 1.0) for o in ops]), rel=1e-12)


@pytest.mark.parametrize("stated", [None, 1.6e11, 0.1e12])
def test_calibrated_cpu_topology_gives_mfu_in_unit_interval(tmp_path, validate_modules, stated):
    """llama3-8b, TP 2, fp32 on a calibrated CPU whose GEMMs run at 93% of a 0.1 TFLOP/s peak
    with h = 5: with that peak stated (an instruction-set figure) the fit finds efficiency 0.93,
    and fused causal attention, priced at half its counted FLOPs, would give MFU 101%; the
    written peak bounds every rate tpsim prices, so 0 < MFU <= 1."""
    import tpsim
    calibration, _ = validate_modules
    truth = make_topology(_levels(), device={**DEVICE, "gemm_max_efficiency": 0.93,
                                              "gemm_half_efficiency_dim": 5.0,
                                              "peak_tflops": {"fp32": 0.1}})
    calibration.calibrate(_run(calibration, truth, 2, 2, stated), tmp_path / "c.yaml", None, [])
    p = tpsim.predict("llama3-8b", str(tmp_path / "c.yaml"), tp=2, dtype="fp32")
    assert 0 < p.model.mfu <= 1


def test_committed_cpu_calibration_gives_mfu_in_unit_interval():
    import tpsim
    path = REPO / "docs" / "measurements" / "cpu-gloo-2rank" / "calibrated.yaml"
    p = tpsim.predict("llama3-8b", str(path), tp=2, dtype="fp32")
    assert 0 < p.model.mfu <= 1


def test_a_level_priced_by_nccl_hop_tables_does_not_fit_its_plain_latency():
    """On dgx-h100 every collective prices its latency from the hop_latency_us tables, so the
    level's plain latency_us is not a parameter the collectives can determine: not fitted."""
    h100 = load_topology("dgx-h100")
    names = [p.path for p in C.level_params(0, True, False, h100)]
    assert "levels[0].latency_s" not in names and "levels[0].efficiency.ring" in names
    plain = make_topology([{"name": "l", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}])
    assert "levels[0].latency_s" in [p.path for p in C.level_params(0, True, True, plain)]
