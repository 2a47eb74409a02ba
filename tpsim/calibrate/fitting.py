"""Fit a topology's parameters to measured timings, pricing every point with tpsim's own model.

A fit moves NAMED parameters of a :class:`~tpsim.cluster.topology.Topology`, each a dotted path into its
dataclasses (``device.gemm_max_efficiency``, ``levels[0].latency_s``,
``levels[1].efficiency.ring``), set with ``dataclasses.replace``. Each measured point is a typed
op of :mod:`tpsim.layer.ops` (the op tpsim's graph prices) and the seconds it took; its prediction is
:func:`tpsim.sim.price.price` on the candidate topology, the function every prediction goes through.
So the fit holds no formula of its own: when the cost model changes, the fit follows, and a new
parameter only needs adding to a list (:data:`COMPUTE_PARAMS`, :func:`level_params`).

The residual of a point is log(predicted / measured) (over- and under-prediction alike; a 20 us
collective counts as much as a 20 ms GEMM), minimised by ``scipy.optimize.least_squares``
within each parameter's bounds. Standard errors come from the Jacobian at the optimum:
cov = s^2 (J^T J)^-1 with s^2 = sum r^2 / (points - free parameters); a parameter that ends on a
bound has none. scipy is imported inside :func:`fit` only: ``import tpsim`` never needs it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from ..layer.ops import Attention, Collective, Gemm
from ..spec.parallel import Parallelism
from ..sim.price import Pricing, price
from ..cluster.topology import Topology


@dataclass(frozen=True)
class Param:
    """A parameter to fit: its dotted ``path`` into the topology, bounds in SI units, a typical
    magnitude ``scale`` (the fit's unit for it) and extra starting values (a non-convex one)."""
    path: str
    lower: float
    upper: float
    scale: float
    starts: tuple[float, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One measured point: ``op`` (a :mod:`tpsim.layer.ops` op) took ``seconds``. A collective's group
    is ``ranks`` consecutive ranks; ``label`` says what ran (for reports)."""
    op: object
    seconds: float
    ranks: int = 1
    label: str = ""


@dataclass(frozen=True)
class FittedParam:
    path: str
    value: float
    stderr: float          # nan when the value sits on a bound, inf when no point depends on it
    at_bound: bool


@dataclass(frozen=True)
class Fit:
    """The topology with fitted values, each parameter with its standard error, the residuals."""
    topology: Topology
    params: tuple[FittedParam, ...]
    residuals: tuple[float, ...]      # log(predicted / measured), per sample
    points: int
    what: str = ""                    # what it was fitted on, in words

    @property
    def rms_log(self) -> float:
        """Root mean square of the log residuals (~ relative error when small)."""
        return math.sqrt(sum(r * r for r in self.residuals) / max(1, len(self.residuals)))

    def value(self, path: str) -> float:
        return next(p.value for p in self.params if p.path == path)


# --------------------------------------------------------------------------- named parameters

_STEP = re.compile(r"^([A-Za-z_]+)(?:\[(\w+)\])?$")


def _steps(path: str) -> list[tuple[str, int | str | None]]:
    """``levels[0].latency_s`` -> [("levels", 0), ("latency_s", None)]; a word in brackets is
    a mapping's key (``device.elementwise_element_s[gelu]``)."""
    out = []
    for part in path.split("."):
        m = _STEP.match(part)
        if not m:
            raise ValueError(f"bad parameter path {path!r}")
        key = m.group(2)
        out.append((m.group(1), int(key) if key is not None and key.isdigit() else key))
    return out


def get_param(obj, path: str) -> float:
    """The value at ``path`` (SI units), e.g. ``levels[0].latency_s``."""
    for name, index in _steps(path):
        obj = getattr(obj, name)
        if index is not None:
            obj = obj[index]
    return obj


def _replace(obj, steps, value):
    (name, index), rest = steps[0], steps[1:]
    if not rest and index is None:
        return dataclasses.replace(obj, **{name: value})
    child = getattr(obj, name)
    if index is None:
        return dataclasses.replace(obj, **{name: _replace(child, rest, value)})
    if isinstance(index, str):                     # a mapping's value: a number
        return dataclasses.replace(obj, **{name: {**(child or {}), index: value}})
    items = list(child)
    items[index] = _replace(items[index], rest, value)
    return dataclasses.replace(obj, **{name: tuple(items)})


def with_params(topo: Topology, values: dict[str, float]) -> Topology:
    """``topo`` with each ``path: value`` set (``dataclasses.replace`` down the path)."""
    for path, value in values.items():
        topo = _replace(topo, _steps(path), value)
    return topo


def yaml_location(topo: Topology, path: str) -> tuple[list, float]:
    """Where ``path`` lives in the topology YAML: the key path (``["device",
    "kernel_launch_us"]``, ``["levels", 0, "bandwidth_GBps"]``) and the factor from the YAML
    unit to SI, read from the schema's field metadata (tpsim.base.schema.spec)."""
    keys, obj, scale = [], topo, 1.0
    for name, index in _steps(path):
        field = next(f for f in dataclasses.fields(obj) if f.name == name)
        keys.append(field.metadata.get("key") or name)
        scale = field.metadata.get("scale", 1.0)
        obj = getattr(obj, name)
        if index is not None:
            keys.append(index)
            obj = obj[index]
    return keys, scale


# --------------------------------------------------------------------------- the fit

def price_samples(topo: Topology, samples: list[Sample]) -> list[float]:
    """Seconds tpsim prices each sample's op at on ``topo`` (tpsim.sim.price.price)."""
    pricings: dict[int, Pricing] = {}
    out = []
    for s in samples:
        p = pricings.get(s.ranks)
        if p is None:
            p = pricings[s.ranks] = Pricing(topo, Parallelism(tp=s.ranks))
        out.append(price(s.op, p)[0])
    return out


def _residuals(topo, params, samples, u):
    cand = with_params(topo, {p.path: float(x) * p.scale for p, x in zip(params, u)})
    pred = np.array(price_samples(cand, samples))
    meas = np.array([s.seconds for s in samples])
    return np.log(np.maximum(pred, 1e-300) / meas)


def _starts(topo, params):
    """Starting points: the topology's own values (clipped into bounds) and each extra start."""
    values = [get_param(topo, p.path) for p in params]
    base = [min(max(p.scale if v is None else v, p.lower), p.upper)      # None: a default
            for v, p in zip(values, params)]
    options = [sorted({b, *p.starts}) for b, p in zip(base, params)]
    return [[v / p.scale for v, p in zip(combo, params)] for combo in itertools.product(*options)]


def fit(topo: Topology, params: list[Param], samples: list[Sample], what: str = "") -> Fit:
    """Least squares of log(predicted / measured) over ``samples``, moving ``params`` of ``topo``.

    Every start of :func:`_starts` is tried; the lowest cost wins. Raises ValueError when a
    sample's time is not positive or there are fewer samples than parameters.
    """
    from scipy.optimize import least_squares
    samples = list(samples)
    if any(not s.seconds > 0 for s in samples):
        raise ValueError("every sample needs a positive time")
    if len(samples) <= len(params):
        raise ValueError(f"{len(samples)} samples cannot fit {len(params)} parameters")
    lo = np.array([p.lower / p.scale for p in params])
    hi = np.array([p.upper / p.scale for p in params])
    best = None
    for u0 in _starts(topo, params):
        res = least_squares(lambda u: _residuals(topo, params, samples, u), np.array(u0),
                            bounds=(lo, hi), method="trf", x_scale=1.0, diff_step=1e-4)
        if best is None or res.cost < best.cost:
            best = res
    errors = _stderr(best, len(samples))
    out = tuple(FittedParam(p.path, (p.lower, float(x) * p.scale, p.upper)[int(a) + 1],
                            e * p.scale, bool(a))
                for p, x, e, a in zip(params, best.x, errors, best.active_mask))
    fitted = with_params(topo, {p.path: p.value for p in out})
    return Fit(fitted, out, tuple(float(r) for r in best.fun), len(samples), what)


def _stderr(res, points: int) -> list[float]:
    """Standard errors (in the fit's units) from the Jacobian at the optimum; nan on a bound."""
    free = res.active_mask == 0
    errors = np.full(len(res.x), np.nan)
    dof = points - int(free.sum())
    if free.any() and dof > 0:
        j = res.jac[:, free]
        s2 = 2 * res.cost / dof
        cov = s2 * np.linalg.pinv(j.T @ j)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        se[np.linalg.norm(j, axis=0) < 1e-9] = np.inf      # the points do not depend on it
        errors[free] = se
    return errors.tolist()


# --------------------------------------------------------------------------- what to fit

# Compute kernels (GEMMs, elementwise, fused attention): the device's efficiencies against its
# stated peaks, the GEMM size curve and the per-kernel fixed cost.
COMPUTE_PARAMS = (
    Param("device.gemm_max_efficiency", 1e-6, 1.0, 0.5),
    Param("device.gemm_half_efficiency_dim", 0.0, 4096.0, 64.0, starts=(4.0, 32.0, 256.0)),
    Param("device.gemm_k_half_dim", 0.0, 4096.0, 64.0),
    Param("device.kernel_launch_s", 0.0, 1e-2, 1e-5),
    Param("device.memory_efficiency", 1e-6, 1.0, 0.5),
)
# Passes over a GEMM's bytes past the core's cache that its arithmetic does not hide
# (tpsim.cost.compute.gemm_time): a CPU's, whose GEMMs wait on the operands that miss its L2.
GEMM_MEMORY_SERIAL = Param("device.gemm_memory_serial", 0.0, 4.0, 0.5)
# A start above any memory term: below it, max(memory, arithmetic) has no slope in the cost.
ARITH_START_S = 1e-8


def arith_params(samples: list[Sample]) -> tuple[Param, ...]:
    """The per-element arithmetic cost of each kind of elementwise kernel among ``samples``
    (:attr:`tpsim.layer.ops.MemoryBound.arith`, priced by
    :func:`tpsim.cost.compute.elementwise_time`): a CPU device's, whose elementwise kernels are
    bound by their arithmetic to different degrees. Start the topology at
    :func:`with_arith_start`."""
    kinds = sorted({getattr(s.op, "arith", "") for s in samples} - {""})
    return tuple(Param(f"device.elementwise_element_s[{k}]", 0.0, 1e-6, 1e-9) for k in kinds)


def with_arith_start(topo: Topology, params: tuple[Param, ...]) -> Topology:
    """``topo`` with each of ``params`` (:func:`arith_params`) at :data:`ARITH_START_S`."""
    return with_params(topo, {p.path: ARITH_START_S for p in params})


def level_params(index: int, launch: bool, fit_bandwidth: bool,
                 topo: Topology | None = None) -> tuple[Param, ...]:
    """A link level's parameters: its per-step latency and either its bandwidth (no stated line
    rate) or its ring efficiency against the stated one; ``launch``: also the collective launch
    (fitted once, on the innermost level's group). A level of ``topo`` with NCCL's per-hop
    latency tables (``hop_latency_us``) prices no collective with its plain latency, so that is
    not fitted (the data cannot determine it; the launch carries the fixed cost)."""
    lv = f"levels[{index}]"
    rate = (Param(f"{lv}.bandwidth_Bps", 1e6, 1e13, 1e9) if fit_bandwidth
            else Param(f"{lv}.efficiency.ring", 1e-6, 1.0, 0.5))
    tables = topo is not None and bool(topo.levels[index].hop_latencies)
    out = (rate,) if tables else (Param(f"{lv}.latency_s", 0.0, 0.1, 1e-5), rate)
    return ((Param("device.collective_launch_s", 0.0, 1.0, 1e-4),) if launch else ()) + out


# A device without a stated peak, or one a measured kernel beat, gets twice its best measured
# rate: an upper bound with room (the fit then finds gemm_max_efficiency near 1/2).
UNSTATED_PEAK_FACTOR = 2.0
# MFU counts FLOPs the conventional way for every model; the widest attention head of a shipped
# model is 256 (gemma).
MAX_HEAD_DIM = 256


def peak_bound(best_rate: float, stated: float | None) -> tuple[float, str]:
    """The peak to write: ``stated`` (a datasheet or instruction-set figure) when every measured
    rate is below it, else ``UNSTATED_PEAK_FACTOR`` x the best measured rate; with its source."""
    if stated and stated > best_rate:
        return stated, "stated"
    return UNSTATED_PEAK_FACTOR * best_rate, \
        f"{UNSTATED_PEAK_FACTOR:g} x the best measured rate" + \
        (" (the stated peak was below a measured rate)" if stated else "")


def counted_rate_factor(topo: Topology, dtype: str, head_dim: int = MAX_HEAD_DIM) -> float:
    """The fastest rate, in counted (model) FLOPs, that tpsim prices a kernel at on ``topo``, as
    a multiple of its ``dtype`` peak: the largest of a large GEMM and large causal fused
    attention kernels (head_dim 64 to ``head_dim``, forward and backward), each priced by
    tpsim.sim.price. Above 1, an MFU above 100% is possible."""
    big = 16384
    probes = [Gemm(big, big, big, dtype)] + [
        Attention(1, 8, 8, big, big, d, dtype, True, back)
        for d in (64, 128, head_dim) for back in (False, True)]
    times = price_samples(topo, [Sample(p, 1.0) for p in probes])
    return max(p.flops / (t * topo.device.peak(dtype)) for p, t in zip(probes, times))


def bound_counted_rates(topo: Topology, dtype: str) -> tuple[Topology, float]:
    """``topo`` with every peak raised by f = :func:`counted_rate_factor` and
    gemm_max_efficiency divided by f when f > 1: every priced time is unchanged (they read the
    product), and no kernel tpsim prices beats the peak in counted FLOPs, so MFU <= 1 for every
    model with head_dim <= MAX_HEAD_DIM. Returns (topology, f)."""
    f = counted_rate_factor(topo, dtype)
    if f <= 1.0:
        return topo, 1.0
    dev = topo.device
    dev = dataclasses.replace(dev, peak_flops={k: v * f for k, v in dev.peak_flops.items()},
                              gemm_max_efficiency=dev.gemm_max_efficiency / f)
    return dataclasses.replace(topo, device=dev), f


def collective_samples(rows, ranks: int, dtype: str) -> list[Sample]:
    """Samples of ``(op, nbytes, seconds)`` collectives on ``ranks`` consecutive ranks (those
    with seconds <= 0, a difference of two noisy medians, are left out)."""
    return [Sample(Collective(op, float(nb), "tp", dtype=dtype), t, ranks, f"{op} {nb} B")
            for op, nb, t in rows if t > 0]
