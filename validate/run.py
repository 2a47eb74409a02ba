"""Validate tpsim on real tensor-parallel layers: correctness, calibration, prediction error.

    torchrun --nproc_per_node N validate/run.py [--out DIR] [--quick] [--topology YAML]

NCCL with one GPU per local rank (bf16) where CUDA is there, gloo on CPU (fp32, one thread per
rank). Stages, every rank in step:
  1. correctness  ColumnParallel/RowParallel linears, ParallelMLP (GELU, SwiGLU) and
                  ParallelAttention (MHA, GQA) against a single-device reference: forward output
                  and every gradient, with and without sequence parallelism; a mismatch fails.
  2. microbench   all-reduce, all-gather, reduce-scatter over a size sweep, in one node and
                  (several nodes) across all; every compute op tpsim's graph prices for the
                  FIT shapes' blocks, forward and backward, as the layers run it; a GEMM grid.
  3. fit          tpsim.calibrate.fitting least squares through tpsim's own pricing, the device and
                  each level on its own -> DIR/calibrated.yaml (--topology: your file, refitted).
  4. layers       ParallelMLP, ParallelAttention and the naive MLP on the EVAL shapes (never
                  the fit's), forward and forward+backward, with the matmul/collective split.
  5. report       tpsim's prediction with the calibrated topology -> DIR/report.json, report.md.
A rank that fails ends the run with a message naming the rank that failed first and its
exception; a rank killed without a word, or a collective that waits longer than --timeout (a rank
hangs), with one naming the rank that is gone or stopped reporting.
"""
from __future__ import annotations

import argparse
import ctypes
import math
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import shapes as S  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """Bad flags: one line, exit 2, printed by rank 0 only (every torchrun rank parses them)."""

    def error(self, message):
        _exit_bad(f"{self.prog}: error: {message}")


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _exit_bad(line: str) -> None:
    if _rank() == 0:
        sys.stderr.write(line + "\n")
    sys.exit(2)


MAX_TIMEOUT_S = 7 * 86400    # a week: past it a collective's timedelta overflows (1e300 s)


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() and "_" not in text else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, at most "
                                         f"{MAX_TIMEOUT_S}, got {text[:60]!r}")
    return value


def _threads(text: str) -> int:
    """CPU threads per rank: 1 .. the machine's cores (ASCII digits: not '1_000', not '８')."""
    cores = os.cpu_count() or 1
    value = int(text) if re.fullmatch(r"\s*\+?[0-9]{1,9}\s*", text) else 0
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(f"expected a positive integer, at most the {cores} "
                                         f"cores of this machine, got {text[:60]!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _rank() != 0 and ("-h" in argv or "--help" in argv):
        sys.exit(0)                                    # rank 0 prints the help, once
    p = _Parser(prog="validate/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/validate", help="directory for calibrated.yaml and reports")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer sizes and repeats (1.5-2.5 min on CPU, 2 ranks)")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny shapes, for tests: checks the plumbing, not the accuracy")
    p.add_argument("--topology", default=None, metavar="YAML",
                   help="your cluster's topology file: its device and levels get the fitted "
                        "values in DIR/calibrated.yaml, every other key and comment kept "
                        "(default: a fresh topology of this machine)")
    p.add_argument("--attention", choices=["auto", "fused", "unfused"], default="auto",
                   help="attention core; auto: fused (flash) on CUDA, unfused on CPU")
    p.add_argument("--timeout", type=_seconds, default=300.0,
                   help="seconds a collective may wait for a peer before the run fails")
    p.add_argument("--threads", type=_threads, default=None,
                   help="CPU threads per rank (default: cores / local ranks, at least 1)")
    p.add_argument("--fault", default=None, help=argparse.SUPPRESS)  # tests: RANK:die|hang
    args = p.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    return args


def preflight(args) -> None:
    """Errors a run can know before any work: an unwritable --out, shapes that do not split, a
    topology that cannot hold the run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if world < 2:
        _exit_bad("validate: error: run under torchrun with at least 2 ranks "
                  "(torchrun --nproc_per_node 2 validate/run.py)")
    problems = [f"{sh.label()}: {why}" for sh in S.EVAL[args.mode] + S.FIT[args.mode]
                for why in sh.unsplittable(world)]
    if problems:
        _exit_bad(f"validate: error: the {args.mode} shapes cannot be split over {world} ranks: "
                  + "; ".join(problems))
    _check_out(args.out, args.topology)
    if args.topology:
        _check_topology(args.topology, world, local)
    if _rank() == 0:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            _exit_bad(f"validate: error: --out {out}: cannot write there ({e.strerror or e})")


OUTPUTS = ("calibrated.yaml", "report.json", "report.md")   # what a run writes into --out


def _check_out(out: str, topology: str | None) -> None:
    """--out '' would write into the working directory; an --out whose files include the
    --topology input would overwrite it (paths resolved, links followed): refuse both."""
    if not out.strip():
        _exit_bad("validate: error: --out: expected a directory, got an empty string")
    if topology:
        source = Path(topology).resolve()
        clash = [f for f in OUTPUTS if (Path(out) / f).resolve() == source]
        if clash:
            _exit_bad(f"validate: error: --out {out}: its {clash[0]} would overwrite the "
                      f"--topology input {topology}; choose another directory")


def _check_topology(path: str, world: int, local: int) -> None:
    """--topology must load, hold the world and, across nodes, have a node of this run's size."""
    from tpsim.base.errors import ConfigError
    from tpsim.cluster.topology import load_topology
    try:
        topo = load_topology(path)
    except ConfigError as e:
        _exit_bad(f"validate: error: --topology: {e}")
        return
    if topo.max_ranks < world:
        _exit_bad(f"validate: error: --topology {path}: levels: expected room for {world} "
                  f"ranks, got {topo.max_ranks}")
    if world > local and (topo.devices_per_node != local or topo.network is None):
        _exit_bad(f"validate: error: --topology {path}: levels: expected {local} devices per "
                  f"node (LOCAL_WORLD_SIZE) and a level between nodes, got "
                  f"{topo.devices_per_node} per node")


def keep_freed_memory() -> None:
    """glibc returns large freed buffers to the OS; re-faulting them each step costs more than
    the kernels on CPU. Keep them in the heap (as jemalloc/tcmalloc setups do)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)     # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)     # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv=None) -> int:
    args = parse_args(argv)
    preflight(args)
    keep_freed_memory()
    from harness import Harness       # torch is imported only past the preflight
    return Harness(args).run()


if __name__ == "__main__":
    sys.exit(main())
