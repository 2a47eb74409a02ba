"""tpsim's command line: parse, call the model, print. No modelling happens here.

Any :class:`~tpsim.errors.TpsimError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import TpsimError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise TpsimError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------- topologies, collective

def _cmd_topologies(args) -> None:
    from .topology import load_topology, shipped_topologies
    for name in shipped_topologies():
        topo = load_topology(name)
        print(f"{name:24s} {topo.max_ranks:5d} GPUs  {topo.description}")


def _add_collective(sub) -> None:
    p = sub.add_parser("collective", help="price one collective (or a sweep of sizes) on a topology")
    p.add_argument("--topology", default="dgx-h100", help="shipped name or path to a YAML file")
    p.add_argument("--op", default="all-reduce",
                   choices=["all-reduce", "reduce-scatter", "all-gather", "broadcast"])
    p.add_argument("--ranks", type=int, default=None, help="group size (default: one node)")
    p.add_argument("--bytes", default="64MiB",
                   help="message size as nccl-tests counts it: 4096, 64MiB (2^20), 1GB (1e9)")
    p.add_argument("--algo", default="auto", help="ring, tree, hierarchical, nvls or auto")
    p.add_argument("--sweep", action="store_true", help="sizes 1 KiB to 8 GiB by powers of two")
    p.add_argument("--min-bytes", default="1KiB", help="with --sweep: smallest size")
    p.add_argument("--max-bytes", default="8GiB", help="with --sweep: largest size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_collective)


def _cmd_collective(args) -> None:
    from .collectives import collective_time
    from .render import collective_table
    from .topology import load_topology
    from .units import parse_size
    topo = load_topology(args.topology)
    ranks = args.ranks if args.ranks is not None else topo.devices_per_node
    if args.sweep:
        lo, hi = parse_size(args.min_bytes, "--min-bytes"), parse_size(args.max_bytes, "--max-bytes")
        if lo > hi:
            raise TpsimError(f"--min-bytes: expected at most --max-bytes ({lo} > {hi})")
        sizes = []
        while lo <= hi:
            sizes.append(lo)
            lo *= 2
    else:
        sizes = [parse_size(args.bytes, "--bytes")]
    costs = [collective_time(args.op, s, ranks, topo, args.algo) for s in sizes]
    if args.json:
        rows = [c.as_dict() for c in costs]
        print(json.dumps(rows if args.sweep else rows[0], indent=2))
    else:
        print(collective_table(costs, topo))


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tpsim", description="How long does a tensor-parallel transformer "
                     "layer take on a given cluster, and why.")
    parser.add_argument("--version", action="version", version=f"tpsim {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("topologies", help="list the shipped topologies").set_defaults(func=_cmd_topologies)
    _add_collective(sub)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except TpsimError as e:
        print(f"tpsim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tpsim ... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
