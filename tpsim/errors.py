"""The one exception family tpsim raises for bad input.

The CLI turns any :class:`TpsimError` into a single line on stderr and exit code 2;
nothing else in the package prints or exits.
"""
from __future__ import annotations


class TpsimError(Exception):
    """Bad input: a file, a flag or a combination of settings tpsim cannot price."""


class ConfigError(TpsimError):
    """A configuration value is missing, mistyped or impossible.

    ``source`` is the file (or ``--flag``) it came from, ``key`` the dotted key path
    inside it, ``expected`` what would have been accepted.
    """

    def __init__(self, source: str, key: str, expected: str, got: object = None):
        self.source, self.key, self.expected, self.got = str(source), key, expected, got
        where = f"{self.source}: {key}" if key else self.source
        tail = f" (got {got!r})" if got is not None else ""
        super().__init__(f"{where}: expected {expected}{tail}")
