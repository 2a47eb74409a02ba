"""tpsim's command line: parse, call the model, print. No modelling happens here.

One module per subcommand (collective.py, predict.py, infer.py, serve.py, serve_search.py,
search.py, plot.py); this one builds the parser.

Any :class:`~tpsim.base.errors.TpsimError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from ..base import compiled
from ..base.errors import TpsimError
from .common import Parser

# numpy's BLAS threads: tpsim's arrays are small (a search multiplies thousands of layouts by a
# hundred-odd path rows per schedule), and extra BLAS threads only spin between the products,
# taking CPU from everything else (about half again the search's CPU time on two cores). The
# command runs one unless the environment says otherwise, set before a subcommand loads numpy.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

__all__ = ["main", "build_parser"]

# name: (help, the module under tpsim/cli/ that adds its arguments, its function)
COMMANDS = {
    "topologies": ("list the shipped topologies", "collective", "fill_topologies"),
    "collective": ("price one collective (or a sweep of sizes) on a topology", "collective",
                   "fill_collective"),
    "predict": ("a training step's time, where it goes and whether it fits: TP, PP, DP, EP, "
                "CP, ZeRO/FSDP, FP8; or one layer", "predict", "fill_predict"),
    "infer": ("time to first token, time per output token, tokens/s and memory of serving a TP "
              "model", "infer", "fill_infer"),
    "serve": ("an engine serving a stream of requests: continuous batching, chunked prefill, a "
              "paged KV cache; throughput and TTFT/TPOT percentiles", "serve", "fill_serve"),
    "serve-search": ("the serving layouts of some GPUs that meet TTFT and TPOT p99 targets, "
                     "best first by output tokens/s per GPU: TP x PP replicas, disaggregated "
                     "prefill/decode pools", "serve_search", "fill_serve_search"),
    "search": ("the fastest layouts of a training job that fit: TP x PP x DP x EP x CP, "
               "virtual stages, micro-batch, SP, recomputation, ZeRO, TP overlap", "search",
               "fill_search"),
    "models": ("list the shipped model presets", "predict", "fill_models"),
    "plot": ("figures (PNG, SVG or PDF) with the CSV of their numbers beside them", "plot",
             "fill_plot"),
}


# --------------------------------------------------------------------------- main

def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, only the invoked subcommand's arguments are built."""
    parser = Parser(prog="tpsim", description="How long does a tensor-parallel transformer "
                     "take on a given cluster, where does the time go, and does it fit?")
    parser.add_argument("--version", action="version", version=f"tpsim {_version()}")
    command = next((a for a in argv or () if not a.startswith("-")), None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    # `tpsim <command> ...`: no other flag or subcommand can be parsed, so only that one is
    # built; anything else (help, --version first, an unknown command) builds them all
    alone = bool(argv) and argv[0] == command and command in COMMANDS
    for name, (help, module, fill) in COMMANDS.items():
        if alone and name != command:
            continue
        p = sub.add_parser(name, help=help)
        if command in (None, name):    # only the invoked subcommand's module is imported
            getattr(importlib.import_module(f".{module}", __name__), fill)(p)
    return parser


def _version() -> str:
    from .. import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bare ``tpsim`` prints the help (the subcommands) on stderr and
    returns 2, as any other missing argument does."""
    if argv is None:    # a `tpsim` process: its modules live to its end, and the collector's
        gc.freeze()     # passes (the last at exit included) need not go over them; the
        compiled.install()  # modules a command imports build their classes from kept code
        return _command(sys.argv[1:])
    kept = compiled.installed()     # a call from Python: the modules it imports likewise,
    compiled.install()              # the caller's classes left as they were
    try:
        return _command(argv)
    finally:
        if not kept:
            compiled.uninstall()


def _command(argv: list[str]) -> int:
    """Parse ``argv`` and run its subcommand: the exit status (:func:`main`)."""
    for var in BLAS_THREADS:
        os.environ.setdefault(var, "1")
    try:
        parser = build_parser(argv)
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        args = parser.parse_args(argv)
        args.func(args)
    except TpsimError as e:
        print(f"tpsim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tpsim ... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
