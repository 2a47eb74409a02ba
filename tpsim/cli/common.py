"""What every subcommand module shares: the one-line-error argument parser."""
from __future__ import annotations

import argparse

from ..errors import TpsimError


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise TpsimError(f"{self.prog}: {message}")

    def _get_formatter(self):
        # argparse builds a formatter for every add_argument, each asking the terminal its
        # width: ask once per process
        return self.formatter_class(prog=self.prog, width=_terminal_width())


_WIDTH: list[int] = []


def _terminal_width() -> int:
    if not _WIDTH:
        import shutil
        _WIDTH.append(shutil.get_terminal_size().columns - 2)
    return _WIDTH[0]


class _Unbuilt:
    """Stands in for the parser of a subcommand this run does not invoke: its arguments are
    never built (adding them is most of the command line's start-up time)."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class OnlySubcommand:
    """``add_subparsers()``'s action, building the arguments of ``command`` alone (every
    subcommand when None): the others are listed with their help, nothing more."""

    def __init__(self, subparsers, command: str | None):
        self._sub, self._command = subparsers, command

    def add_parser(self, name: str, **kwargs):
        parser = self._sub.add_parser(name, **kwargs)
        return parser if self._command in (None, name) else _Unbuilt()
