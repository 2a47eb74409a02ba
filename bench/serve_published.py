"""tpsim serve beside published serving-engine benchmarks used in no fit.

    python bench/serve_published.py [--quick] [--csv] [--peer-python PATH]

Two sources, each with its engine's own workload, as tpsim serve runs it (the shipped
topologies as they are, FP8 GEMMs and KV cache as the FP8 checkpoints run them, vLLM's
default engine knobs: max_num_seqs 256, max_num_batched_tokens 8192, block_size 16):

* TensorRT-LLM's performance overview (docs/source/performance/perf-overview.md, v1.0, PyTorch
  backend, ``trtllm-bench throughput``): every request queued at once, fixed input/output
  lengths; total output tokens/s. tpsim: ``--rate inf`` over REQUESTS requests.
* NVIDIA NIM 1.8.0 LLM benchmarks (docs.nvidia.com/nim/benchmarking/llm/latest/
  performance.html, as tabulated in zivbeker42/llm-guesstimator/tested_benchmarks): a closed
  loop of C concurrent users (each sends its next request when the last one ends), fixed
  lengths; output tokens/s and the mean inter-token latency. tpsim: every request queued at
  once with ``--max-num-seqs C`` (the engine holds C sequences, admits the next when one
  ends: a closed loop of C users) over max(REQUESTS_MIN, 5 C) requests; TPOT mean as ITL. The
  loop's TTFT is not compared: in tpsim's run it includes the queue's wait, which a closed
  loop's client never sees.

The engine's host work per step (:mod:`tpsim.serving.host`): TensorRT-LLM v1.0's PyTorch
backend overlaps it with the next step's forward (its overlap scheduler, on by default), so
its rows run with ``host_overlap``; the NIM rows with it between steps, as fitted: ``--fit-host``
solves host_step_us and host_seq_us (ServeSettings' defaults) so that the ITLs of the two
FIT rows (NIM, Llama 3.1 8B 200/200 at 25 and 100 users) are met exactly (with every request
queued at once the schedule does not depend on time, so the ITL is affine in the two). Those
two rows (their ITLs fitted, their throughputs tied to them) are marked ``(fit)`` and left
out of the medians.

Each row prints the measurement, tpsim's number and the error (tpsim / measured - 1); the
target is within 15%.

Peers (``--peer-python``, the environment of bench/infer_peers.py): llm-analysis and GenZ
price a static batch, not an engine, so they answer only the closed-loop rows, read as a
static batch of C sequences: ITL = their decode step, throughput = C gen / (ttft + (gen - 1)
tpot); and only for the 70B model, which their configurations in bench/infer_peers_worker.py
cover. The offline rows have no batch to give them.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np

from tpsim.serving.engine import serve

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
# (model, topology, tp, isl, osl, concurrency, output tokens/s, ITL s, TTFT s): NIM 1.8.0's
# tables for Llama 3.1 8B (1 H100, FP8) and Llama 3.3 70B (2 H100, FP8 TP2), as tabulated in
# llm-guesstimator's tested_benchmarks/nim_llama3.1_8b_v1.8.0_1xH100_80GB.csv and
# nim_llama33_70b_v1.8.0_2xH100_fp8TP2.csv (their TTFT_ms, ITL_ms, Throughput_tokens_per_s)
NIM_ROWS = [
    ("llama3-8b", "dgx-h100", 1, 200, 200, 25, 4678.88, 5.19e-3, 36.34e-3),
    ("llama3-8b", "dgx-h100", 1, 200, 200, 100, 12214.97, 7.57e-3, 119.97e-3),
    ("llama3-8b", "dgx-h100", 1, 200, 200, 250, 12964.72, 16.14e-3, 605.6e-3),
    ("llama3-8b", "dgx-h100", 1, 1000, 1000, 25, 4098.01, 5.84e-3, 268.42e-3),
    ("llama3-8b", "dgx-h100", 1, 1000, 1000, 100, 9392.43, 10.04e-3, 615.16e-3),
    ("llama3-8b", "dgx-h100", 1, 1000, 1000, 250, 11527.61, 19.68e-3, 1885.04e-3),
    ("llama3-8b", "dgx-h100", 1, 5000, 500, 25, 2251.44, 9.67e-3, 724.14e-3),
    ("llama3-8b", "dgx-h100", 1, 5000, 500, 100, 3180.16, 29.67e-3, 915.15e-3),
    ("llama3-70b", "dgx-h100", 2, 200, 200, 25, 1178.68, 20.61e-3, 138.98e-3),
    ("llama3-70b", "dgx-h100", 2, 200, 200, 100, 3263.31, 29.87e-3, 176.8e-3),
    ("llama3-70b", "dgx-h100", 2, 200, 200, 250, 5067.05, 48.16e-3, 264.22e-3),
    ("llama3-70b", "dgx-h100", 2, 1000, 1000, 25, 1102.23, 22.45e-3, 250.49e-3),
    ("llama3-70b", "dgx-h100", 2, 1000, 1000, 100, 2895.49, 34.21e-3, 334.23e-3),
    ("llama3-70b", "dgx-h100", 2, 500, 2000, 100, 3322.87, 29.98e-3, 229.77e-3),
    ("llama3-70b", "dgx-h100", 2, 5000, 500, 25, 623.4, 38.75e-3, 688.69e-3),
    # the same tables' other loads, where the HTTP front end nears its limit
    ("llama3-8b", "dgx-h100", 1, 200, 200, 150, 12988.89, 9.81e-3, 346.53e-3),
    ("llama3-8b", "dgx-h100", 1, 200, 200, 200, 13348.4, 12.65e-3, 465.18e-3),
    ("llama3-8b", "dgx-h100", 1, 500, 2000, 25, 4263.49, 5.82e-3, 97.07e-3),
    ("llama3-8b", "dgx-h100", 1, 500, 2000, 100, 10379.22, 9.51e-3, 239.92e-3),
    ("llama3-8b", "dgx-h100", 1, 500, 2000, 150, 11053.75, 13.34e-3, 376.95e-3),
    ("llama3-8b", "dgx-h100", 1, 500, 2000, 250, 12268.82, 16.97e-3, 6550.46e-3),
    ("llama3-8b", "dgx-h100", 1, 1000, 1000, 200, 11553.34, 16.02e-3, 1258.79e-3),
    ("llama3-70b", "dgx-h100", 2, 200, 200, 200, 4534.54, 42.95e-3, 253.36e-3),
    ("llama3-70b", "dgx-h100", 2, 1000, 1000, 200, 3901.74, 50.66e-3, 558.23e-3),
]
QUICK = {0, 2, 10, 12}       # --quick: a few rows of each source
FIT = {0, 1}                 # NIM rows whose ITLs fit host_step_us and host_seq_us
FIT_FE = {2}                 # the NIM row that fits frontend_token_us


def _serve(model, topology, tp, isl, osl, seqs, requests, **knobs):
    return serve(model, topology, tp=tp, dtype="fp8", prompt=isl, gen=osl, rate=math.inf,
                 requests=requests, max_num_seqs=seqs, **knobs)


def _nim(i: int, **knobs):
    model, topo, tp, isl, osl, c = NIM_ROWS[i][:6]
    return _serve(model, topo, tp, isl, osl, c, max(REQUESTS_MIN, 5 * c), **knobs)


def _nim_itl(i: int, a_us: float, b_us: float) -> float:
    return _nim(i, host_step_us=a_us, host_seq_us=b_us, frontend_token_us=0.0).latency.tpot_s.mean


def fit_host() -> tuple[float, float]:
    """(host_step_us, host_seq_us) meeting the FIT rows' ITLs, the front end off (it does
    not pace those rows at the fitted frontend_token_us: --fit-host checks it): ITL_i =
    ITL_i(0, 0) + a x d_a,i + b x d_b,i, the slopes from runs at a = 1000 us and at b = 10 us."""
    base = [_nim_itl(i, 0.0, 0.0) for i in sorted(FIT)]
    d_a = [(_nim_itl(i, 1000.0, 0.0) - t) / 1000.0 for i, t in zip(sorted(FIT), base)]
    d_b = [(_nim_itl(i, 0.0, 10.0) - t) / 10.0 for i, t in zip(sorted(FIT), base)]
    want = [NIM_ROWS[i][7] - t for i, t in zip(sorted(FIT), base)]
    a, b = np.linalg.solve(np.column_stack([d_a, d_b]), want)
    return float(a), float(b)


def fit_frontend(a_us: float, b_us: float) -> float:
    """frontend_token_us where the FIT_FE row's throughput and ITL err alike (tpsim /
    measured equal; the throughput's falls and the ITL's rises with it), which minimizes the
    larger of the two errors: bisection over 0-200 us, 30 halvings."""
    (i,) = FIT_FE
    tput, itl = NIM_ROWS[i][6:8]
    lo, hi = 0.0, 200.0
    for _ in range(30):
        fe = (lo + hi) / 2
        p = _nim(i, host_step_us=a_us, host_seq_us=b_us, frontend_token_us=fe)
        if p.throughput.output_tokens_per_s / tput > p.latency.tpot_s.mean / itl:
            lo = fe
        else:
            hi = fe
    return (lo + hi) / 2


def closed_loop_ttft(p, users: int) -> float:
    """The mean TTFT a closed loop of ``users`` clients sees: each request after the first
    ``users`` is sent when a slot frees (the k-th request admitted replaces the (k - users)-th
    to finish), so its TTFT counts from that finish, not from the run's start; the first
    ``users`` requests (the loop's start) are left out."""
    first, last = np.asarray(p.ttft), np.sort(np.asarray(p.e2e))
    return float(np.mean(first[users:] - last[:len(first) - users]))


def rows(quick: bool = False):
    """(source, label, metric, measured, tpsim) for every row."""
    for i, (model, topo, tp, isl, osl, meas) in enumerate(TRT_ROWS):
        if quick and i not in QUICK:
            continue
        p = _serve(model, topo, tp, isl, osl, 256, REQUESTS, host_overlap=True,
                   frontend_token_us=0.0)          # trtllm-bench: no HTTP server
        label = f"{model} {topo} TP{tp} {isl}/{osl}"
        yield TRT, label, "output tok/s", meas, p.throughput.output_tokens_per_s
    for i, (model, topo, tp, isl, osl, c, tput, itl, ttft) in enumerate(NIM_ROWS):
        if quick and i not in QUICK:
            continue
        p = _nim(i)
        fit = " (fit)" if i in FIT | FIT_FE else ""
        label = f"{model} {topo} TP{tp} {isl}/{osl} C={c}" + fit
        yield NIM, label, "output tok/s", tput, p.throughput.output_tokens_per_s
        yield NIM, label, "ITL (TPOT mean) s", itl, p.latency.tpot_s.mean
        yield NIM, label, "TTFT mean s", ttft, closed_loop_ttft(p, c)


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
    return out, why


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few rows of each source")
    ap.add_argument("--csv", action="store_true", help="CSV instead of the table")
    ap.add_argument("--peer-python", default=None, help="the Python of the peers' environment")
    ap.add_argument("--fit-host", action="store_true",
                    help="print the fitted host_step_us, host_seq_us and frontend_token_us")
    args = ap.parse_args(argv)
    if args.fit_host:
        a, b = fit_host()
        fe = fit_frontend(a, b)
        paced = [_nim(i, host_step_us=a, host_seq_us=b, frontend_token_us=fe)
                 .scheduler.frontend_wait_s for i in sorted(FIT)]
        print(f"host_step_us {a:.1f}, host_seq_us {b:.2f}, frontend_token_us {fe:.2f} (the "
              f"front end's wait on the host fit's rows: {max(paced):.3g} s)")
        return 0
    t0 = time.process_time()
    out = list(rows(args.quick))
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
    for src in (TRT, NIM):
        for metric in ("output tok/s", "ITL (TPOT mean) s", "TTFT mean s"):
            errs = [abs(g / m - 1) for s, lab, k, m, g in out
                    if s == src and k == metric and not lab.endswith("(fit)")]
            if errs:
                within = sum(e <= 0.15 for e in errs)
                print(f"{src.split(' (')[0]}, {metric}: median |error| "
                      f"{statistics.median(errs):.1%}, {within} of {len(errs)} within 15%")
    for tool in ("llm-analysis", "GenZ"):
        pairs = [(v[tool], m) for (label, k), v in peers.items() if tool in v
                 for s, lab, kk, m, _ in out if lab == label and kk == k]
        if pairs:
            errs = [abs(v / m - 1) for v, m in pairs]
            ours = [abs(g / m - 1) for s, lab, k, m, g in out if (lab, k) in peers]
            print(f"{tool} on the {len(errs)} closed-loop 70B values: median |error| "
                  f"{statistics.median(errs):.1%} (tpsim {statistics.median(ours):.1%})")
    print(f"({time.process_time() - t0:.1f} CPU s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
