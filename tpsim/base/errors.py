"""The one exception family tpsim raises for bad input.

The CLI turns any :class:`TpsimError` into a single line on stderr and exit code 2;
nothing else in the package prints or exits.
"""
from __future__ import annotations

import reprlib

ECHO_CHARS = 200     # the most of a bad value (or a file name) an error message repeats

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = ECHO_CHARS, ECHO_CHARS, 40


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with '...'."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short_repr(value: object, limit: int = ECHO_CHARS) -> str:
    """repr(value) in bounded time and length: a YAML alias bomb, a self-referencing list or
    an integer of 10^5000 is echoed as a few hundred characters, not expanded."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):       # ints past Python's digit limit, deep objects
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


class TpsimError(Exception):
    """Bad input: a file, a flag or a combination of settings tpsim cannot price."""


class ConfigError(TpsimError):
    """A configuration value is missing, mistyped or impossible.

    ``source`` is the file (or ``--flag``) it came from, ``key`` the dotted key path
    inside it, ``expected`` what would have been accepted, ``got`` the value found (echoed
    through :func:`short_repr`, so the message stays one short line) and ``hint`` a
    suggestion ("did you mean ...?").
    """

    def __init__(self, source: str, key: str, expected: str, got: object = None,
                 hint: str = ""):
        self.source, self.key, self.expected, self.got = str(source), key, expected, got
        where = f"{clip(self.source)}: {clip(str(key))}" if key else clip(self.source)
        tail = f" (got {short_repr(got)})" if got is not None else ""
        super().__init__(f"{where}: expected {expected}{tail}" + (f"; {hint}" if hint else ""))
