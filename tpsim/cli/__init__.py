"""tpsim's command line: parse, call the model, print. No modelling happens here.

One module per subcommand (collective.py, predict.py, infer.py, plot.py); this one builds the parser.

Any :class:`~tpsim.errors.TpsimError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import TpsimError
from .collective import add_collective, cmd_topologies
from .common import OnlySubcommand, Parser
from .infer import add_infer
from .plot import add_plot, plot_settings
from .predict import add_predict, cmd_models

__all__ = ["main", "build_parser", "plot_settings"]


# --------------------------------------------------------------------------- main

def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, only the invoked subcommand's arguments are built."""
    parser = Parser(prog="tpsim", description="How long does a tensor-parallel transformer "
                     "layer take on a given cluster, and why.")
    parser.add_argument("--version", action="version", version=f"tpsim {_version()}")
    command = next((a for a in argv or () if not a.startswith("-")), None)
    sub = OnlySubcommand(parser.add_subparsers(dest="command", required=True,
                                               parser_class=Parser), command)
    sub.add_parser("topologies", help="list the shipped topologies").set_defaults(func=cmd_topologies)
    add_collective(sub)
    add_predict(sub)
    add_infer(sub)
    sub.add_parser("models", help="list the shipped model presets").set_defaults(func=cmd_models)
    add_plot(sub)
    return parser


def _version() -> str:
    from .. import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bare ``tpsim`` prints the help (the subcommands) on stderr and
    returns 2, as any other missing argument does."""
    argv = sys.argv[1:] if argv is None else argv
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
