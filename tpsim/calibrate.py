"""Fit tpsim's cost-model parameters to measured timings (numpy only, no torch).

Each fit is least squares on the formula tpsim prices with (docs/dev/CONTRACTS.md), in relative
terms so that every point counts alike (a 20 us all-reduce and a 20 ms one):

    collective (one level, ring, no copy pass, efficiency 1):
        t = launch + steps(op, N) * latency + bus(op, N) * S / bandwidth
        steps: all-reduce 2(N-1), all-gather and reduce-scatter N-1;  bus: 2(N-1)/N, (N-1)/N
      linear in (launch, latency, 1/bandwidth); the two step counts make launch and latency
      separable.
    GEMM (compute-bound branch) and elementwise, one shared launch:
        t = launch + 2mnk / (P * prod_{d in m,n,k} d/(d+h))        t = launch + bytes / B
      linear in (launch, 1/P, 1/B) for a fixed half-efficiency dim h; h is found by a grid
      search (a 1-D nonlinear fit done as many linear ones).

The residual minimised is (nearly) that of log(predicted / measured): see :func:`log_lstsq`.
The result is written as a topology YAML that ``tpsim predict --topology`` loads: the fitted
throughput P goes in ``peak_tflops`` with ``gemm_max_efficiency: 1`` and the fitted bandwidth B in
``memory_bandwidth_GBps`` with ``memory_efficiency: 1`` (only the products are identifiable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .collectives import bus_factor, ring_steps
from .compute import size_efficiency

FIT_OPS = ("all-reduce", "all-gather", "reduce-scatter")


def nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| with x >= 0 by active sets: refit without any coefficient that goes negative.

    Good enough for the 2-3 unknowns here (Lawson-Hanson NNLS without scipy).
    """
    free = np.ones(a.shape[1], dtype=bool)
    x = np.zeros(a.shape[1])
    while free.any():
        sol, *_ = np.linalg.lstsq(a[:, free], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0.0
            x[free] = sol
            return x
        idx = np.flatnonzero(free)
        free[idx[np.argmin(sol)]] = False
    return x


def log_lstsq(a: np.ndarray, t: np.ndarray, iterations: int = 8) -> np.ndarray:
    """Non-negative x with a x ~ t in relative terms, symmetric in over- and under-prediction.

    Weighting rows by 1/t (minimising sum ((a x - t)/t)^2) favours predicting too low: a 3x
    over-prediction costs 4, a 3x under-prediction 0.44. Iteratively reweighted with
    1/sqrt(t * prediction), the fit approaches least squares on log(prediction / t).
    """
    w = 1.0 / t
    x = nonnegative_lstsq(a * w[:, None], t * w)
    for _ in range(iterations):
        pred = np.maximum(a @ x, 1e-3 * t)
        w = 1.0 / np.sqrt(t * pred)
        x = nonnegative_lstsq(a * w[:, None], t * w)
    return x


def _rms_rel(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred - meas) / meas) ** 2)))


@dataclass(frozen=True)
class CollectiveFit:
    """launch + steps * latency + bus * S / bandwidth, SI units; ``rms_rel_err`` over the points."""
    ranks: int
    launch_s: float
    latency_s: float
    bandwidth_Bps: float
    rms_rel_err: float
    points: int

    def time(self, op: str, nbytes: float) -> float:
        n = self.ranks
        return self.launch_s + ring_steps(op, n) * self.latency_s + \
            bus_factor(op, n) * nbytes / self.bandwidth_Bps


def fit_collectives(samples: list[tuple[str, float, float]], ranks: int) -> CollectiveFit:
    """Fit from ``(op, nbytes, seconds)`` samples (nccl-tests sizes) measured on ``ranks``.

    Samples with seconds <= 0 (a difference of two noisy medians can be) are left out.
    """
    samples = [s for s in samples if s[2] > 0]
    if ranks < 2:
        raise ValueError("collectives need at least 2 ranks to fit")
    ops = {op for op, _, _ in samples}
    if not ops <= set(FIT_OPS) or len(samples) < 3:
        raise ValueError(f"need >= 3 samples of {sorted(FIT_OPS)}, got {sorted(ops)}")
    t = np.array([s for _, _, s in samples])
    a = np.array([[1.0, ring_steps(op, ranks), bus_factor(op, ranks) * nb]
                  for op, nb, _ in samples])
    launch, latency, inv_bw = log_lstsq(a, t)
    inv_bw = max(inv_bw, 1e-15)                          # a flat curve: bandwidth unbounded
    launch, latency, bw = float(launch), float(latency), float(1.0 / inv_bw)
    fit = CollectiveFit(ranks, launch, latency, bw, 0.0, len(samples))
    pred = np.array([fit.time(op, nb) for op, nb, _ in samples])
    return CollectiveFit(ranks, launch, latency, bw, _rms_rel(pred, t), len(samples))


@dataclass(frozen=True)
class ComputeFit:
    """GEMM throughput P (FLOP/s), half-efficiency dim h, memory bandwidth B, one kernel launch."""
    flops: float
    half_dim: float
    memory_Bps: float
    launch_s: float
    gemm_rms_rel_err: float
    elementwise_rms_rel_err: float
    gemm_points: int
    elementwise_points: int

    def gemm_time(self, m: int, n: int, k: int, batch: int = 1) -> float:
        eff = size_efficiency(m, n, k, self.half_dim)
        return self.launch_s + batch * 2.0 * m * n * k / (self.flops * eff)

    def elementwise_time(self, nbytes: float) -> float:
        return self.launch_s + nbytes / self.memory_Bps


HALF_DIM_GRID = tuple(np.concatenate([[0.0], np.geomspace(0.5, 1024, 80)]))


def fit_compute(gemms: list[tuple[int, int, int, int, float]],
                elementwise: list[tuple[float, float]], half_dims=HALF_DIM_GRID) -> ComputeFit:
    """Fit from GEMM ``(m, n, k, batch, seconds)`` and elementwise ``(bytes, seconds)`` samples.

    Only the compute-bound GEMM branch is fitted: benchmark GEMMs with m, n, k >= ~32.
    """
    if len(gemms) < 3 or len(elementwise) < 2:
        raise ValueError("need >= 3 GEMM and >= 2 elementwise samples")
    tg = np.array([g[4] for g in gemms])
    te = np.array([e[1] for e in elementwise])
    t = np.concatenate([tg, te])
    dims = np.array([g[:3] for g in gemms], dtype=float)
    flops = 2.0 * dims.prod(axis=1) * np.array([g[3] for g in gemms], dtype=float)
    ew = np.array([e[0] for e in elementwise], dtype=float)
    best = None
    for h in half_dims:
        work = flops / size_efficiency(*dims.T, h)                  # FLOPs at full efficiency
        a = np.zeros((len(t), 3))
        a[:, 0] = 1.0
        a[:len(tg), 1] = work
        a[len(tg):, 2] = ew
        x = log_lstsq(a, t)
        resid = float(np.sum(np.log(np.maximum(a @ x, 1e-30) / t) ** 2))
        if x[1] > 0 and x[2] > 0 and (best is None or resid < best[0]):
            best = (resid, h, x, a)
    if best is None:
        raise ValueError("GEMM/elementwise timings do not fit t = launch + work / rate")
    _, h, (launch, inv_p, inv_b), a = best
    pred = a @ np.array([launch, inv_p, inv_b])
    return ComputeFit(float(1.0 / inv_p), float(h), float(1.0 / inv_b), float(launch),
                      _rms_rel(pred[:len(tg)], tg), _rms_rel(pred[len(tg):], te),
                      len(tg), len(te))


@dataclass(frozen=True)
class Calibration:
    """Everything one harness run fitted, plus what it was fitted on (for the YAML header)."""
    collectives: CollectiveFit
    compute: ComputeFit
    dtype: str
    device_name: str
    memory_GB: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def topology_yaml(cal: Calibration, name: str = "calibrated", level: str = "host") -> str:
    """The calibrated topology as YAML in tpsim's schema (topologies/README.md)."""
    c, k = cal.collectives, cal.compute
    header = [f"Fitted by tpsim validate/run.py (tpsim.calibrate) from microbenchmarks only: "
              f"{c.ranks} ranks of {cal.device_name}, {cal.dtype}.",
              f"Collectives: {c.points} all-reduce/all-gather/reduce-scatter timings, "
              f"rms relative residual {100 * c.rms_rel_err:.1f}%.",
              f"GEMMs: {k.gemm_points} shapes (rms {100 * k.gemm_rms_rel_err:.1f}%); elementwise: "
              f"{k.elementwise_points} sizes (rms {100 * k.elementwise_rms_rel_err:.1f}%).",
              "Fitted rates are folded into the peaks: gemm_max_efficiency and memory_efficiency "
              "are 1 by construction.", "GB = 1e9 bytes.", *cal.notes]
    lines = [f"# {h}" for h in header]
    lines += [
        f"name: {name}",
        f"description: calibrated on {c.ranks} x {cal.device_name} ({cal.dtype}) by validate/run.py",
        "device:",
        f"  name: {_quote(cal.device_name)}",
        f"  peak_tflops: {{{cal.dtype}: {_num(k.flops / 1e12)}}}   # fitted large-GEMM throughput",
        f"  memory_GB: {_num(cal.memory_GB)}",
        f"  memory_bandwidth_GBps: {_num(k.memory_Bps / 1e9)}   # fitted elementwise bytes/s",
        "  memory_efficiency: 1.0",
        "  gemm_max_efficiency: 1.0",
        f"  gemm_half_efficiency_dim: {_num(k.half_dim)}",
        f"  kernel_launch_us: {_num(k.launch_s * 1e6)}",
        f"  collective_launch_us: {_num(c.launch_s * 1e6)}",
        "levels:",
        f"  - name: {level}",
        f"    size: {c.ranks}",
        f"    bandwidth_GBps: {_num(c.bandwidth_Bps / 1e9)}   # fitted, per rank per direction",
        f"    latency_us: {_num(c.latency_s * 1e6)}          # fitted, per ring step",
        "    efficiency:",
        "      ring: 1.0",
    ]
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """A YAML float literal: '1e+06' reads back as a string in YAML 1.1, '1.0e+06' as a float."""
    text = f"{x:.6g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_calibrated_topology(path: str | Path, cal: Calibration, name: str = "calibrated",
                              level: str = "host") -> Path:
    """Write :func:`topology_yaml` to ``path`` and return it."""
    p = Path(path)
    p.write_text(topology_yaml(cal, name, level))
    return p
