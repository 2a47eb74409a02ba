"""``tpsim infer`` and ``tpsim serve`` with comma lists: one row per combination, the settings
that vary first (as ``tpsim predict``'s comparison, :func:`tpsim.report.render.comparison_table`)."""
from __future__ import annotations

import math

from . import formulas as fm
from .energy import ENERGY
from .formulas import formula_lines
from .serve import LATENCY, THROUGHPUT


# what a varied setting's column counts, where its name alone does not say
SETTING_UNITS = {"rate": "rate: requests per second, Poisson arrivals (inf: all at once); "}


def _value(p, key: str) -> str:
    """A varied setting's value in the run's inputs (or the engine's knobs)."""
    v = getattr(p.inputs, key) if hasattr(p.inputs, key) else getattr(p.engine, key)
    return "inf" if isinstance(v, float) and math.isinf(v) else str(v)


def _lead(preds, varied: list[str]) -> tuple[str, list[str]]:
    widths = [max(len(k), *(len(_value(p, k)) for p in preds)) for k in varied]
    head = "  ".join(f"{k:>{w}s}" for k, w in zip(varied, widths))
    cells = ["  ".join(f"{_value(p, k):>{w}s}" for k, w in zip(varied, widths)) for p in preds]
    return head, cells


def _energy(e) -> str:
    return f"{e.j_per_output_token:7.3f}" if e is not None and e.j is not None else f"{'':>7s}"


def _speculative(s) -> str:
    if s is None:
        return "none"
    return (f"{s.tokens_per_step:.2f} tokens per step, draft {s.draft_share:.1%} of it, "
            f"{s.speedup:.2f}x")


def infer_comparison(preds, varied: list[str]) -> str:
    """One row per prediction: TTFT, TPOT, output tokens/s (static batch), J per output
    token, memory per GPU and whether it fits."""
    head, cells = _lead(preds, varied)
    lines = [f"{head}  {'TTFT':>10s} {'TPOT':>10s} {'tokens/s':>10s} {'J/tok':>7s} "
             f"{'memory':>9s}  fits"]
    for c, p in zip(cells, preds):
        lines.append(f"{c}  {p.prefill.time_s * 1e3:8.2f}ms {p.decode.time_per_token_s * 1e3:8.3f}"
                     f"ms {p.total.tokens_per_s:10,.1f} {_energy(p.energy)} "
                     f"{p.memory.total_bytes / 2**30:6.1f}GiB  {'yes' if p.memory.fits else 'NO'}")
    lines.append("(TTFT: the prefill; TPOT: the mean decode step; tokens/s: batch x gen over "
                 "prefill + decode; J/tok: energy per output token at the facility; memory per "
                 "GPU, GiB = 2^30 bytes)")
    if any(p.speculative for p in preds):
        lines += [f"{c}  speculative: {_speculative(p.speculative)}" for c, p in zip(cells, preds)]
    named = {"TTFT": fm.PREFILL["time_s"], "TPOT": fm.DECODE["time_per_token_s"],
             "tokens/s": fm.TOTAL, "J/tok": ENERGY,
             "memory": fm.INFER_MEMORY["total_bytes"]}
    return "\n".join(lines + formula_lines(named, "formula  "))


def serve_comparison(preds, varied: list[str]) -> str:
    """One row per run: output tokens/s, TTFT and TPOT p50 and p99, J per output token,
    preemptions."""
    head, cells = _lead(preds, varied)
    lines = [f"{head}  {'out tok/s':>10s} {'TTFT p50':>10s} {'TTFT p99':>10s} {'TPOT p50':>9s} "
             f"{'TPOT p99':>9s} {'J/tok':>7s} {'preempt':>7s}"]
    for c, p in zip(cells, preds):
        t, f = p.latency.ttft_s, p.latency.tpot_s
        lines.append(f"{c}  {p.throughput.output_tokens_per_s:10,.1f} {t.p50 * 1e3:8.1f}ms "
                     f"{t.p99 * 1e3:8.1f}ms {f.p50 * 1e3:7.2f}ms {f.p99 * 1e3:7.2f}ms "
                     f"{_energy(p.energy)} {p.scheduler.preemptions:7d}")
    lines.append("(" + "".join(SETTING_UNITS[k] for k in varied if k in SETTING_UNITS) +
                 "out tok/s over the run; TTFT and TPOT per request; J/tok: energy per output "
                 "token at the facility; preempt: sequences preempted and recomputed)")
    named = {"out tok/s": THROUGHPUT, "TTFT, TPOT": LATENCY["ttft_s"], "J/tok": ENERGY}
    return "\n".join(lines + formula_lines(named, "formula  "))


__all__ = ["infer_comparison", "serve_comparison"]
