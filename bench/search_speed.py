"""How fast `tpsim search` prices layouts, in CPU seconds of one core (wall time on a shared
machine is noise).

    python bench/search_speed.py [--repeats 3]

For GPT-3 175B on 512 A100s (dgx-a100-hdr-cluster, global batch 1536) and Llama 3 70B on 64
H100s (dgx-h100-ndr-cluster, global batch 128), in a fresh process each time, with one BLAS
thread as the `tpsim` command runs (more threads only spin between the small matrix products,
and their CPU time counts):

* pricing: enumerate every layout, simulate each layer configuration once, bound every layout's
  step and compute its memory (tpsim.search.driver's first phase), CPU seconds and layouts per CPU
  second (target: >= 20,000 per CPU second; the GPT-3 search must price >= 10,000 layouts);
  of which the layer simulations (a fixed cost per layer configuration);
* re-pricing: the finalists simulated by tpsim.predict until the next bound exceeds the 10th
  best (a fixed number of step simulations, not per layout), CPU seconds and count;
* the bound's largest gap to the simulated step among the finalists;
* whole searches as the command runs them (``python -m tpsim search``, one process each):
  GPT-3 on 64 and 512 A100s (global batch 512 and 1536) and Llama 3 405B on 512 A100s
  (dgx-a100-hdr-cluster, global batch 1536), the process's CPU seconds (user + system,
  interpreter start and imports included) and its maximum resident memory (targets: <= 1.5
  CPU s and <= 400 MB for GPT-3, <= 3 CPU s for Llama 3 405B);
* serving, whole processes likewise: ``tpsim serve-search`` as docs/serving.md runs it (Llama
  3 8B on 4 H100s, 100 requests a run) and as the README does (Llama 3 70B on 8), and
  ``tpsim serve`` of 5,000 and of 20,000 requests (Llama 3 8B, TP 1, 20 requests/s) and of
  5,000 offline (``--rate inf``), CPU seconds, the median of the repeats (the difference of
  the first two over 15,000: the engine loop's time per request).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASES = (("gpt3", "dgx-a100-hdr-cluster", 512, 1536),
         ("llama3-70b", "dgx-h100-ndr-cluster", 64, 128))

WHOLE = (("gpt3", 64, 512), ("gpt3", 512, 1536), ("llama3-405b", 512, 1536))

SERVING = ("serve-search --model llama3-8b --gpus 4 --ttft-p99 0.3 --tpot-p99 0.02 --prompt 1024 "
           "--gen 128 --requests 100 --max-num-seqs 256 --usd-per-gpu-hour 3 --top 5",
           "serve-search --model llama3-70b --gpus 8 --ttft-p99 1 --tpot-p99 0.05 --prompt 1024 "
           "--gen 128",
           "serve --model llama3-8b --tp 1 --requests 5000 --rate 20 --prompt 1024 --gen 128",
           "serve --model llama3-8b --tp 1 --requests 20000 --rate 20 --prompt 1024 --gen 128",
           "serve --model llama3-8b --tp 1 --requests 5000 --rate inf --prompt 1024 --gen 128")

# The command in a child that reports its own CPU time and peak memory (getrusage: the peak of
# the process, its pool workers included by RUSAGE_CHILDREN, none with --jobs 1).
WHOLE_CHILD = """
import json, os, resource, sys
from tpsim.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                  "rss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024}), file=sys.stderr)
"""

CHILD = """
import json, sys, time
from tpsim.search import driver as s
from tpsim.search import parts as search_step
model, topo, gpus, gb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.process_time()
with s.paused_gc():
    run, layouts, dropped = s._priced(model, topo, gpus, gb, None, None, None, 10, 1, False)
    with s.Workers(run) as w:
        t1 = time.process_time()
        for lay in layouts:
            search_step.layer_parts(run, lay.tp, lay.micro_batch, lay.sequence_parallel,
                                    lay.recompute, lay.tp_comm_overlap, cp=lay.cp, ep=lay.ep,
                                    expert_tp=lay.expert_tp, cp_comm=lay.cp_comm,
                                    world=lay.tp * lay.cp * lay.pp * lay.dp)
        t2 = time.process_time()
        priced = s.bound_layouts(w, layouts)
        t3 = time.process_time()
        ranked = s._ranked(layouts, priced, range(len(layouts)))
        cands = s.reprice(w, ranked, 10)
        t4 = time.process_time()
gap = max((c.step_s - c.bound_s) / c.step_s for c in cands)
print(json.dumps({"layouts": len(layouts), "fitting": len(ranked), "pricing_s": t3 - t0,
                  "layers_s": t2 - t1, "repriced": len(cands), "repricing_s": t4 - t3,
                  "gap": gap, "best": min(c.step_s for c in cands)}))
"""


def measure(case) -> dict:
    # one BLAS thread, as `tpsim` runs (tpsim/cli/__init__.py): "one core"
    env = {**os.environ, **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                             "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, case)], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def whole(model: str, gpus: int, global_batch: int) -> dict:
    """CPU seconds and peak memory of one ``tpsim search`` process."""
    return command(["search", "--model", model, "--topology", "dgx-a100-hdr-cluster", "--gpus",
                    str(gpus), "--global-batch", str(global_batch)])


def command(argv: list[str]) -> dict:
    """CPU seconds and peak memory of one ``tpsim`` process running ``argv``."""
    err = subprocess.run([sys.executable, "-c", WHOLE_CHILD, *argv], check=True,
                         capture_output=True, text=True, env=_env()).stderr
    return json.loads(err.strip().splitlines()[-1])


def _env() -> dict:
    return {**os.environ, **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                              "MKL_NUM_THREADS")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for case in CASES:
        runs = [measure(case) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["pricing_s"])
        model, topo, gpus, gb = case
        print(f"{model} on {gpus} GPUs of {topo}, global batch {gb} (best of {args.repeats}):")
        print(f"  priced {best['layouts']:,} layouts ({best['fitting']:,} fit) in "
              f"{best['pricing_s']:.2f} CPU s: {best['layouts'] / best['pricing_s']:,.0f} "
              f"layouts per CPU second (of which layer simulations {best['layers_s']:.2f} s)")
        print(f"  re-priced {best['repriced']} finalists with the step simulation in "
              f"{best['repricing_s']:.2f} CPU s; the bound within {best['gap'] * 100:.2f}% of "
              f"them; best step {best['best']:.3f} s")
    for model, gpus, gb in WHOLE:
        runs = [whole(model, gpus, gb) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["cpu_s"])
        print(f"tpsim search --model {model} --gpus {gpus} --global-batch {gb} "
              f"(dgx-a100-hdr-cluster, best of {args.repeats}): {best['cpu_s']:.2f} CPU s, "
              f"max RSS {max(r['rss_mb'] for r in runs):.0f} MB")
    serve = {}
    for line in SERVING:
        runs = sorted(command(line.split())["cpu_s"] for _ in range(args.repeats))
        serve[line] = median = runs[len(runs) // 2]
        print(f"tpsim {line} (median of {args.repeats}): {median:.2f} CPU s (best {runs[0]:.2f})")
    per = (serve[SERVING[3]] - serve[SERVING[2]]) / 15000
    print(f"tpsim serve's engine loop: {per * 1e6:.0f} CPU us per request")


if __name__ == "__main__":
    main()
