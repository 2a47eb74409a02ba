"""tpsim serve beside published serving-engine benchmarks used in no fit.

    python bench/serve_published.py [--quick] [--csv] [--peer-python PATH]

Two sources, each with its engine's own workload, as tpsim serve runs it (the shipped
topologies as they are, FP8 GEMMs and KV cache as the FP8 checkpoints run them, vLLM's
default engine knobs: max_num_seqs 256, max_num_batched_tokens 8192, block_size 16):

* TensorRT-LLM's performance overview (docs/source/performance/perf-overview.md, v1.0, PyTorch
  backend, ``trtllm-bench throughput``): every request queued at once, fixed input/output
  lengths; total output tokens/s. tpsim: ``--rate inf`` over REQUESTS requests.
* NVIDIA NIM 1.8.0 LLM benchmarks (docs.nvidia.com/nim/benchmarking/llm/latest/
  performance.html, as tabulated in zivbeker42/llm-guesstimator/tested_benchmarks; copied to
  tests/data/published_serving, whose README gives the rows run and left out): a closed
  loop of C concurrent users (each sends its next request when the last one ends), fixed
  lengths; output tokens/s, the mean inter-token latency and the mean TTFT. tpsim: ``--users
  C`` over max(REQUESTS_MIN, 5 C) requests (the first C sent at once, each later one when one
  ends); TPOT mean as ITL; TTFT from each request's sending. With fixed lengths and every
  client starting at once, tpsim's clients stay in lockstep: a group of them finishes in one
  step and their next prompts prefill together. ``--steady`` runs the loaded rows as
  genai-perf measures them (:mod:`tpsim.serving.steady`): the clients' first sendings
  spread over one request's time, the numbers of the window after every client's first
  request and before the drain.

Little's law ties a closed loop's TTFT to its throughput X and ITL: TTFT = C gen / X -
(gen - 1) ITL. The script prints how closely the published rows obey it and how much a 1%
error in X moves their TTFT, and the TTFT errors as a share of one request's time, C gen / X.

Fitted on NIM rows (``--fit-host`` prints them; ServeSettings' defaults; each fitted with the
others as last fitted, three rounds, the same values after five), each left out of the
medians and marked ``(fit)``:

* the engine's host work per step (:mod:`tpsim.serving.host`): host_step_us and host_seq_us
  meet the ITLs of the two FIT rows (Llama 3.1 8B 200/200 at 25 and 100 users) exactly, by
  Newton's steps (the ITL is affine in the two where the front end paces no step: it checks
  that). TensorRT-LLM v1.0's PyTorch backend overlaps that work with the next step's forward
  (its overlap scheduler, on by default), so its rows run with ``host_overlap``;
* the front end (:mod:`tpsim.serving.frontend`): frontend_latency_us meets the TTFT of the
  FIT_LAT row (8B 200/200, one user: the latency + one prefill step) and frontend_token_us
  the FIT_FE row (8B 200/200 at 250 users), where its throughput and ITL err alike.
  ``trtllm-bench`` runs without a server, so its rows run with both at 0.

Each row prints the measurement, tpsim's number and the error (tpsim / measured - 1); the
target is within 15%.

Peers (``--peer-python``, the environment of bench/infer_peers.py): llm-analysis and GenZ
price a static batch, not an engine, so they answer only the closed-loop rows, read as a
static batch of C sequences: ITL = their decode step, throughput = C gen / (ttft + (gen - 1)
tpot), TTFT = their prefill of C prompts; and only for the 70B model, which their
configurations in bench/infer_peers_worker.py cover. The offline rows have no batch to give
them.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tpsim.serving.engine import serve
from tpsim.serving.steady import little_ttft_s, serve_steady

TRT = "TensorRT-LLM v1.0 perf-overview (trtllm-bench throughput, offline)"
NIM = "NVIDIA NIM 1.8.0 (closed loop of C users)"
REQUESTS = 1000
REQUESTS_MIN = 200

# (source, model, topology, tp, isl, osl, concurrency or None, metric, measured)
TRT_ROWS = [
    # Llama 3.1 8B, H100 TP1 FP8 (total output tokens/s)
    ("llama3-8b", "dgx-h100", 1, 128, 128, 28312), ("llama3-8b", "dgx-h100", 1, 128, 2048, 22714),
    ("llama3-8b", "dgx-h100", 1, 1000, 1000, 15220), ("llama3-8b", "dgx-h100", 1, 2048, 128, 3450),
    ("llama3-8b", "dgx-h100", 1, 5000, 500, 3459), ("llama3-8b", "dgx-h100", 1, 2048, 2048, 9305),
    # Llama 3.1 8B, H200 TP1 FP8
    ("llama3-8b", "dgx-h200", 1, 128, 2048, 26221), ("llama3-8b", "dgx-h200", 1, 1000, 1000, 17744),
    ("llama3-8b", "dgx-h200", 1, 2048, 128, 3538), ("llama3-8b", "dgx-h200", 1, 5000, 500, 3902),
    # Llama 3.3 70B (Llama 3 70B's architecture), H100 TP2 FP8
    ("llama3-70b", "dgx-h100", 2, 128, 128, 6378), ("llama3-70b", "dgx-h100", 2, 128, 2048, 6651),
    ("llama3-70b", "dgx-h100", 2, 1000, 1000, 4205), ("llama3-70b", "dgx-h100", 2, 2048, 128, 762),
    ("llama3-70b", "dgx-h100", 2, 5000, 500, 898), ("llama3-70b", "dgx-h100", 2, 2048, 2048, 3082),
    # Llama 3.3 70B, H200 TP1 FP8
    ("llama3-70b", "dgx-h200", 1, 128, 2048, 4336), ("llama3-70b", "dgx-h200", 1, 1000, 1000, 2909),
    ("llama3-70b", "dgx-h200", 1, 2048, 128, 442), ("llama3-70b", "dgx-h200", 1, 5000, 500, 566),
]
DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "published_serving"
NIM_FILES = {"llama3-8b": ("dgx-h100", 1, "nim-1.8.0-llama3.1-8b-1xh100-fp8.csv"),
             "llama3-70b": ("dgx-h100", 2, "nim-1.8.0-llama3.3-70b-2xh100-fp8.csv")}
# (model, isl, osl, concurrency) of the NIM rows run, in the order the script prints them
NIM_CASES = [
    ("llama3-8b", 200, 200, 25), ("llama3-8b", 200, 200, 100), ("llama3-8b", 200, 200, 250),
    ("llama3-8b", 1000, 1000, 25), ("llama3-8b", 1000, 1000, 100),
    ("llama3-8b", 1000, 1000, 250), ("llama3-8b", 5000, 500, 25), ("llama3-8b", 5000, 500, 100),
    ("llama3-70b", 200, 200, 25), ("llama3-70b", 200, 200, 100), ("llama3-70b", 200, 200, 250),
    ("llama3-70b", 1000, 1000, 25), ("llama3-70b", 1000, 1000, 100),
    ("llama3-70b", 500, 2000, 100), ("llama3-70b", 5000, 500, 25),
    # one user: no batching, each request alone (the 8B 200/200 row fits frontend_latency_us)
    ("llama3-8b", 200, 200, 1), ("llama3-8b", 500, 2000, 1), ("llama3-8b", 1000, 1000, 1),
    ("llama3-8b", 5000, 500, 1), ("llama3-70b", 200, 200, 1), ("llama3-70b", 500, 2000, 1),
    ("llama3-70b", 1000, 1000, 1), ("llama3-70b", 5000, 500, 1),
    # the same tables' other loads, where the HTTP front end nears its limit
    ("llama3-8b", 200, 200, 150), ("llama3-8b", 200, 200, 200), ("llama3-8b", 500, 2000, 25),
    ("llama3-8b", 500, 2000, 100), ("llama3-8b", 500, 2000, 150), ("llama3-8b", 500, 2000, 250),
    ("llama3-8b", 1000, 1000, 200), ("llama3-70b", 200, 200, 200),
    ("llama3-70b", 1000, 1000, 200),
]


def nim_rows() -> list[tuple]:
    """(model, topology, tp, isl, osl, concurrency, output tokens/s, ITL s, TTFT s) of each
    of NIM_CASES, read from tests/data/published_serving (its README gives the source)."""
    table = {}
    for model, (topo, tp, name) in NIM_FILES.items():
        with open(DATA / name, newline="") as f:
            for r in csv.DictReader(f):
                key = (model, int(r["input_tokens"]), int(r["output_tokens"]),
                       int(r["concurrency"]))
                table[key] = (model, topo, tp, *key[1:], float(r["Throughput_tokens_per_s"]),
                              float(r["ITL_ms"]) * 1e-3, float(r["TTFT_ms"]) * 1e-3)
    return [table[k] for k in NIM_CASES]


NIM_ROWS = nim_rows()
QUICK = {0, 2, 10, 12}       # --quick: a few rows of each source
FIT = {0, 1}                 # NIM rows whose ITLs fit host_step_us and host_seq_us
FIT_FE = {2}                 # the NIM row that fits frontend_token_us
FIT_LAT = {15}               # the NIM row whose TTFT fits frontend_latency_us


def _serve(model, topology, tp, isl, osl, requests, **knobs):
    # memory_headroom 0: the KV cache takes all the memory past the reserve, as these rows
    # were checked (not TensorRT-LLM's kv_cache_free_gpu_mem_fraction 0.9)
    return serve(model, topology, tp=tp, dtype="fp8", prompt=isl, gen=osl, rate=math.inf,
                 requests=requests, **{"memory_headroom": 0.0, **knobs})


def _nim(i: int, **knobs):
    model, topo, tp, isl, osl, c = NIM_ROWS[i][:6]
    return _serve(model, topo, tp, isl, osl, max(REQUESTS_MIN, 5 * c), users=c, **knobs)


def _nim_steady(i: int):
    """The NIM row ``i`` as genai-perf measures it (:mod:`tpsim.serving.steady`): the
    clients' first sendings staggered over one cycle, the numbers of the steady window."""
    model, topo, tp, isl, osl, c = NIM_ROWS[i][:6]
    return serve_steady(model, topo, tp=tp, dtype="fp8", prompt=isl, gen=osl, rate=math.inf,
                        requests=max(REQUESTS_MIN, 5 * c), users=c)[1]


def little_lines() -> list[str]:
    """Little's law on the published loaded rows: their TTFT against C gen / X - (gen - 1)
    ITL from their own throughput and ITL, and how much a 1% error in the throughput moves
    the TTFT there (:func:`tpsim.serving.steady.little_ttft_s`)."""
    errs, gain = [], []
    for _, _, _, _, osl, c, tput, itl, ttft in NIM_ROWS:
        if c > 1:
            errs.append(abs(little_ttft_s(c, osl, tput, itl) / ttft - 1))
            gain.append(c * osl / (tput * ttft))
    return [f"Little's law on the {len(errs)} published loaded rows: TTFT = C gen / X - "
            f"(gen - 1) ITL within median {statistics.median(errs):.1%}; a 1% error in X "
            f"moves the TTFT by {min(gain):.0f}% to {max(gain):.0f}% "
            f"(median {statistics.median(gain):.0f}%)"]


def cycle_lines(out) -> list[str]:
    """The loaded rows' TTFT errors as a share of one request's time in the loop, C gen / X
    (measured): well conditioned where the TTFT itself is not (:func:`little_lines`)."""
    cycle = {f"{m} {t} TP{tp} {i}/{o} C={c}": c * o / x
             for m, t, tp, i, o, c, x, *_ in NIM_ROWS if c > 1}
    errs = [abs(g - m) / cycle[lab] for s, lab, k, m, g in out
            if k == "TTFT mean s" and lab in cycle]
    if not errs:
        return []
    return [f"NIM 1.8.0, TTFT at 25-250 users, its error as a share of one request's time "
            f"(C gen / X): median {statistics.median(errs):.1%}, max {max(errs):.1%}"]


def fit_host(a: float = 500.0, b: float = 10.0, **fe) -> tuple[float, float]:
    """(host_step_us, host_seq_us) meeting the FIT rows' ITLs, the front end as ``fe``:
    Newton's steps from (a, b), the slopes from runs at a + 100 us and at b + 1 us. Where the
    front end paces no step the ITL is affine in the two and one step lands exactly; a second
    and third check it (--fit-host reports the front end's wait on these rows)."""
    def itl(i, a, b):
        return _nim(i, host_step_us=a, host_seq_us=b, **fe).latency.tpot_s.mean
    for _ in range(3):
        base = [itl(i, a, b) for i in sorted(FIT)]
        d_a = [(itl(i, a + 100.0, b) - t) / 100.0 for i, t in zip(sorted(FIT), base)]
        d_b = [(itl(i, a, b + 1.0) - t) / 1.0 for i, t in zip(sorted(FIT), base)]
        want = [NIM_ROWS[i][7] - t for i, t in zip(sorted(FIT), base)]
        da, db = np.linalg.solve(np.column_stack([d_a, d_b]), want)
        a, b = float(a + da), float(b + db)
    return a, b


def fit_latency(**knobs) -> float:
    """frontend_latency_us meeting the FIT_LAT row's TTFT: one user, so each request finds
    the engine idle and its TTFT is the latency + its prefill step, affine in the latency."""
    (i,) = FIT_LAT
    ttft = _nim(i, frontend_latency_us=0.0, **knobs).latency.ttft_s.mean
    return (NIM_ROWS[i][8] - ttft) * 1e6


def fit_frontend(**knobs) -> float:
    """frontend_token_us where the FIT_FE row's throughput and ITL err alike (tpsim /
    measured equal; the throughput's falls and the ITL's rises with it), which minimizes the
    larger of the two errors: bisection over 0-200 us, 30 halvings."""
    (i,) = FIT_FE
    tput, itl = NIM_ROWS[i][6:8]
    lo, hi = 0.0, 200.0
    for _ in range(30):
        fe = (lo + hi) / 2
        p = _nim(i, frontend_token_us=fe, **knobs)
        if p.throughput.output_tokens_per_s / tput > p.latency.tpot_s.mean / itl:
            lo = fe
        else:
            hi = fe
    return (lo + hi) / 2


def fit_all(rounds: int = 3) -> dict:
    """The four coefficients, each fitted with the others as last fitted, ``rounds`` times
    from the front end off (the rows each fits hardly depend on the others)."""
    k = dict(host_step_us=0.0, host_seq_us=0.0, frontend_token_us=0.0, frontend_latency_us=0.0)
    for _ in range(rounds):
        fe = {n: k[n] for n in ("frontend_token_us", "frontend_latency_us")}
        k["host_step_us"], k["host_seq_us"] = fit_host(k["host_step_us"] or 500.0,
                                                        k["host_seq_us"] or 10.0, **fe)
        k["frontend_latency_us"] = fit_latency(**{n: v for n, v in k.items()
                                                  if n != "frontend_latency_us"})
        k["frontend_token_us"] = fit_frontend(**{n: v for n, v in k.items()
                                                 if n != "frontend_token_us"})
    return k


def _one_user(label: str) -> bool:
    return "C=1" in label.split()


def _loaded(label: str) -> bool:
    return not _one_user(label)


# (source, metric, which rows) -> the summary line's qualifier
SUMMARY = {(TRT, "output tok/s", None): "", (NIM, "output tok/s", None): "",
           (NIM, "ITL (TPOT mean) s", None): "",
           (NIM, "TTFT mean s", _one_user): " at one user",
           (NIM, "TTFT mean s", _loaded): " at 25-250 users"}


def rows(quick: bool = False, steady: bool = False):
    """(source, label, metric, measured, tpsim) for every row; ``steady``: the loaded NIM rows
    in their steady state (:func:`_nim_steady`)."""
    for i, (model, topo, tp, isl, osl, meas) in enumerate(TRT_ROWS):
        if quick and i not in QUICK:
            continue
        p = _serve(model, topo, tp, isl, osl, REQUESTS, host_overlap=True,
                   frontend_token_us=0.0, frontend_latency_us=0.0)   # trtllm-bench: no server
        label = f"{model} {topo} TP{tp} {isl}/{osl}"
        yield TRT, label, "output tok/s", meas, p.throughput.output_tokens_per_s
    for i, (model, topo, tp, isl, osl, c, tput, itl, ttft) in enumerate(NIM_ROWS):
        if quick and i not in QUICK:
            continue
        fit = " (fit)" if i in FIT | FIT_FE | FIT_LAT else ""
        label = f"{model} {topo} TP{tp} {isl}/{osl} C={c}" + fit
        if steady and c > 1:
            w = _nim_steady(i)
            got = w.output_tokens_per_s, w.tpot_s.mean, w.ttft_s.mean
        else:
            p = _nim(i)
            got = p.throughput.output_tokens_per_s, p.latency.tpot_s.mean, p.latency.ttft_s.mean
        yield NIM, label, "output tok/s", tput, got[0]
        yield NIM, label, "ITL (TPOT mean) s", itl, got[1]
        yield NIM, label, "TTFT mean s", ttft, got[2]


def peer_rows(python: str | None) -> tuple[dict, str]:
    """{(label, metric): {tool: value}} for the closed-loop 70B rows (module docstring)."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from infer_peers import peer_values
    cases = [dict(id=f"{model} {topo} TP{tp} {isl}/{osl} C={c}", model=model, topology=topo,
                  tp=tp, batch=c, prompt=isl, gen=osl, dtype="fp8", kv_dtype="fp8")
             for model, topo, tp, isl, osl, c, *_ in NIM_ROWS if model == "llama3-70b"]
    got, why = peer_values(python, cases)
    out = {}
    for case in cases:
        for tool, v in got.get(case["id"], {}).items():
            if "error" in v:
                continue
            total = v["ttft_s"] + (case["gen"] - 1) * v["tpot_s"]
            out.setdefault((case["id"], "output tok/s"), {})[tool] = \
                case["batch"] * case["gen"] / total
            out.setdefault((case["id"], "ITL (TPOT mean) s"), {})[tool] = v["tpot_s"]
            out.setdefault((case["id"], "TTFT mean s"), {})[tool] = v["ttft_s"]
    return out, why


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few rows of each source")
    ap.add_argument("--csv", action="store_true", help="CSV instead of the table")
    ap.add_argument("--peer-python", default=None, help="the Python of the peers' environment")
    ap.add_argument("--steady", action="store_true",
                    help="the loaded NIM rows in their steady state: clients staggered, "
                         "numbers over the window after the warm-up, before the drain")
    ap.add_argument("--fit-host", action="store_true",
                    help="print the fitted host_step_us, host_seq_us and frontend_token_us")
    args = ap.parse_args(argv)
    if args.fit_host:
        k = fit_all()
        paced = [_nim(i, **k).scheduler.frontend_wait_s for i in sorted(FIT)]
        print(", ".join(f"{n} {v:.2f}" for n, v in k.items()) +
              f" (the front end's wait on the host fit's rows: {max(paced):.3g} s)")
        return 0
    t0 = time.process_time()
    out = list(rows(args.quick, args.steady))
    peers, why = peer_rows(args.peer_python)
    if args.csv:
        print("source,case,metric,measured,tpsim,error")
        for src, label, metric, meas, got in out:
            print(f'"{src}","{label}","{metric}",{meas:.6g},{got:.6g},{got / meas - 1:+.4f}')
        return 0
    print(f"{'case':44s} {'metric':18s} {'measured':>10s} {'tpsim':>10s} {'error':>7s}  "
          f"{'llm-analysis':>12s} {'GenZ':>7s}")
    for src in (TRT, NIM):
        print(f"-- {src}")
        for s, label, metric, meas, got in out:
            if s == src:
                peer = peers.get((label, metric), {})
                cells = "  ".join(f"{peer[t] / meas - 1:+{w}.1%}" if t in peer else " " * w
                                  for t, w in (("llm-analysis", 12), ("GenZ", 7)))
                print(f"{label:44s} {metric:18s} {meas:10.4g} {got:10.4g} "
                      f"{got / meas - 1:+7.1%}  {cells}")
    if why:
        print(f"peers: {why}")
    for src, metric, users in SUMMARY:
        errs = [abs(g / m - 1) for s, lab, k, m, g in out if s == src and k == metric
                and not lab.endswith("(fit)") and (users is None or users(lab))]
        if errs:
            within = sum(e <= 0.15 for e in errs)
            print(f"{src.split(' (')[0]}, {metric}{SUMMARY[src, metric, users]}: median "
                  f"|error| {statistics.median(errs):.1%}, {within} of {len(errs)} within 15%")
    print("\n".join(little_lines() + cycle_lines(out)))
    for tool in ("llm-analysis", "GenZ"):
        for metric in ("output tok/s", "ITL (TPOT mean) s", "TTFT mean s"):
            pairs = [(v[tool], m, g) for (label, k), v in peers.items() if tool in v
                     and k == metric for s, lab, kk, m, g in out if lab == label and kk == k]
            if pairs:
                errs = [abs(v / m - 1) for v, m, _ in pairs]
                ours = [abs(g / m - 1) for _, m, g in pairs]
                print(f"{tool}, {metric}, the {len(errs)} 70B closed-loop values: median "
                      f"|error| {statistics.median(errs):.1%} (tpsim {statistics.median(ours):.1%})")
    print(f"({time.process_time() - t0:.1f} CPU s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
