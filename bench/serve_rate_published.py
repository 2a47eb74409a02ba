"""tpsim serve under an open-loop request rate beside published engine benchmarks used in no fit.

    python bench/serve_rate_published.py [--csv] [--seeds N] [--peer-python PATH]
        [--vidur-python PATH --vidur-dir DIR]

Source: SGLang's benchmark/benchmark_vllm_060/README.md (sgl-project/sglang, commit 120affb961,
SGLang v0.3.0 beside vLLM v0.6.0), copied to tests/data/published_serving (its README gives
the servers' flags): Llama 3.1 8B Instruct on one A100 80G and Llama 3.1 70B Instruct on four
H100 80G (TP 4), bf16, ShareGPT prompts sent as a Poisson process of 4 and 8 requests/s
(1200 and 2400 prompts): the medians of the time to first token (TTFT), the time per output
token (TPOT, (e2e - TTFT) / (output - 1) per request) and the end-to-end latency; and all
5000 prompts sent at once (offline): output tokens/s.

tpsim: ``tpsim serve --rate R --requests N`` on the shipped topology (dgx-a100 TP 1, dgx-h100
TP 4), bf16, the custom all-reduce (both engines' default), CUDA graphs, the engine's
defaults otherwise (:class:`tpsim.spec.serve.ServeSettings`: its host time per step and front
end are those fitted on NVIDIA NIM, bench/serve_published.py; neither engine here overlaps
its host work: SGLang's overlap scheduler came after v0.3.0). ShareGPT's lengths are drawn
exponential with the sample's means (PROMPT_MEAN, GEN_MEAN: the data README gives their
source), the one shape ``--prompt-dist``/``--gen-dist`` offer with a long tail; the medians
of TTFT and TPOT hardly depend on that shape at these loads, the end-to-end latency's does
(it scales with the median request's output length).

Each engine's scheduler as the runs set it (ENGINES): neither mixed prefills into decode
steps, so both run ``separate_prefill`` (a step that prefills runs no decodes): SGLang v0.3.0's
ServerArgs had ``enable_mixed_chunk`` False, and it admitted by its PrefillAdder
(``admission="sglang-0.3"``, tpsim.serving.admission); vLLM v0.6.0 (V0 engine) turned chunked prefill on
by default only for max_model_len > 32K (vllm/engine/arg_utils.py), and these runs set 4096,
so its prefill steps ran alone with a token budget of max(max_model_len, 2048) = 4096
(``max_num_batched_tokens``). vLLM ran ``--num-scheduler-steps 10`` (multi-step scheduling:
the scheduler runs once every 10 decode steps, so a request arriving during a run waits for
its end, and the tokens reach the client in bursts of 10): ``num_scheduler_steps`` 10. Both
pad a decode step's batch to the CUDA graph captured for 1, 2, 4 or a multiple of 8 sequences
(``cuda_graph_align`` 8: :func:`tpsim.serving.step_model.graph_batch` gives the sources),
and both run their prefill steps without graphs (``eager_prefill``: the host issues each op of
the forward at the topology's ``engine_dispatch_us``, derived from SGLang's eager and graph
decode steps, bench/engine_dispatch.py; :mod:`tpsim.serving.host`). SGLang v0.3.0 decodes with
FlashInfer 0.1.6's CUDA-core kernel where the query heads per KV head are 1, 2, 4 or 8
(``decode_attention="flashinfer-0.1"``: srt/model_executor/model_runner.py's
``_grouped_size_compiled_for_decode_kernels`` test; 4 for 8B, 8 for 70B); vLLM v0.6.0 with
FlashAttention-2's paged decode, at the memory's rate.

``ITL p50 ms``: the median of the inter-token gaps of all requests pooled, measured and
simulated alike (:mod:`tpsim.serving.gaps`: a gap per streamed chunk; vLLM streams each run of
10 steps as one chunk, so its gap holds the run and any prefill step run between two runs).

``decode step ms`` separates the engine step's time from the loop around it: measured, the
median of the inter-token gaps of all requests pooled (most gaps are one decode step; for
vLLM the gap spans its 10 steps, so the median / 10); tpsim, one decode-only step at the
run's mean sequences per step (:func:`decode_step_s`). Where the TPOT misses by what the step
misses, the step's GPU time is wrong, not the queueing or the batching around it. vLLM's
measured step (its ITL median / 10) also holds the prefill steps run between its runs (most of
its runs at these rates are followed by one), which tpsim's step leaves out: its ITL row
compares the two like for like.

After the summary, the same step at the published runs' own batches rather than tpsim's
runs' (:func:`published_batch`, Little's law on the measured TPOT median): a step that misses
only because the slower measured engine holds more sequences would meet its measurement
there; and each engine's and model's step growth per sequence between its two rates.

Peers (``--peer-python``, the environment of bench/infer_peers.py): llm-analysis and GenZ price
a static batch, not an engine, so under a request rate they answer only the decode step, at
the batch tpsim's run holds on average (they cannot find it themselves), and only for the
70B model, which their configurations in bench/infer_peers_worker.py cover.

Vidur (``--vidur-python``, ``--vidur-dir``: bench/serve_rate_vidur.py gives its settings)
simulates an engine under a request rate as tpsim does: its vLLM scheduler on the same
requests as tpsim's run (seed 0), its TTFT, TPOT and e2e medians and offline output tokens/s
beside both engines' rows (it has no SGLang scheduler and no multi-step scheduling).

Each row: the measurement, tpsim's number (median over ``--seeds`` seeds of the arrivals
and lengths, 1 by default), the error (tpsim / measured - 1), and tpsim's p99 / p50 of the
same latency, which the source does not give. Target: within 15%.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from functools import lru_cache
from pathlib import Path

from tpsim.serving.engine import serve
from tpsim.serving.host import host_step_s
from tpsim.serving.infer import infer
from tpsim.spec.serve import ServeSettings

DATA = (Path(__file__).resolve().parent.parent / "tests" / "data" / "published_serving" /
        "sglang-0.3.0-vllm-0.6.0-sharegpt.csv")
PROMPT_MEAN = 1130466 / 5000     # SGLang issue #1505: ShareGPT, 5000 prompts, Llama 3.1 tokens
GEN_MEAN = 971613 / 5000
MODELS = {"Llama 3.1 8B Instruct": "llama3-8b", "Llama 3.1 70B Instruct": "llama3-70b"}
TOPOLOGIES = {"A100 80G": "dgx-a100", "H100 80G": "dgx-h100"}
# (column, metric label, the tpsim latency read)
ONLINE = [("median_ttft_ms", "TTFT p50 ms", "ttft_s"), ("median_tpot_ms", "TPOT p50 ms", "tpot_s"),
          ("median_e2e_ms", "e2e p50 ms", "e2e_s"), ("median_itl_ms", "ITL p50 ms", "itl_s")]
# each engine's scheduler as the runs set it (module docstring)
ENGINES = {"SGLang": dict(separate_prefill=True, cuda_graph_align=8, eager_prefill=True,
                          admission="sglang-0.3", decode_attention="flashinfer-0.1"),
           "vLLM": dict(separate_prefill=True, num_scheduler_steps=10,
                        max_num_batched_tokens=4096, cuda_graph_align=8, eager_prefill=True)}


def read_rows(path: Path, text: tuple[str, ...]) -> list[dict]:
    """A CSV's rows, the columns but ``text`` as floats (None where empty; "inf" reads as
    inf)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in text:
                r[k] = float(v) if v else None
    return rows


def published() -> list[dict]:
    """The CSV's rows, numbers as floats (request_rate inf for the offline rows)."""
    return read_rows(DATA, ("engine", "version", "model", "hardware", "source"))


@lru_cache(maxsize=None)
def run(model: str, topology: str, tp: int, rate: float, requests: int, engine: str,
        seed: int):
    """tpsim serve of one published case with ``engine``'s scheduler (module docstring)."""
    return serve(model, topology, tp=tp, rate=rate, requests=requests, seed=seed,
                 prompt=round(PROMPT_MEAN), gen=round(GEN_MEAN), prompt_dist="exponential",
                 gen_dist="exponential", allreduce="custom", memory_headroom=0.0,
                 **ENGINES[engine])   # headroom 0: all the memory past the reserve, as checked


def case(r: dict) -> tuple:
    """(model, topology, tp, rate, requests, engine) of a published row."""
    return (MODELS[r["model"]], TOPOLOGIES[r["hardware"]], int(r["gpus"]), r["request_rate"],
            int(r["num_prompts"]), r["engine"])


def rows(seeds: int = 1):
    """(engine, label, metric, measured, tpsim, tpsim p99 / p50 or None) per value."""
    for r in published():
        model, topo, tp, rate, n, engine = case(r)
        runs = [run(model, topo, tp, rate, n, engine, s) for s in range(seeds)]
        label = f"{r['engine']} {r['version']} {model} {topo} TP{tp} " + (
            "offline" if math.isinf(rate) else f"{rate:g} req/s")
        if math.isinf(rate):
            got = statistics.median(p.throughput.output_tokens_per_s for p in runs)
            yield r["engine"], label, "output tok/s", r["output_tokens_per_s"], got, None
            continue
        for col, metric, attr in ONLINE:
            pct = [getattr(p.latency, attr) for p in runs]
            got = statistics.median(q.p50 for q in pct) * 1e3
            tail = statistics.median(q.p99 / q.p50 for q in pct)
            yield r["engine"], label, metric, r[col], got, tail
        step = statistics.median(decode_step_s(model, topo, tp, p.scheduler.mean_running,
                                               engine) for p in runs)
        burst = ENGINES[engine].get("num_scheduler_steps", 1)
        yield (r["engine"], label, "decode step ms", r["median_itl_ms"] / burst, step * 1e3,
               None)


def decode_step_s(model: str, topology: str, tp: int, running: float, engine: str) -> float:
    """One decode-only step of tpsim's engine at the run's mean sequences per step (rounded):
    tpsim infer's time per output token at that batch (the mean lengths, ``engine``'s decode
    attention) + the engine's host time for it (:func:`tpsim.serving.host.host_step_s`, run
    between steps)."""
    b = max(1, round(running))
    kernel = ENGINES[engine].get("decode_attention", "tensor-cores")
    p = infer(model, topology, tp=tp, batch=b, prompt=round(PROMPT_MEAN), gen=round(GEN_MEAN),
              allreduce="custom", decode_attention=kernel)
    return p.decode.time_per_token_s + float(host_step_s(ServeSettings(), b))


def published_batch(r: dict, p) -> float:
    """The published run's mean sequences per decode step, by Little's law: N = R x the mean
    time a request spends decoding. The source gives only the TPOT median, and R x (mean
    output - 1) x that median overstates the mean time (the short requests have the longer
    TPOTs: each prefill step they wait through is spread over fewer tokens), so it is scaled
    by the ratio tpsim's own run ``p`` shows between the two (its mean sequences per step over
    R x (GEN_MEAN - 1) x its TPOT median: the same arrivals and length draws)."""
    rate = r["request_rate"]
    own = p.scheduler.mean_running / (rate * (GEN_MEAN - 1) * p.latency.tpot_s.p50)
    return own * rate * (GEN_MEAN - 1) * r["median_tpot_ms"] * 1e-3


def batch_points(seeds: int = 1) -> list[tuple]:
    """(engine, model, rate, the published run's batch (:func:`published_batch`), tpsim's run's
    mean batch, the measured decode step ms, tpsim's at that batch ms) of each online row."""
    pts = []
    for r in published():
        model, topo, tp, rate, n, engine = case(r)
        if math.isinf(rate):
            continue
        runs = [run(model, topo, tp, rate, n, engine, s) for s in range(seeds)]
        b = statistics.median(published_batch(r, p) for p in runs)
        own = statistics.median(p.scheduler.mean_running for p in runs)
        meas = r["median_itl_ms"] / ENGINES[engine].get("num_scheduler_steps", 1)
        pts.append((engine, model, rate, b, own, meas,
                    decode_step_s(model, topo, tp, b, engine) * 1e3))
    return pts


def growth(pts) -> dict:
    """{(engine, model): (measured, tpsim)}: the decode step's growth, ms a sequence, between
    the two rates of :func:`batch_points`' ``pts``."""
    by = {}
    for engine, model, _, b, _, meas, got in pts:
        by.setdefault((engine, model), []).append((b, meas, got))
    return {k: ((m1 - m0) / (b1 - b0), (g1 - g0) / (b1 - b0))
            for k, ((b0, m0, g0), (b1, m1, g1)) in by.items()}


def batch_lines(seeds: int = 1) -> list[str]:
    """The decode step of each online row at the published run's own batch
    (:func:`published_batch`), not tpsim's run's, measured against tpsim's, and each engine's
    and model's step growth per sequence between its two rates, measured and tpsim's."""
    pts = batch_points(seeds)
    lines = [f"  {engine} {model} {rate:g} req/s: {b:.1f} sequences a step (tpsim's run "
             f"{own:.1f}), measured {meas:.2f} ms, tpsim {got:.2f} ({got / meas - 1:+.1%})"
             for engine, model, rate, b, own, meas, got in pts]
    for (engine, model), (meas, got) in growth(pts).items():
        lines.append(f"  {engine} {model}: the step grows {meas:.3f} ms a sequence measured, "
                     f"{got:.3f} tpsim")
    return lines


def peer_rows(python: str | None, out) -> tuple[dict, str]:
    """{(label, "decode step ms"): {tool: ms}}: each peer's decode step of the 70B rows at
    the batch of tpsim's run (module docstring), and why not where they did not run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from infer_peers import peer_values
    cases = []
    for r in published():
        model, topo, tp, rate, n, engine = case(r)
        if model == "llama3-70b" and not math.isinf(rate):
            b = max(1, round(run(model, topo, tp, rate, n, engine, 0).scheduler.mean_running))
            label = next(lab for e, lab, *_ in out if e == r["engine"] and f" {rate:g} req/s"
                         in lab and model in lab)
            cases.append(dict(id=label, model=model, topology=topo, tp=tp, batch=b,
                              prompt=round(PROMPT_MEAN), gen=round(GEN_MEAN), dtype="bf16",
                              kv_dtype="bf16"))
    got, why = peer_values(python, cases) if cases else ({}, "")
    return {(c["id"], "decode step ms"): {t: v["tpot_s"] * 1e3 for t, v in
                                           got.get(c["id"], {}).items() if "error" not in v}
            for c in cases}, why


def vidur_cells(python: str | None, vidur_dir: str | None, out) -> tuple[dict, str]:
    """{(label, metric): Vidur's value} of the rows Vidur answers (TTFT, TPOT, e2e, offline
    output tokens/s; bench/serve_rate_vidur.py), one Vidur run per model and rate serving
    both engines' rows, and why not where it did not run."""
    sys.path.insert(0, str(Path(__file__).parent))
    from serve_rate_vidur import VALUES, vidur_values
    cases, labels = {}, {}
    for r in published():
        model, topo, tp, rate, n, engine = case(r)
        cid = f"{model} {topo} TP{tp} {rate:g}"
        cases[cid] = dict(id=cid, key=(model, topo, tp), rate=rate, requests=n, seed=0,
                          prompt=round(PROMPT_MEAN), gen=round(GEN_MEAN))
        labels.setdefault(cid, set()).update(
            lab for e, lab, *_ in out if e == engine and model in lab and
            lab.endswith("offline" if math.isinf(rate) else f" {rate:g} req/s"))
    got, why = vidur_values(python, vidur_dir, list(cases.values()))
    return {(label, metric): got[cid][key] * scale for cid in got for label in labels[cid]
            for metric, (key, scale) in VALUES.items()}, why


def summary(out) -> list[str]:
    """Median |error| and the count within 15% per engine and metric."""
    lines = []
    for engine in dict.fromkeys(e for e, *_ in out):
        for metric in dict.fromkeys(m for _, _, m, *_ in out):
            errs = [abs(g / m - 1) for e, _, k, m, g, _ in out if e == engine and k == metric]
            if errs:
                lines.append(f"{engine}, {metric}: median |error| {statistics.median(errs):.1%},"
                             f" {sum(e <= 0.15 for e in errs)} of {len(errs)} within 15%")
    return lines


def peer_summary(out, peers: dict) -> list[str]:
    """llm-analysis's and GenZ's median |error| on the decode step (all their rows), Vidur's
    per engine and metric, tpsim's on the same rows beside each."""
    lines = []
    for tool, engines in (("llm-analysis", [None]), ("GenZ", [None]),
                          ("Vidur", list(dict.fromkeys(e for e, *_ in out)))):
        for engine in engines:
            for metric in dict.fromkeys(m for _, _, m, *_ in out):
                pairs = [(peers[(lab, k)][tool], m, g) for e, lab, k, m, g, _ in out
                         if engine in (None, e) and k == metric
                         and tool in peers.get((lab, k), {})]
                if pairs:
                    lines.append(
                        f"{tool}, {engine or 'both engines'}, {metric}, {len(pairs)} rows: "
                        f"median |error| {statistics.median(abs(v / m - 1) for v, m, _ in pairs):.1%}"
                        f" (tpsim {statistics.median(abs(g / m - 1) for _, m, g in pairs):.1%})")
    return lines


def print_csv(out, first: str) -> None:
    """The rows of ``out`` ((``first``, case, metric, measured, tpsim, p99 / p50 or None)) as
    CSV, with the error."""
    print(f"{first},case,metric,measured,tpsim,error,tpsim_p99_over_p50")
    for e, label, metric, meas, got, tail in out:
        print(f'"{e}","{label}","{metric}",{meas:.6g},{got:.6g},{got / meas - 1:+.4f},'
              f'{"" if tail is None else f"{tail:.3f}"}')


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options both Poisson-rate scripts take: ``--csv`` and ``--seeds``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--csv", action="store_true", help="CSV instead of the table")
    ap.add_argument("--seeds", type=int, default=1,
                    help="seeds of the arrivals and lengths; tpsim's value is their median")
    return ap


def main(argv=None) -> int:
    ap = arguments(__doc__)
    ap.add_argument("--peer-python", default=None, help="the Python of the peers' environment")
    ap.add_argument("--vidur-python", default=None, help="the Python of Vidur's environment")
    ap.add_argument("--vidur-dir", default=None, help="a checkout of microsoft/vidur")
    args = ap.parse_args(argv)
    t0 = time.process_time()
    out = list(rows(args.seeds))
    peers, why = peer_rows(args.peer_python, out) if args.peer_python else ({}, "")
    vidur, why_vidur = vidur_cells(args.vidur_python, args.vidur_dir, out)
    for k, v in vidur.items():
        peers.setdefault(k, {})["Vidur"] = v
    if args.csv:
        print_csv(out, "engine")
        return 0
    print(f"{'case':44s} {'metric':13s} {'measured':>9s} {'tpsim':>9s} {'error':>7s} "
          f"{'p99/p50':>8s} {'llm-analysis':>12s} {'GenZ':>7s} {'Vidur':>7s}")
    for e, label, metric, meas, got, tail in out:
        cell = f"{'':8s}" if tail is None else f"{tail:8.2f}"
        peer = peers.get((label, metric), {})
        cells = " ".join(f"{peer[t] / meas - 1:+{w}.1%}" if t in peer else " " * w
                         for t, w in (("llm-analysis", 12), ("GenZ", 7), ("Vidur", 7)))
        print(f"{label:44s} {metric:13s} {meas:9.2f} {got:9.2f} {got / meas - 1:+7.1%} "
              f"{cell} {cells}".rstrip())
    print("\n".join(summary(out)))
    print("decode step ms at the published runs' own batches (Little's law, published_batch):")
    print("\n".join(batch_lines(args.seeds)))
    for line in peer_summary(out, peers):
        print(line)
    if why:
        print(f"peers: {why}")
    print(f"Vidur: {why_vidur}")
    print(f"({time.process_time() - t0:.1f} CPU s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
