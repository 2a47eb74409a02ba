"""Stage 3 of validate/run.py: fit the topology on the microbenchmarks and write it (no torch).

The base is the user's topology file (``--topology``: its device and levels get the fitted
values, everything else is kept) or, without one, a fresh topology for this machine: one level
of the ranks in a node, plus a network level when the run spans nodes. Then, each with
:func:`tpsim.calibrate.fitting.fit` through tpsim's own pricing:

  compute   the device's GEMM and memory efficiencies, GEMM size curve, kernel launch, (CPU)
            the GEMM memory time past the core's L2 its arithmetic does not hide, the per-element
            arithmetic cost of each kind of elementwise kernel (CPU: activation and
            softmax, forward and backward), on every compute kernel of the FIT shapes' blocks,
            a GEMM grid and copies (the memory rate alone);
  level 0   the collective launch, latency and bandwidth (or ring efficiency) of the innermost
            level, on collectives inside one node;
  network   latency and bandwidth of the first level between nodes, on collectives spanning
            every node (level 0 fixed), when LOCAL_WORLD_SIZE < WORLD_SIZE.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from tpsim.calibrate import fitting as C
from tpsim.calibrate.fitting import Fit, Sample
from tpsim.cluster.topology import load_topology

from topology_file import fitted_comment, fresh_topology_text, write_calibrated

UNITS = {"_element_s": (1e-9, " ns"), "_s": (1e-6, " us"), "_Bps": (1e9, " GB/s")}


@dataclass
class Run:
    """What the harness measured and knows about the machine."""
    dtype: str
    device_name: str
    memory_GiB: float
    world: int
    local: int
    kernels: list            # rows with "op" (a tpsim op) and "time_s"
    local_collectives: list  # rows with op, size_bytes, time_s (a node-local group)
    world_collectives: list  # the same on a group spanning nodes (empty on one node)
    stated_peak: float | None = None   # FLOP/s from the instruction set, if known
    cache_bytes: float | None = None   # a CPU core's L2 (sysfs); None on GPUs
    notes: tuple = ()


def _best(rows, key) -> float:
    return max(key(r) / r["time_s"] for r in rows if r["time_s"] > 0 and key(r) > 0)


def base_topology(run: Run, topology: str | None):
    """(YAML text, Topology to fit, updates): the user's file or a fresh one for this machine,
    its peak and memory bandwidth raised to upper bounds of every measured rate if they are not
    (``updates``: (path, SI value, comment) for the YAML)."""
    gemm_rate = _best([r for r in run.kernels if r["op"].kind == "gemm"], lambda r: r["op"].flops)
    mem_rate = _best([r for r in run.kernels if r["op"].kind == "elementwise"],
                     lambda r: r["op"].bytes)
    if topology:
        text, topo = Path(topology).read_text(), load_topology(topology)
        stated, source = topo.device.peak_flops.get(run.dtype), f"{Path(topology).name}'s figure"
    else:
        text = _fresh_text(run)
        topo, stated, source = _load_text(text), run.stated_peak, "the instruction set"
    peak, how = C.peak_bound(gemm_rate, stated)
    how = f"{source}, {peak / 1e12:.4g} TFLOP/s" if how == "stated" else how
    peak_note = (f"peak {run.dtype}: {how}; above every measured rate (best GEMM "
                 f"{gemm_rate / 1e12:.4g} TFLOP/s)")
    mem_bw = topo.device.memory_bandwidth_Bps if topology else None
    updates = []
    if not (mem_bw and mem_bw > mem_rate):
        mem_bw = C.UNSTATED_PEAK_FACTOR * mem_rate
        updates.append(("device.memory_bandwidth_Bps", mem_bw,
                        f"{C.UNSTATED_PEAK_FACTOR:g} x the best measured elementwise rate, an "
                        "upper bound; memory_efficiency carries the fitted rate"))
    cache = topo.device.gemm_cache_bytes or run.cache_bytes or 0.0
    if cache and not topo.device.gemm_cache_bytes:
        updates.append(("device.gemm_cache_bytes", cache, "one core's L2 (sysfs, as lscpu "
                        "reads it): the GEMM bytes past it pay gemm_memory_serial; not fitted"))
    dev = replace(topo.device, peak_flops={**topo.device.peak_flops, run.dtype: peak},
                  memory_bandwidth_Bps=mem_bw, gemm_cache_bytes=cache)
    return text, replace(topo, device=dev), updates, peak_note


def _fresh_text(run: Run) -> str:
    nodes = run.world // run.local
    levels = [{"name": "node", "size": run.local, "bandwidth_GBps": 1.0, "latency_us": 10.0}]
    if nodes > 1:
        levels.append({"name": "network", "size": nodes, "bandwidth_GBps": 1.0,
                       "latency_us": 10.0})
    dev = {"name": run.device_name, "peak_tflops": {run.dtype: 1.0},
           "memory_GiB": round(run.memory_GiB, 2), "memory_bandwidth_GBps": 1.0}
    return fresh_topology_text("calibrated", f"calibrated on {run.world} x {run.device_name} "
                               f"({run.dtype}) by validate/run.py", dev, levels)


def _load_text(text: str):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fresh.yaml"
        p.write_text(text)
        return load_topology(p)


def fit_all(run: Run, topo, stated_rates: bool) -> list[Fit]:
    """The compute fit, then each level's, in order; each on its own microbenchmarks.
    ``stated_rates``: the levels' bandwidths are line rates (fit the ring efficiency)."""
    samples = [Sample(r["op"], r["time_s"], 1, r.get("op_name", "")) for r in run.kernels
               if r["time_s"] > 0]
    arith = C.arith_params(samples)
    serial = (C.GEMM_MEMORY_SERIAL,) if run.cache_bytes else ()    # a CPU's GEMMs only
    params = C.COMPUTE_PARAMS + serial + arith
    fits = [C.fit(C.with_arith_start(topo, arith), list(params), samples,
                  f"{len(samples)} {run.dtype} kernels: FIT shapes' blocks, GEMM grid, "
                  "thin batched GEMMs, copies")]
    rows = lambda rs: [(r["op"], r["size_bytes"], r["time_s"]) for r in rs]   # noqa: E731
    if run.local > 1:
        s = C.collective_samples(rows(run.local_collectives), run.local, run.dtype)
        fits.append(C.fit(fits[-1].topology, list(C.level_params(0, True, not stated_rates, fits[-1].topology)), s,
                          f"{len(s)} collectives on {run.local} ranks in one node"))
    if run.world > run.local:
        topo = fits[-1].topology
        net = next(i for i, lv in enumerate(topo.levels) if lv.inter_node)
        s = C.collective_samples(rows(run.world_collectives), run.world, run.dtype)
        fits.append(C.fit(topo, list(C.level_params(net, run.local < 2, not stated_rates, topo)), s,
                          f"{len(s)} collectives on {run.world} ranks across "
                          f"{run.world // run.local} nodes"))
    return fits


def _unit(path: str) -> tuple[float, str]:
    field = re.sub(r"\[\w+\]$", "", path)      # a mapping's entry: its field's unit
    return next((u for suffix, u in UNITS.items() if field.endswith(suffix)), (1.0, ""))


def calibrate(run: Run, out: Path, topology: str | None, header: list[str]) -> dict:
    """Fit, write ``out`` (the calibrated topology) and return the fit summary for the report.

    A fresh topology's peak is then raised, if need be, until it bounds every rate tpsim
    prices in counted FLOPs (:func:`tpsim.calibrate.fitting.bound_counted_rates`: MFU <= 1); a user's
    stated peak is kept, with a note when an MFU above 100% is possible on it."""
    text, topo, updates, peak_note = base_topology(run, topology)
    fits = fit_all(run, topo, bool(topology))
    final, factor = fits[-1].topology, 1.0
    if topology:
        if C.counted_rate_factor(final, run.dtype) > 1:
            peak_note += ("; NOTE: fused causal attention is priced above this peak in counted "
                          "FLOPs, so MFU can exceed 100%")
    else:
        final, factor = C.bound_counted_rates(final, run.dtype)
        if factor > 1:
            peak_note += (f"; raised x{factor:.3g} (gemm_max_efficiency / {factor:.3g}, times "
                          "unchanged) so that no kernel tpsim prices beats it in counted FLOPs: "
                          "MFU <= 1")
    summary = []
    for f in fits:
        for p in f.params:
            value, stderr = p.value, p.stderr
            if p.path == "device.gemm_max_efficiency":
                value, stderr = value / factor, stderr / factor
            scale, unit = _unit(p.path)
            updates.append((p.path, value, fitted_comment(stderr, value, p.at_bound, f.what,
                                                          scale, unit)))
            summary.append({"parameter": p.path,
                            "yaml_key": ".".join(map(str, C.yaml_location(final, p.path)[0])),
                            "value": value, "unit_scale": scale, "unit": unit.strip(),
                            "stderr": stderr if math.isfinite(stderr) else None,
                            "at_bound": p.at_bound, "fitted_on": f.what})
    peak = final.device.peak(run.dtype)
    write_calibrated(text, final, updates, header, out, (run.dtype, peak, peak_note))
    return {"parameters": summary, "fits": [{"fitted_on": f.what, "points": f.points,
                                             "rms_log_residual": f.rms_log} for f in fits],
            "peak_flops": peak, "peak_note": peak_note, "topology": out.name,
            "base": topology or "fresh"}
