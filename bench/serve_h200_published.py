"""tpsim serve beside SGLang's own benchmark runs on H200, published with their raw output and
used in no fit.

    python bench/serve_h200_published.py [--csv] [--seeds N]

Source: datacrunch-research/h200-benchmarks (commit c091ef530a; linked from sgl-project/sglang's
benchmark/benchmark_v0.4.1.post4/README.md), copied to tests/data/published_serving (its README
gives the servers' flags): the JSON lines that ``sglang.bench_serving`` wrote, one a run,
for Llama 3.3 70B Instruct on four H200 (TP 4) and Llama 3.1 405B Instruct on eight (TP 8),
bf16, served by SGLang from the lmsysorg/sglang Docker image of December 2024 (v0.4.x: the
runs do not print the version) with ``--disable-radix-cache --enable-torch-compile``. Each
run: ``--dataset-name random`` (prompt lengths uniform on 1..1024 and output lengths on
0..1024 at the default ``--random-range-ratio`` 0, bench_serving's ``sample_random_requests``)
or ShareGPT, sent as a Poisson process of 1-16 requests/s, or all at once (offline, 70B
only, at several lengths): the medians of the TTFT, of the inter-token gaps of all requests
pooled (ITL) and of the end-to-end latency, and output tokens/s. Medians only: these runs'
bench_serving printed no other percentile.

tpsim: ``tpsim serve --rate R --requests N`` on the shipped dgx-h200, bf16, the custom
all-reduce, with SGLang v0.4's scheduler as its defaults set it (ENGINE): prefills in steps of
their own (``enable_mixed_chunk`` False: ``--separate-prefill``), chunks of at most
``chunked_prefill_size`` 8192 tokens, the zero-overhead (overlap) scheduler on by default
(lmsys.org/blog/2024-12-04-sglang-v0-4: ``--host-overlap``, which also fixes each step's
batch a step ahead, ``Scheduler.event_loop_overlap``: tpsim.serving.host), decode steps
replayed in the CUDA graph captured for 1, 2, 4 or a multiple of 8 sequences up to
``cuda_graph_max_bs`` 160 and run eagerly past it, and prefill steps run without graphs
(``--cuda-graph-align 8 --cuda-graph-max-bs 160 --eager-prefill``), and the running requests
capped only by
the request pool, ``max_num_reqs`` = min(max(2048, KV tokens / context length x 512), 4096)
(srt/model_executor/model_runner.py; MAX_RUNNING).
``--memory-headroom`` is 1 - ``mem_fraction_static`` (0.85 at TP 4 by default,
server_args.py; 0.87 given for 405B). The host time and the front end are the defaults
(fitted on NIM, bench/serve_published.py). Lengths: the random runs' uniform draws as
``--prompt-dist uniform:1,L`` and ``--gen-dist uniform:2,L`` (tpsim generates at least 2
tokens); the ShareGPT runs' exponential with the run's own means (its total input and output
tokens over its requests, printed in the same line), as bench/serve_rate_published.py does.

The decode attention: FlashInfer 0.1.6 (SGLang's pin from PR 2525), whose CUDA-core kernel
SGLang runs where the query heads per KV head are 1, 2, 4 or 8 (FlashInferAttnBackend's
``_grouped_size_compiled_for_decode_kernels`` test, srt/layers/attention/flashinfer_backend.py):
Llama 3.3 70B's 8 (64 over 8, at any TP), not Llama 3.1 405B's 16 at TP 8 (tensor cores):
``--decode-attention flashinfer-0.1`` (tpsim.cost.compute.decode_attention_time).

SGLang's admission: ``--admission sglang-0.4`` (its PrefillAdder with ``ignore_eos``, which
bench_serving sends by default: a request admitted only if every running request can still
finish; tpsim.serving.admission). The offline runs and the Poisson runs that held more than
160 sequences (group "past graphs": :func:`past_graphs`, from the published rate and mean
latency alone) ran their decode steps eagerly, past the largest graph; they are kept apart
from the rest ("online") in the summary.

After the summary, the decode step at each Poisson run's own batch (:func:`step_lines`), not
tpsim's run's: N = R x the mean time a request decodes, the published mean e2e less the TTFT
median (Little's law; the offline runs, whose requests all wait from t = 0, are left out), at
the run's mean cache per sequence over its decode steps (the prompt's mean, plus E[g^2] /
(2 E[g]) of the output draw: a third of the range for the uniform, the mean for the
exponential), measured (the pooled ITL median: a step without prefill) against tpsim's
(the engine's step tables, eager past 160: :meth:`tpsim.serving.step_model.StepModel.decode_step_s`),
with its attention's cache reads and the host's issue bound of an eager step. A gap of a
running request holds a prefill step (SGLang v0.4 prefills in steps of their own) when a
request arrives during it: 1 - exp(-R x gap) of them at the ITL median (Poisson arrivals);
past a half the median gap is no longer a decode-only step.

Each row: the measurement, tpsim's number (median over ``--seeds`` seeds), the error
(tpsim / measured - 1) and tpsim's p99 / p50 of the same latency, which the source does
not give. Target: within 15%.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from functools import lru_cache
from pathlib import Path

from tpsim.cluster.nccl import topology_of
from tpsim.serving.engine import engine_parts, serve
from tpsim.sim.schedule import issue_bound
from tpsim.spec.model import load_model
from tpsim.spec.serve import split_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_rate_published import arguments, print_csv, read_rows, summary  # noqa: E402

DATA = (Path(__file__).resolve().parent.parent / "tests" / "data" / "published_serving" /
        "sglang-h200-datacrunch.csv")
MODELS = {"Llama 3.3 70B Instruct": "llama3-70b", "Llama 3.1 405B Instruct": "llama3-405b"}
# (column, metric label, the tpsim latency read)
ONLINE = [("median_ttft_ms", "TTFT p50 ms", "ttft_s"), ("median_itl_ms", "ITL p50 ms", "itl_s"),
          ("median_e2e_ms", "e2e p50 ms", "e2e_s")]
# SGLang of 2024 captures decode graphs for 1, 2, 4, 8, ..., 160 sequences
# (tpsim.serving.step_model.graph_batch gives the source; cuda_graph_max_bs 160)
GRAPH_MAX = 160
# SGLang v0.4's scheduler at its defaults (module docstring)
ENGINE = dict(separate_prefill=True, max_num_batched_tokens=8192, host_overlap=True,
              cuda_graph_align=8, cuda_graph_max_bs=GRAPH_MAX, eager_prefill=True,
              admission="sglang-0.4", decode_attention="flashinfer-0.1")
# max_num_reqs (module docstring) at context length 131072: 70B at TP 4 holds about 1.1M
# tokens of KV cache at mem_fraction_static 0.85 (128 GB of an H200's 150.7 less 35 GB of
# weights, at 81,920 bytes a token per GPU): 4,400 -> 4096; 405B at TP 8 about 0.46M at 0.87
# (131 GB less 101 GB, 64,512 bytes a token): 1,800 -> 2048
MAX_RUNNING = {"llama3-70b": 4096, "llama3-405b": 2048}


def published() -> list[dict]:
    """The CSV's rows, numbers as floats (request_rate inf for the offline rows)."""
    return read_rows(DATA, ("engine", "model", "hardware", "dataset", "source"))


def lengths(r: dict) -> dict:
    """tpsim's length settings of a published run (module docstring)."""
    if r["dataset"] == "random":
        i, o = int(r["random_input_len"]), int(r["random_output_len"])
        return dict(prompt=(1 + i) // 2, gen=(2 + o) // 2, prompt_dist=f"uniform:1,{i}",
                    gen_dist=f"uniform:2,{o}")
    return dict(prompt=round(r["total_input_tokens"] / r["completed"]),
                gen=round(r["total_output_tokens"] / r["completed"]),
                prompt_dist="exponential", gen_dist="exponential")


def case(r: dict) -> tuple:
    """(model, tp, headroom, rate, requests, the lengths as a tuple of items)."""
    return (MODELS[r["model"]], int(r["gpus"]), round(1 - r["mem_fraction_static"], 4),
            r["request_rate"], int(r["completed"]), tuple(lengths(r).items()))


@lru_cache(maxsize=None)
def run(model: str, tp: int, headroom: float, rate: float, requests: int, lens: tuple,
        seed: int):
    """tpsim serve of one published run with SGLang v0.4's scheduler (module docstring)."""
    return serve(model, "dgx-h200", tp=tp, rate=rate, requests=requests, seed=seed,
                 memory_headroom=headroom, allreduce="custom", max_num_seqs=MAX_RUNNING[model],
                 **dict(lens), **ENGINE)


def label(r: dict) -> str:
    model, tp, _, rate, *_ = case(r)
    data = (f"random {int(r['random_input_len'])}/{int(r['random_output_len'])}"
            if r["dataset"] == "random" else "ShareGPT")
    return f"{model} TP{tp} {data} " + ("offline" if math.isinf(rate) else f"{rate:g} req/s")


def past_graphs(r: dict) -> bool:
    """A Poisson run whose mean sequences in the engine, by Little's law the rate x the mean
    end-to-end latency (both published), exceed SGLang's largest CUDA graph, 160 sequences
    (GRAPH_MAX): its decode steps ran eagerly (module docstring)."""
    return r["request_rate"] * r["mean_e2e_ms"] * 1e-3 > GRAPH_MAX


def group(r: dict) -> str:
    """offline, "past graphs" (:func:`past_graphs`) or online."""
    if math.isinf(r["request_rate"]):
        return "offline"
    return "past graphs" if past_graphs(r) else "online"


def rows(seeds: int = 1, groups=("online", "past graphs", "offline")):
    """(group, label, metric, measured, tpsim, tpsim p99 / p50 or None) per value of the
    runs in ``groups`` (:func:`group`)."""
    for r in published():
        if group(r) not in groups:
            continue
        runs = [run(*case(r), s) for s in range(seeds)]
        lab = label(r)
        if math.isinf(r["request_rate"]):
            got = statistics.median(p.throughput.output_tokens_per_s for p in runs)
            yield "offline", lab, "output tok/s", r["output_tokens_per_s"], got, None
            continue
        g = group(r)
        for col, metric, attr in ONLINE:
            pct = [getattr(p.latency, attr) for p in runs]
            got = statistics.median(q.p50 for q in pct) * 1e3
            tail = statistics.median(q.p99 / q.p50 for q in pct)
            yield g, lab, metric, r[col], got, tail
        if g == "past graphs":
            got = statistics.median(p.throughput.output_tokens_per_s for p in runs)
            yield g, lab, "output tok/s", r["output_tokens_per_s"], got, None


@lru_cache(maxsize=None)
def step_model(model: str, tp: int, headroom: float):
    """The step-time tables tpsim's runs of ``model`` use (:func:`run`'s settings)."""
    lay, st = split_settings(None, None, dict(
        tp=tp, memory_headroom=headroom, allreduce="custom", max_num_seqs=MAX_RUNNING[model],
        **ENGINE), drafts=True)
    m = load_model(model)
    return engine_parts(m, topology_of("dgx-h200", lay.nccl), lay, st, 8192)[1]


def decoding(r: dict) -> tuple[float, float]:
    """(N, L): a Poisson run's mean sequences a decode step and their mean cache (module
    docstring)."""
    out = r["total_output_tokens"] / r["completed"]
    n = (r["output_tokens_per_s"] / out) * (r["mean_e2e_ms"] - r["median_ttft_ms"]) * 1e-3
    if r["dataset"] == "random":
        return n, (1 + r["random_input_len"]) / 2 + r["random_output_len"] / 3
    return n, r["total_input_tokens"] / r["completed"] + out


def step_points() -> list[tuple]:
    """(published row, N, L, tpsim's decode step, its attention's cache reads, the eager
    issue bound (0 in a graph)) of each Poisson run at its own batch (module docstring), s."""
    pts = []
    for r in published():
        if math.isinf(r["request_rate"]):
            continue
        model, tp, headroom, *_ = case(r)
        sm, (n, kv) = step_model(model, tp, headroom), decoding(r)
        b = max(1, round(n))
        host = issue_bound(0.0, sm.forward_ops, sm.eager_op_s) if sm.past_graphs(b) else 0.0
        pts.append((r, n, kv, float(sm.decode_step_s(b, b * kv)), sm.layers * sm.k * b * kv,
                    host))
    return pts


def step_lines() -> list[str]:
    """:func:`step_points` as lines, ms, with the share of the gaps that hold a prefill step."""
    lines = []
    for r, n, kv, got, attn, host in step_points():
        meas = r["median_itl_ms"]
        held = 1 - math.exp(-r["request_rate"] * meas * 1e-3)
        lines.append(f"  {label(r)}: {n:.0f} sequences of {kv:.0f} tokens, measured {meas:.2f} "
                     f"ms ({held:.0%} of gaps hold a prefill), tpsim {got * 1e3:.2f} "
                     f"({got * 1e3 / meas - 1:+.1%}; attention {attn * 1e3:.2f}, eager issue "
                     f"{host * 1e3:.2f})")
    return lines


def main(argv=None) -> int:
    args = arguments(__doc__).parse_args(argv)
    t0 = time.process_time()
    out = list(rows(args.seeds))
    if args.csv:
        print_csv(out, "group")
        return 0
    print(f"{'group':11s} {'case':38s} {'metric':12s} {'measured':>9s} {'tpsim':>9s} "
          f"{'error':>7s} {'p99/p50':>8s}")
    for g, lab, metric, meas, got, tail in out:
        cell = "" if tail is None else f"{tail:8.2f}"
        print(f"{g:11s} {lab:38s} {metric:12s} {meas:9.2f} {got:9.2f} {got / meas - 1:+7.1%} "
              f"{cell}".rstrip())
    print("\n".join(summary(out)))
    print("decode step at the published runs' own batches (Little's law, step_lines):")
    print("\n".join(step_lines()))
    print(f"({time.process_time() - t0:.1f} CPU s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
