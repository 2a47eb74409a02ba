"""How fast tpsim answers, in CPU seconds (wall time on a shared machine is noise).

    python bench/predict_speed.py [--repeats 15] [--seconds 3]

* `tpsim predict --model gpt3 --tp 8` and `tpsim collective` as fresh processes: CPU seconds of
  each child (user + system, resource.getrusage): interpreter start, imports, YAML loading, the
  prediction and printing. Targets: predict <= 0.10 CPU s.
* `tpsim.predict_layer()` and `tpsim.predict()` calls per CPU second, in-process, on loaded model
  and topology objects: GPT-3 175B at TP 8 on dgx-h100 (targets >= 20,000/s and >= 10,000/s).
  Kernel prices are memoised per (device, op), as a sweep or a search reuses them; the same
  figures with a new sequence length at every call (nothing memoised: every op is made and
  priced afresh) show the cold cost.
* `tpsim.predict()` by names (``predict("gpt3", "dgx-h100", tp=8)``, and a 2-node pipeline with
  ``nodes=``): each call resolves the names and checks the files' versions, the YAML is read
  once (:mod:`tpsim.base.memo`) and the memos, keyed by value, serve the rest.
* The cold full training step: GPT-3 175B at TP 8, PP 8, DP 16, global batch 1536 (96
  micro-batches) on dgx-a100-hdr-cluster with ``nodes=128``, predictions per CPU second with a
  new sequence length at every call (every layer op priced afresh and the step simulated) and
  with the step memo emptied before every call (the step simulated afresh); by names with
  ``nodes=128`` at every call. Targets: >= 200/s cold, >= 100/s by names.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


# An installed package runs from cached bytecode; a child told not to write it would compile
# every module from source at every start (about 0.05 CPU s more), which no user sees.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def child_cpu_s(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, capture_output=True, env=CHILD_ENV)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_cpu(args: list[str], repeats: int) -> list[float]:
    cmd = [sys.executable, "-m", "tpsim", *args]
    child_cpu_s(cmd)                         # warm the file cache and write the bytecode
    return [child_cpu_s(cmd) for _ in range(repeats)]


def rate(call, seconds: float) -> tuple[float, int]:
    """Calls per CPU second of ``call(i)``, over about ``seconds`` of CPU."""
    call(0)
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        call(n)
        n += 1
    return n / (time.process_time() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    for label, argv in (("tpsim predict --model gpt3 --tp 8", ["predict", "--model", "gpt3",
                                                                 "--tp", "8"]),
                        ("tpsim collective --topology dgx-h100", ["collective"])):
        t = cli_cpu(argv, args.repeats)
        print(f"{label}: median {statistics.median(t):.3f} CPU s per process "
              f"(min {min(t):.3f}, max {max(t):.3f}, {len(t)} runs)")
    from tpsim import load_model, load_topology
    from tpsim.training.predict import predict, predict_layer
    model, topo = load_model("gpt3"), load_topology("dgx-h100")
    for fn in (predict_layer, predict):
        name = f"tpsim.{fn.__name__}()"
        r, n = rate(lambda i: fn(model, topo, tp=8), args.seconds)
        print(f"{name}: {r:,.0f} per CPU second (gpt3, tp 8, dgx-h100; {n} calls)")
        r, n = rate(lambda i: fn(model, topo, tp=8, seq_len=1024 + 8 * i), args.seconds / 3)
        print(f"{name}: {r:,.0f} per CPU second with a new sequence length at every call "
              f"(cold: nothing memoised; {n} calls)")
    for names, kwargs in ((("gpt3", "dgx-h100"), {"tp": 8}),
                          (("gpt3", "dgx-h100-ndr-cluster"), {"tp": 8, "pp": 2, "nodes": 2})):
        r, n = rate(lambda i: predict(*names, **kwargs), args.seconds)
        shown = ", ".join([*map(repr, names), *(f"{k}={v}" for k, v in kwargs.items())])
        print(f"tpsim.predict({shown}): {r:,.0f} per CPU second by names ({n} calls)")
    full_step(args.seconds)


def full_step(seconds: float) -> None:
    """The cold full-step figures (module docstring)."""
    from tpsim import load_model, load_topology
    from tpsim.training import step_accounting
    from tpsim.training.predict import predict
    model, topo = load_model("gpt3"), load_topology("dgx-a100-hdr-cluster")
    kw = dict(tp=8, pp=8, dp=16, global_batch=1536, nodes=128)
    shown = "gpt3, TP 8 PP 8 DP 16, global batch 1536, dgx-a100-hdr-cluster, nodes=128"
    r, n = rate(lambda i: predict(model, topo, seq_len=1024 + 8 * i, **kw), seconds)
    print(f"full step ({shown}): {r:,.0f} predictions per CPU second with a new sequence "
          f"length at every call ({n} calls)")

    def fresh(i):
        step_accounting._STEPS.clear()
        predict(model, topo, **kw)
    r, n = rate(fresh, seconds)
    print(f"full step: {r:,.0f} per CPU second with the step memo emptied at every call "
          f"({n} calls)")
    r, n = rate(lambda i: predict("gpt3", "dgx-a100-hdr-cluster", **kw), seconds)
    print(f"full step: {r:,.0f} per CPU second by names with nodes=128 ({n} calls)")


if __name__ == "__main__":
    main()
