"""Vidur (microsoft/vidur) on bench/serve_rate_published.py's runs: a peer, never a dependency.

    python bench/serve_rate_published.py --vidur-python PATH --vidur-dir DIR

Vidur simulates an engine under a request rate as tpsim serve does: its vLLM scheduler, each
operation's time predicted by random forests trained on kernels profiled on the GPU (its
``data/profiling``). It runs in an environment of its own (``PATH``: the Python of a venv with
Vidur's requirements.txt) from a checkout of its repository (``DIR``, with the profiles), as
``python -m vidur.main`` with flat flags; the random forests are trained on the first run of a
model and cached under ``CACHE``.

Settings (:func:`vidur_flags`): the replica scheduler ``vllm`` with vLLM v0.6.0's defaults the
published runs kept (``max_num_seqs`` 256 as ``batch_size_cap``; ``max_num_batched_tokens``
4096 as ``max_tokens_in_batch``; 16-token KV blocks), one replica at the row's TP, the
random forests of one setting (250 trees, depth 32, split 2: Vidur's default searches 27 by
10-fold validation, CPU hours on two cores), and the
requests as a trace (``trace_replay``): the arrival times and lengths of tpsim's own run of the
row (:func:`tpsim.serving.arrivals.draw_requests` with the same seed and means), so both
simulators serve the same requests; offline, every request at t = 0. Vidur has no multi-step
scheduling (vLLM's ``--num-scheduler-steps 10``) and no SGLang scheduler: its one run of each
model and rate stands beside both engines' rows.

Read back (:func:`medians`), from the run's ``request_metrics.csv``: TTFT = ``prefill_e2e_time``,
e2e = ``request_e2e_time``, TPOT = (e2e - TTFT) / (output - 1) per request as the source
defines it (Vidur's ``request_num_decode_tokens`` counts the token the prefill yields, as
tpsim's ``gen`` does), each the median over the requests; offline, output tokens over the last
completion.

Models (MODELS): Vidur's profiles of Meta-Llama-3-8B on A100 serve Llama 3.1 8B (the same
layers; 3.1 changes only RoPE's scaling and the context length). For Llama 3.1 70B on H100 it
has only Llama-2-70b-hf (the same layers: hidden 8192, 64 query and 8 KV heads, MLP 28672, 80
layers; its 32k vocabulary against 128k, which Vidur does not price: it models no LM head).
"""
from __future__ import annotations

import csv
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tpsim.serving.arrivals import draw_requests

COMMIT = "7d47513363ec447a741ac5e47241580b47724fbf"    # microsoft/vidur, 2024-11-19
CACHE = Path(tempfile.gettempdir()) / "vidur-cache"
# the bench's metric -> (Vidur's value, scale)
VALUES = {"TTFT p50 ms": ("ttft_s", 1e3), "TPOT p50 ms": ("tpot_s", 1e3),
          "e2e p50 ms": ("e2e_s", 1e3), "output tok/s": ("output_tokens_per_s", 1.0)}
# tpsim's (model, topology, tp) -> Vidur's (model, device, network device)
MODELS = {("llama3-8b", "dgx-a100", 1): ("meta-llama/Meta-Llama-3-8B", "a100",
                                         "a100_pairwise_nvlink"),
          ("llama3-70b", "dgx-h100", 4): ("meta-llama/Llama-2-70b-hf", "h100", "h100_dgx")}


def missing_profiles(vidur_dir: Path, key: tuple) -> list[str]:
    """The profile files Vidur needs for ``key`` (MODELS) that ``vidur_dir`` lacks."""
    model, device, network = MODELS[key]
    need = [f"data/profiling/compute/{device}/{model}/{f}" for f in ("mlp.csv", "attention.csv")]
    if key[2] > 1:
        need.append(f"data/profiling/network/{network}/all_reduce.csv")
    return [p for p in need if not (vidur_dir / p).is_file()]


def write_trace(path: Path, n: int, rate: float, seed: int, prompt: int, gen: int) -> None:
    """tpsim's run's requests (arrival s, prompt and output tokens) as Vidur's trace CSV."""
    reqs = draw_requests(n, rate, seed, prompt, gen, "exponential", "exponential")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        w.writerows(zip(np.round(reqs.arrival_s, 9), reqs.prompt, reqs.gen))


def vidur_flags(key: tuple, trace: Path, out: Path) -> list[str]:
    """``vidur.main``'s flags for a run of ``key``'s model on ``trace`` (module docstring)."""
    model, device, network = MODELS[key]
    rf = "random_forrest_execution_time_predictor_config"
    return ["--replica_config_model_name", model, "--replica_config_device", device,
            "--replica_config_network_device", network,
            "--replica_config_tensor_parallel_size", str(key[2]),
            "--cluster_config_num_replicas", "1",
            "--request_generator_config_type", "trace_replay",
            "--trace_request_generator_config_trace_file", str(trace),
            "--trace_request_generator_config_max_tokens", "4096",
            "--replica_scheduler_config_type", "vllm",
            "--vllm_scheduler_config_batch_size_cap", "256",
            "--vllm_scheduler_config_max_tokens_in_batch", "4096",
            f"--{rf}_prediction_max_batch_size", "256",
            f"--{rf}_prediction_max_tokens_per_request", "4096",
            f"--{rf}_num_estimators", "250", f"--{rf}_max_depth", "32",
            f"--{rf}_min_samples_split", "2", f"--{rf}_k_fold_cv_splits", "2",
            "--metrics_config_output_dir", str(out), "--metrics_config_cache_dir", str(CACHE),
            "--no-metrics_config_store_plots", "--no-metrics_config_enable_chrome_trace",
            "--no-metrics_config_store_batch_metrics",
            "--no-metrics_config_store_utilization_metrics"]


def medians(path: Path) -> dict:
    """TTFT, TPOT and e2e medians (s) and output tokens/s of a run's request_metrics.csv
    (module docstring)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("request_e2e_time")]
    e2e = [float(r["request_e2e_time"]) for r in rows]
    ttft = [float(r["prefill_e2e_time"]) for r in rows]
    out = [float(r["request_num_decode_tokens"]) for r in rows]
    tpot = [(e - t) / (o - 1) for e, t, o in zip(e2e, ttft, out) if o > 1]
    return dict(ttft_s=statistics.median(ttft), tpot_s=statistics.median(tpot),
                e2e_s=statistics.median(e2e), output_tokens_per_s=sum(out) / max(e2e),
                requests=len(rows))


def run_vidur(python: str, vidur_dir: str, key: tuple, rate: float, n: int, seed: int,
              prompt: int, gen: int) -> dict:
    """Vidur's medians (:func:`medians`) of one run, or {"error": why}."""
    root = Path(vidur_dir)
    lacking = missing_profiles(root, key)
    if lacking:
        return {"error": f"{root} lacks Vidur's profile {', '.join(lacking)}"}
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.csv"
        write_trace(trace, n, rate, seed, prompt, gen)
        try:
            r = subprocess.run([python, "-m", "vidur.main", *vidur_flags(key, trace, Path(tmp))],
                               cwd=root, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {"error": f"vidur.main did not run: {e}"}
        found = sorted(Path(tmp).glob("*/request_metrics.csv"))
        if r.returncode or not found:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"vidur.main failed: {tail}"}
        got = medians(found[-1])
    if got["requests"] != n:
        return {"error": f"Vidur served {got['requests']} of {n} requests"}
    return got


def vidur_values(python: str | None, vidur_dir: str | None, cases: list[dict]) -> tuple[dict, str]:
    """{case id: Vidur's medians} of ``cases`` (dicts of id, key, rate, requests, seed, prompt,
    gen; rate inf: offline), each run once, and a line: the commit run, or why a case did not
    run."""
    if not python or not vidur_dir:
        return {}, "not run: give --vidur-python and --vidur-dir (bench/serve_rate_vidur.py)"
    got, why = {}, {}
    for c in cases:
        v = run_vidur(python, vidur_dir, c["key"], c["rate"], c["requests"], c["seed"],
                      c["prompt"], c["gen"])
        if "error" in v:
            why.setdefault(v["error"], []).append(c["id"])
        else:
            got[c["id"]] = v
    return got, "; ".join([f"{vidur_dir} at {checkout_commit(vidur_dir)} (the settings' "
                           f"{COMMIT[:10]})"] + [f"{', '.join(ids)} not run: {e}"
                                                 for e, ids in why.items()])


def checkout_commit(vidur_dir: str) -> str:
    """The commit checked out in ``vidur_dir`` (its first 10 digits), or "an unknown commit"
    where it is no git checkout of its own."""
    if not (Path(vidur_dir) / ".git").exists():
        return "an unknown commit"
    try:
        r = subprocess.run(["git", "-C", vidur_dir, "rev-parse", "HEAD"], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "an unknown commit"
    return r.stdout.strip()[:10] if r.returncode == 0 else "an unknown commit"
