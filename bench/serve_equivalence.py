"""Whether two checkouts' serving engines give the same numbers: every configuration of CASES
(`tpsim serve` and `tpsim serve-search` command lines) run by each, their full `--json`
output and, for every engine loop a command ran (a serve-search runs dozens), each request's
first and last token times, arrival (a closed loop's sending time), counts and the loop's
totals, compared at a relative 1e-12.

    python bench/serve_equivalence.py --against DIR [--save FILE] [--cases N] [--exact]
                                      [--ignore KEY ...]

DIR: the other checkout (the code before a change, say). Each checkout runs in a child process
of its own, importing tpsim from its own root. Prints each difference (the first 20) and the
count; exit status 1 where any. ``--exact``: numbers bit for bit (no 1e-12). ``--save``: this checkout's dump as JSON too. ``--ignore KEY``: the JSON keys named KEY not compared (``step_prices``, say, where the tables' pricing changed and their numbers did not); each such key's differences are counted apart. The cases cover
open and closed loops, offline runs, drawn lengths, caches small enough to preempt, chunked
prefill, the host overlap, SGLang's admissions, MoE and expert parallelism, pipelines, eager
prefill, CUDA-graph limits, FlashInfer 0.1's decode, multi-step and separate prefill, two kinds
of speculation, comma lists and both `serve-search` examples of the docs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = "serve --model "
L8 = S + "llama3-8b --tp 1 "
L7 = S + "llama2-7b --tp 1 "
L70 = S + "llama2-70b --tp 4 "
CASES = (
    L8 + "--requests 2000 --rate 20 --prompt 1024 --gen 128",
    L8 + "--requests 2000 --rate inf --prompt 1024 --gen 128",
    S + "llama2-70b --topology dgx-h100 --tp 8 --requests 1000 --rate 8 --prompt 1024 --gen 256 "
        "--prompt-dist exponential",
    L8 + "--requests 1500 --rate 10 --prompt 800 --gen 200 --prompt-dist exponential "
         "--gen-dist exponential --seed 2",
    S + "llama3-8b --tp 2 --requests 1000 --rate 30 --prompt 1024 --gen 256 "
        "--prompt-dist uniform:100,2000 --gen-dist uniform:10,500",
    L8 + "--requests 800 --users 16 --prompt 1024 --gen 128",
    L8 + "--requests 800 --users 64 --prompt 1024 --gen 256 --prompt-dist exponential "
         "--gen-dist exponential",
    L70 + "--requests 400 --rate inf --prompt 2048 --gen 512 --memory-headroom 0.45",
    L70 + "--requests 600 --rate 6 --prompt 2048 --gen 512 --gen-dist exponential "
          "--memory-headroom 0.45",
    L8 + "--requests 800 --rate 8 --prompt 4096 --gen 128 --max-num-batched-tokens 512",
    L8 + "--requests 1000 --rate 20 --prompt 1024 --gen 128 --host-overlap",
    L8 + "--requests 800 --users 32 --prompt 1024 --gen 128 --host-overlap "
         "--prompt-dist exponential",
    L8 + "--requests 1000 --rate 15 --prompt 1024 --gen 256 --admission sglang-0.3",
    L8 + "--requests 1000 --rate 15 --prompt 1024 --gen 256 --admission sglang-0.4 "
         "--gen-dist exponential",
    L70 + "--requests 500 --rate inf --prompt 2048 --gen 512 --memory-headroom 0.45 "
          "--admission sglang-0.4",
    L70 + "--requests 500 --rate 5 --prompt 2048 --gen 512 --memory-headroom 0.45 "
          "--admission sglang-0.3",
    S + "mixtral-8x7b --tp 2 --requests 800 --rate 10 --prompt 1024 --gen 256",
    S + "qwen3-30b-a3b --tp 1 --ep 2 --requests 800 --rate 20 --prompt 1024 --gen 256 "
        "--gen-dist exponential",
    L70 + "--pp 2 --requests 600 --rate 8 --prompt 1024 --gen 256",
    L8 + "--requests 1000 --rate 20 --prompt 1024 --gen 128 --eager-prefill",
    L8 + "--requests 1000 --rate 40 --prompt 1024 --gen 128 --cuda-graph-max-bs 32",
    S + "llama3-70b --tp 8 --requests 800 --rate 8 --prompt 1024 --gen 256 "
        "--decode-attention flashinfer-0.1 --admission sglang-0.3",
    L8 + "--requests 500 --rate 10 --prompt 1024 --gen 128 --eager",
    L8 + "--requests 1000 --rate 20 --prompt 1024 --gen 128 --num-scheduler-steps 8",
    L8 + "--requests 600 --users 24 --prompt 1024 --gen 128 --num-scheduler-steps 4 "
         "--gen-dist exponential",
    L8 + "--requests 1000 --rate 20 --prompt 1024 --gen 128 --separate-prefill",
    L8 + "--requests 500 --rate 10 --prompt 1024 --gen 128 --speculative eagle "
         "--num-speculative-tokens 3 --acceptance-rate 0.7",
    S + "llama2-70b --tp 8 --requests 300 --rate 4 --prompt 1024 --gen 128 "
        "--draft-model llama2-7b --num-speculative-tokens 4 --acceptance-rate 0.6",
    L8 + "--requests 600 --rate 1,4,inf --prompt 1024 --gen 128",
    L8 + "--requests 1000 --rate 25 --prompt 1024 --gen 128 --dtype fp8 --kv-dtype fp8 "
         "--block-size 32 --max-num-seqs 32",
    L8 + "--requests 1000 --rate 50 --prompt 512 --gen 512 --seed 3 --max-num-seqs 64 "
         "--gen-dist exponential",
    L7 + "--requests 800 --rate inf --prompt 2048 --gen 1024 --memory-headroom 0.5 "
         "--gen-dist exponential",
    L7 + "--requests 500 --users 64 --prompt 2048 --gen 1024 --memory-headroom 0.5 "
         "--host-overlap --gen-dist exponential",
    L7 + "--requests 400 --rate inf --prompt 2048 --gen 512 --memory-headroom 0.55 "
         "--num-scheduler-steps 4 --max-num-batched-tokens 1024",
    L7 + "--requests 400 --rate 20 --prompt 2048 --gen 512 --memory-headroom 0.55 "
         "--separate-prefill --gen-dist exponential",
    L7 + "--requests 400 --rate inf --prompt 2048 --gen 512 --memory-headroom 0.55 "
         "--admission sglang-0.4 --gen-dist exponential",
    "serve-search --model llama3-8b --gpus 4 --ttft-p99 0.3 --tpot-p99 0.02 --prompt 1024 "
    "--gen 128 --requests 100 --max-num-seqs 256 --usd-per-gpu-hour 3 --top 5",
    "serve-search --model llama3-70b --gpus 8 --ttft-p99 1 --tpot-p99 0.05 --prompt 1024 "
    "--gen 128",
)

# Run in a checkout's root: each case's JSON and its engine loops, as JSON on stdout.
CHILD = """
import contextlib, io, json, sys
import numpy as np
from tpsim.cli import main
from tpsim.serving import engine
loops, out = [], {}
run = engine.EngineLoop.run
ARRAYS = ("first", "last", "done", "arr", "computed", "tokens")
TOTALS = ("steps", "prefill_steps", "preemptions", "seq_steps", "prefill_busy_s",
          "decode_busy_s", "host_wait_s", "frontend_wait_s", "t", "wall", "free")
def kept(self):
    run(self)
    d = {k: np.asarray(getattr(self, k), dtype=float).tolist() for k in ARRAYS}
    d.update({k: float(getattr(self, k)) for k in TOTALS}, gaps=repr(self.gaps.percentiles()))
    loops.append(d)
engine.EngineLoop.run = kept
for line in json.loads(sys.argv[1]):
    loops.clear()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(line.split() + ["--json"])
    out[line] = {"rc": rc, "json": json.loads(buf.getvalue()) if rc == 0 else buf.getvalue(),
                 "loops": list(loops)}
print(json.dumps(out))
"""


def dump(root: str, cases) -> dict:
    """Every case run by the checkout at ``root`` (module docstring)."""
    env = {**os.environ, "PYTHONPATH": root}
    with tempfile.TemporaryFile("w+") as f:
        subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(cases))], cwd=root,
                       env=env, check=True, stdout=f)
        f.seek(0)
        return json.load(f)


def differences(a, b, path: str = "", tol: float = 1e-12, skip=frozenset()) -> list[str]:
    """Where ``a`` and ``b`` differ: keys, lengths, strings, numbers beyond ``tol`` relative
    (NaN equal to NaN); the values of the keys in ``skip`` are not compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k not in skip
                for d in differences(a[k], b[k], f"{path}.{k}", tol, skip)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b))
                for d in differences(x, y, f"{path}[{i}]", tol, skip)]
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        same = a == b or (math.isnan(a) and math.isnan(b)) or \
            abs(a - b) <= tol * max(abs(a), abs(b))
        return [] if same else [f"{path}: {a!r} against {b!r}"]
    return [] if a == b else [f"{path}: {str(a)[:60]!r} against {str(b)[:60]!r}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="the other checkout's root")
    ap.add_argument("--save", help="write this checkout's dump here (JSON)")
    ap.add_argument("--cases", type=int, default=len(CASES), help="the first N cases only")
    ap.add_argument("--exact", action="store_true", help="numbers bit for bit, no 1e-12")
    ap.add_argument("--ignore", action="append", default=[], metavar="KEY",
                    help="a JSON key whose values are not compared (repeatable)")
    args = ap.parse_args()
    cases = CASES[:args.cases]
    mine, theirs = dump(ROOT, cases), dump(os.path.abspath(args.against), cases)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(mine, f)
    tol = 0.0 if args.exact else 1e-12
    diffs = differences(theirs, mine, tol=tol, skip=frozenset(args.ignore))
    for d in diffs[:20]:
        print(d)
    loops = sum(len(v["loops"]) for v in mine.values())
    print(f"{len(cases)} configurations, {loops} engine loops: {len(diffs)} differences")
    if args.ignore:
        moved = len(differences(theirs, mine, tol=tol)) - len(diffs)
        print(f"  beside {moved} in the keys not compared ({', '.join(args.ignore)})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
