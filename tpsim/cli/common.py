"""What every subcommand module shares: the one-line-error argument parser."""
from __future__ import annotations

import argparse

from ..errors import TpsimError


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise TpsimError(f"{self.prog}: {message}")
