"""``tpsim serve-search``'s results for people (a ranked table) and programs (JSON, CSV)."""
from __future__ import annotations

from ..base.units import gpus_text
from ..cluster.nccl import nccl_text
from ..base.formula import qualname
from ..serving.disagg import disaggregated
from ..serving.pools import capacity, kv_transfer_s
from ..serving.serve_search import REASONS, serve_search
from .values import plain

SEARCH = qualname(serve_search)
CANDIDATE = {"requests_per_s": qualname(capacity), "kv_transfer_s": qualname(kv_transfer_s),
             "disaggregated": qualname(disaggregated), "ranking": SEARCH}


def _split(tp: int, pp: int, ep: int) -> str:
    return f"TP{tp}" + (f" PP{pp}" if pp > 1 else "") + (f" EP{ep}" if ep > 1 else "")


def label(c) -> str:
    """TP4 PP2 x2 seqs256, TP2 EP4 x1 seqs256, or P 2xTP2 + D 1xTP4 seqs256 (disaggregated;
    P 1xTP2 PP2 + D 2xTP2 seqs256 with a pool's pipeline stages); seqs64,256 for a row that
    stands for both (the same results: :mod:`tpsim.serving.serve_tally`)."""
    seqs = "seqs" + ",".join(map(str, c.max_num_seqs_alike or (c.max_num_seqs,)))
    if c.mode == "aggregated":
        return f"{_split(c.tp, c.pp, c.ep)} x{c.replicas} {seqs}"
    return (f"P {c.prefill_replicas}x{_split(c.prefill_tp, c.prefill_pp, c.prefill_ep)} + "
            f"D {c.replicas}x{_split(c.tp, c.pp, c.ep)} {seqs}")


def _money(c) -> str:
    j = "" if c.j_per_output_token is None else f"{c.j_per_output_token:7.3f}"
    usd = "" if c.usd_per_million_output_tokens is None else \
        f"{c.usd_per_million_output_tokens:9.2f}"
    return f"{j:>7s} {usd:>9s}"


def _shown(r) -> int:
    """The deployments the rows stand for (a row, its max_num_seqs twins)."""
    return sum(len(c.max_num_seqs_alike) or 1 for c in r.candidates)


def _twins_note(r) -> list[str]:
    twins = [c.max_num_seqs_alike for c in r.candidates if len(c.max_num_seqs_alike) > 1]
    return [f"(seqs{','.join(map(str, twins[0]))}: one row for the max_num_seqs values whose "
            "runs give the same results: the engine's batch stayed below the lower)"] \
        if twins else []


def _layout_note(r) -> list[str]:
    """What a disaggregated row's layout says, in words, where one is shown."""
    if all(c.mode == "aggregated" for c in r.candidates):
        return []
    return ["(P 1xTP1 PP4 + D 2xTP2: a prefill pool of 1 replica of TP 1 x PP 4 and a decode pool "
            "of 2 of TP 2,", " each prompt's KV cache sent from the first to the second)"]


def serve_search_report(r) -> str:
    """The ranked table: at most ``top`` rows and a few lines of header and footnotes."""
    rate = "" if r.rate is None else f", at least {r.rate:g} requests/s"
    lines = [f"tpsim serve-search: {r.model} on {r.topology}{nccl_text(r.nccl)} ({r.device}), "
             f"{gpus_text(r.gpus)}; "
             f"prompt {r.prompt}, gen {r.gen}",
             f"targets: TTFT p99 <= {r.ttft_p99_s * 1e3:g} ms, TPOT p99 <= "
             f"{r.tpot_p99_s * 1e3:g} ms{rate}",
             f"{r.configurations} instance configurations priced in {r.runs} engine runs of "
             f"{r.requests} requests; {r.deployments} deployments: {_shown(r)} shown"
             + (f" in {len(r.candidates)} row{'s' * (len(r.candidates) > 1)}"
                if _shown(r) != len(r.candidates) else "")
             + ("; dropped: " + ", ".join(f"{k} {v}" for k, v in r.dropped.items())
                if r.dropped else ""),
             "",
             f"{'#':>2s}  {'layout':36s} {'req/s':>8s} {'TTFT p99':>9s} {'TPOT p99':>9s} "
             f"{'tok/s/GPU':>10s} {'J/tok':>7s} {'$/Mtok':>9s}"]
    for i, c in enumerate(r.candidates, 1):
        lines.append(f"{i:2d}  {label(c):36s} {c.requests_per_s:8.2f} {c.ttft_s_p99 * 1e3:7.1f}ms "
                     f"{c.tpot_s_p99 * 1e3:7.2f}ms {c.output_tokens_per_s_per_gpu:10,.1f} "
                     f"{_money(c)}")
    if not r.candidates:
        lines.append("    (no layout meets the targets)")
    lines += ["(req/s: the most requests/s served within the targets; tok/s/GPU = req/s x mean "
              "gen / GPUs;", " J/tok: energy at the facility; $/Mtok with --usd-per-gpu-hour)",
              *_layout_note(r),
              *(f"(dropped, {k}: {REASONS[k]})" for k in r.dropped),
              *_twins_note(r),
              f"formula  {SEARCH}, {CANDIDATE['requests_per_s']}"]
    return "\n".join(lines)


def serve_search_json(r) -> dict:
    """The JSON object of ``tpsim serve-search --json``."""
    return {
        "inputs": {"model": r.model, "topology": r.topology, "device": r.device,
                   "gpus": r.gpus, "ttft_p99_s": r.ttft_p99_s, "tpot_p99_s": r.tpot_p99_s,
                   "rate": r.rate, "prompt": r.prompt, "gen": r.gen, "requests": r.requests,
                   "nccl": r.nccl,
                   "formula": SEARCH},
        "configurations": r.configurations,
        "runs": r.runs,
        "deployments": r.deployments,
        "candidates": [{**plain(c), "formula": CANDIDATE} for c in r.candidates],
        "dropped": dict(r.dropped),
        "dropped_reasons": {k: REASONS[k] for k in r.dropped},
    }


__all__ = ["serve_search_report", "serve_search_json", "label"]
