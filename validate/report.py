"""Predict the timed blocks with tpsim and the calibrated topology; write report.json and
report.md (no torch here: tpsim's model, graph and pricing only).

Our blocks issue every collective synchronously, so the matching schedule runs every op one
after another: ``predicted_s`` is the sum of the priced ops of the phase(s) timed. tpsim's own
two-stream schedule (the input-gradient all-reduce under the weight-gradient GEMM, as Megatron
overlaps it) is reported beside it as ``predicted_overlapped_s``.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import dataclasses

from atomic import write_text_atomic

from tpsim.calibrate.fitting import Sample, price_samples
from tpsim.cost.collectives import collective_time
from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict_block


def model_for(shape, attention: str) -> ModelConfig:
    """A one-layer ModelConfig with ``shape``'s sizes (vocab unused by a bare block)."""
    return ModelConfig(name="validate", layers=1, hidden=shape.hidden, heads=shape.heads,
                       vocab=32000, seq_len=shape.seq, kv_heads=shape.kv_heads,
                       ffn_hidden=shape.ffn, activation=shape.activation, dropout=0.0,
                       attention=attention)


def predict_block_times(topo, shape, block: str, tp: int, dtype: str, attention: str) -> dict:
    """Serial and overlapped predictions of one block, forward and forward+backward, from
    tpsim's :func:`~tpsim.training.predict.predict_block` (the real ParallelMLP / ParallelAttention)."""
    p = predict_block(model_for(shape, attention), topo, tp, block, shape.batch, shape.seq, dtype,
                      attention=attention)
    phases = {"forward": ("forward",), "forward_backward": ("forward", "backward")}
    out = {}
    for name, wanted in phases.items():
        ops = [o for o in p.ops if o.phase in wanted]
        out[name] = {"serial": sum(o.time_s for o in ops),
                     "overlapped": p.forward_s if name == "forward" else p.total_s,
                     "comm": sum(o.time_s for o in ops if o.kind == "collective"),
                     "matmul": sum(o.time_s for o in ops if o.kind in ("gemm", "attention"))}
    return out


def error_pct(predicted: float, measured: float) -> float:
    """Signed error of the prediction, percent of the measurement."""
    return 100.0 * (predicted - measured) / measured


def build_cases(measured: list[dict], topo, tp: int, dtype: str, attention: str) -> list[dict]:
    """Join each measured block with its prediction."""
    cases, cache = [], {}
    for row in measured:
        shape = row["shape_obj"]
        key = (shape, row["layer"])
        if key not in cache:
            cache[key] = predict_block_times(topo, shape, row["layer"], tp, dtype, attention)
        pred = cache[key][row["phase"]]
        case = {k: v for k, v in row.items() if k != "shape_obj"}
        case.update(shape=shape.label(), shape_dims=shape.as_dict(), predicted_s=pred["serial"],
                    predicted_overlapped_s=pred["overlapped"],
                    predicted_collective_s=pred["comm"], predicted_matmul_s=pred["matmul"],
                    predicted_comm_share=pred["comm"] / pred["serial"],
                    error_pct=error_pct(pred["serial"], row["measured_s"]))
        cases.append(case)
    return cases


def collective_rows(measured: list[dict], topo) -> list[dict]:
    """Measured microbenchmark collectives with the calibrated model's time beside them."""
    out = []
    for r in measured:
        pred = collective_time(r["op"], r["size_bytes"], r["ranks"], topo).time_s
        out.append({**r, "predicted_s": pred, "error_pct": error_pct(pred, r["time_s"])})
    return out


def kernel_rows(measured: list[dict], topo) -> list[dict]:
    """Measured compute kernels (graph op name, priced op) with the calibrated model's time."""
    pred = price_samples(topo, [Sample(r["op"], r["time_s"]) for r in measured])
    out = []
    for r, p in zip(measured, pred):
        op = r["op"]
        row = {k: v for k, v in r.items() if k != "op"}
        row.update({f.name: getattr(op, f.name) for f in dataclasses.fields(op)},
                   flops=op.flops, bytes=op.bytes, predicted_s=p,
                   error_pct=error_pct(p, r["time_s"]) if r["time_s"] > 0 else None)
        out.append(row)
    return out


def summarize(cases: list[dict]) -> dict:
    errs = [abs(c["error_pct"]) for c in cases]
    worst = max(cases, key=lambda c: abs(c["error_pct"]))
    return {"cases": len(cases), "median_abs_error_pct": statistics.median(errs),
            "max_abs_error_pct": max(errs),
            "worst_case": f"{worst['layer']} {worst['phase']} {worst['shape']}",
            "target": "median <= 10%, max <= 20% (CPU, gloo, 2 ranks)",
            "meets_target": statistics.median(errs) <= 10.0 and max(errs) <= 20.0}


def write_json(path: Path, report: dict) -> None:
    """report.json, whole or not at all (see atomic.py)."""
    write_text_atomic(path, json.dumps(report, indent=2, sort_keys=False) + "\n")


def _loads(values) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def _ms(x: float) -> str:
    return f"{x * 1e3:.3f}"


def render_md(report: dict) -> str:
    """report.md: environment, fit, accuracy per case, breakdown, naive baseline."""
    env, s = report["environment"], report["summary"]
    lines = ["# tpsim validation report", "",
             f"{env['world_size']} ranks, backend {env['backend']}, device {env['device']}, "
             f"dtype {env['dtype']}, torch {env['torch']}, {env['threads_per_rank']} thread(s) "
             f"per rank, attention core {env['attention']}, mode {env['mode']}, wall "
             f"{env['wall_s']:.0f} s; load average (1, 5, 15 min) at the start "
             f"{_loads(env.get('load_average_start'))}, at the end "
             f"{_loads(env.get('load_average'))} ({env.get('host', '?')}; a start load "
             "above ~1.5 means other work shared the machine: the figures are noisier).", "",
             f"Method: {env.get('rounds', '?')} interleaved rounds, each timing every "
             "microbenchmark and layer once (kernels shorter than ~15 ms run back to back and "
             "count per call), slowest rank per round, median over rounds. The fit sees only the "
             "microbenchmarks; see docs/calibration.md in tpsim's repository.", "",
             "## Accuracy (calibrated on microbenchmarks only; layer shapes differ from the fit's)",
             "",
             f"Median |error| **{s['median_abs_error_pct']:.1f}%**, max |error| "
             f"**{s['max_abs_error_pct']:.1f}%** over {s['cases']} cases (worst: "
             f"{s['worst_case']}). Target: {s['target']}: "
             f"{'met' if s['meets_target'] else 'NOT met'}.", "",
             "| layer | phase | shape | measured ms | predicted ms | error % | overlapped ms |",
             "|---|---|---|---:|---:|---:|---:|"]
    for c in report["cases"]:
        lines.append(f"| {c['layer']} | {c['phase']} | {c['shape']} | {_ms(c['measured_s'])} | "
                     f"{_ms(c['predicted_s'])} | {c['error_pct']:+.1f} | "
                     f"{_ms(c['predicted_overlapped_s'])} |")
    lines += ["", "## Where the time goes (chapter exercise 3; one instrumented pass each)", "",
              "| layer | phase | shape | matmuls ms (predicted) | collectives ms (predicted) | "
              "layout copies ms | comm share | predicted comm share |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for c in report["cases"] + report["baseline"]:
        pred = f"{100 * c['predicted_comm_share']:.1f}%" if "predicted_comm_share" in c else "-"
        paren = lambda k: f" ({_ms(c[k])})" if k in c else ""   # noqa: E731
        lines.append(f"| {c['layer']} | {c['phase']} | {c['shape']} | {_ms(c['matmul_s'])}"
                     f"{paren('predicted_matmul_s')} | {_ms(c['collective_s'])}"
                     f"{paren('predicted_collective_s')} | {_ms(c.get('copy_s', 0.0))} | "
                     f"{100 * c['comm_share']:.1f}% | {pred} |")
    lines += ["", "Layout copies: the copy kernels the layers run (clone, cat, contiguous: the "
              "unfused attention's context copy and its query copy, the concatenation of the "
              "q/k/v and gate/up gradients); tpsim's graph prices the attention's "
              "(tpsim.layer.unfused). Comm share: collectives over the instrumented pass's own "
              "total, whose compute ran at the load of that moment, not at the rounds' median: "
              "compare the collectives with their prediction in ms.", ""]
    lines += ["", "## Naive baseline (fc1 column-parallel, all-gather, fc2 unsplit)", "",
              "| shape | phase | naive ms | Megatron MLP ms | naive / Megatron |",
              "|---|---|---:|---:|---:|"]
    mlp = {(c["shape"], c["phase"]): c["measured_s"] for c in report["cases"] if c["layer"] == "mlp"}
    for b in report["baseline"]:
        ref = mlp.get((b["shape"], b["phase"]))
        ratio = f"{b['measured_s'] / ref:.2f}x" if ref else "-"
        lines.append(f"| {b['shape']} | {b['phase']} | {_ms(b['measured_s'])} | "
                     f"{_ms(ref) if ref else '-'} | {ratio} |")
    return "\n".join(lines + _fit_md(report))


def _fit_md(report: dict) -> list[str]:
    fit = report["fit"]
    lines = ["", "## Fitted parameters (written to calibrated.yaml)", "",
             f"Base: {fit['base']}. {fit['peak_note']}.", "",
             "| parameter (YAML key) | value | std. error | fitted on |", "|---|---:|---:|---|"]
    for p in fit["parameters"]:
        scale, unit = p["unit_scale"], (" " + p["unit"]) if p["unit"] else ""
        se = "on its bound" if p["at_bound"] else (
            f"{p['stderr'] / scale:.3g}{unit}" if p["stderr"] is not None else "not determined")
        lines.append(f"| {p['yaml_key']} | {p['value'] / scale:.4g}{unit} | {se} | "
                     f"{p['fitted_on']} |")
    lines += [""] + [f"- rms log residual {100 * f['rms_log_residual']:.1f}% over {f['points']} "
                     f"points: {f['fitted_on']}" for f in fit["fits"]]
    lines += ["", "Standard errors from the Jacobian at the optimum (s^2 (J^T J)^-1), one "
              "sigma. GB = 1e9 bytes. predicted = every priced op run one after another, as "
              "these layers run (blocking collectives); overlapped = tpsim's two-stream "
              "schedule.", ""]
    bad = report.get("correctness", {}).get("failures", [])
    lines += [f"Correctness: {report['correctness']['checked']} tensors compared, "
              f"{'all match' if not bad else f'{len(bad)} MISMATCH'}.", ""]
    return lines
