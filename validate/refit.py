"""Refit a CPU validation report's own microbenchmarks without and with the GEMM memory term
(no torch).

    python validate/refit.py REPORT.json [REPORT.json ...] [--cache-MiB 1]

Each report.json of ``validate/run.py`` holds every microbenchmark (the priced op and its
median time) and every layer case. This fits them again the way ``validate/calibration.py``
does, once without ``gemm_memory_serial`` (the roofline) and once with it (bytes past a
``--cache-MiB`` cache, one core's L2 on the validation guest), and predicts the same cases:
a paired comparison on the same measurements, free of the load's drift between runs. It
prints, for each fit, the median and max |error|, the cases predicted low, the fitted term,
and the kernels' mean error by group (the attention core's batched GEMMs, the attention-like
GEMMs of THIN_GEMMS, the other GEMMs, the elementwise kernels).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import calibration as CAL  # noqa: E402
import report as R  # noqa: E402
from shapes import LayerShape  # noqa: E402
from tpsim.calibrate import fitting as C  # noqa: E402
from tpsim.calibrate.fitting import Sample, price_samples  # noqa: E402
from tpsim.layer.ops import Gemm, MemoryBound  # noqa: E402


def kernel_op(row: dict):
    """The priced op of one ``kernels`` row."""
    if row["kind"] == "gemm":
        return Gemm(row["m"], row["n"], row["k"], row["dtype"], row["batch"], row["accumulate"],
                    row["causal"], row["streams"])
    if row["kind"] == "elementwise":
        return MemoryBound(row["nbytes"], tuple(row["dims"]), row["arith"])
    raise ValueError(f"kernel kind {row['kind']!r} is not refitted here")


def group(row: dict, op) -> str:
    if row["fit_shape"] == "thin":
        return "thin GEMMs"
    if op.kind == "gemm":
        return "batched GEMMs" if op.batch > 1 else "other GEMMs"
    return op.kind


def refit(report: dict, cache_bytes: float | None) -> dict:
    """Fit and predict one report; ``cache_bytes`` None: without the GEMM memory term."""
    env = report["environment"]
    kernels = [{**k, "op": kernel_op(k)} for k in report["kernels"]]
    colls = [c for c in report["collectives"] if c["group"] == "local"]
    run = CAL.Run(env["dtype"], env["device"], 1.0, env["world_size"], env["local_world_size"],
                  kernels, colls, [], report["fit"]["peak_flops"], cache_bytes=cache_bytes)
    _, topo, _, _ = CAL.base_topology(run, None)
    fits = CAL.fit_all(run, topo, False)
    final, _ = C.bound_counted_rates(fits[-1].topology, run.dtype)
    measured = [{"layer": c["layer"], "phase": c["phase"], "measured_s": c["measured_s"],
                 "shape_obj": LayerShape(**c["shape_dims"])} for c in report["cases"]]
    cases = R.build_cases(measured, final, run.world, run.dtype, env["attention"])
    predicted = price_samples(final, [Sample(k["op"], k["time_s"]) for k in kernels])
    groups: dict[str, list[float]] = {}
    for k, p in zip(kernels, predicted):
        groups.setdefault(group(k, k["op"]), []).append(R.error_pct(p, k["time_s"]))
    serial = [p for p in fits[0].params if p.path == "device.gemm_memory_serial"]
    return {"summary": R.summarize(cases), "low": sum(c["error_pct"] < 0 for c in cases),
            "serial": serial[0] if serial else None,
            "groups": {g: statistics.mean(v) for g, v in groups.items()}}


def line(name: str, r: dict) -> str:
    s = r["summary"]
    term = (f"gemm_memory_serial {r['serial'].value:.3g} +- {r['serial'].stderr:.2g}"
            if r["serial"] else "no term")
    groups = ", ".join(f"{g} {v:+.1f}%" for g, v in sorted(r["groups"].items()))
    return (f"  {name}: median {s['median_abs_error_pct']:.1f}%, max {s['max_abs_error_pct']:.1f}%"
            f", {r['low']} of {s['cases']} low; {term}; kernels' mean error: {groups}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--cache-MiB", type=float, default=1.0, dest="cache_MiB")
    args = p.parse_args(argv)
    for path in args.reports:
        report = json.loads(path.read_text())
        print(f"{path} (load at start {report['environment'].get('load_average_start')})")
        print(line("without", refit(report, None)))
        print(line("with", refit(report, args.cache_MiB * 2**20)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
