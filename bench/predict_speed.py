"""How fast tpsim answers: CLI wall time of `tpsim predict --model gpt3 --tp 8`, and predictions
per second through the Python API.

    python bench/predict_speed.py [--repeats 15] [--seconds 3]

The CLI figure is the median wall time of fresh processes (interpreter start, imports, YAML
loading, the prediction and printing). The API figures are calls per second over a sweep of TP
degrees and micro-batch sizes on loaded model and topology objects: `predict_layer()` (one
layer: graph, pricing, two-stream schedule) and the full `predict()` (also the embedding and
output layers, memory and per-op rows).
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import subprocess
import sys
import time


def cli_wall_s(repeats: int) -> list[float]:
    cmd = [sys.executable, "-m", "tpsim", "predict", "--model", "gpt3", "--tp", "8"]
    subprocess.run(cmd, check=True, capture_output=True)          # warm the file cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def api_rate(seconds: float, layer_only: bool) -> tuple[float, int]:
    from tpsim import load_model, load_topology
    from tpsim.predict import predict, predict_layer
    call = predict_layer if layer_only else predict
    model, topo = load_model("gpt3"), load_topology("dgx-h100")
    sweep = itertools.cycle([(tp, b) for tp in (1, 2, 4, 8) for b in (1, 2, 4, 8)])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tp, b = next(sweep)
        call(model, topo, tp=tp, micro_batch=b)
        n += 1
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    times = cli_wall_s(args.repeats)
    print(f"tpsim predict --model gpt3 --tp 8: median {statistics.median(times) * 1e3:.0f} ms wall "
          f"(min {min(times) * 1e3:.0f}, max {max(times) * 1e3:.0f}, {len(times)} runs)")
    for layer_only, what in ((True, "tpsim.predict_layer(): layer"), (False, "tpsim.predict(): full")):
        rate, n = api_rate(args.seconds, layer_only)
        print(f"{what} predictions per second: {rate:.0f} ({n} calls, gpt3 on dgx-h100, "
              "tp 1-8, micro-batch 1-8)")


if __name__ == "__main__":
    main()
