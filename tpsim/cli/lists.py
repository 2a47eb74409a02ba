"""Flags that take a comma list (``--tp 1,2,4,8``, ``--topology dgx-a100,dgx-h100``): one
command compares every combination of the values given, one row each."""
from __future__ import annotations

import argparse
import itertools
import math

from ..base.errors import ConfigError, clip
from .common import positive_int, positive_rate, probability, token_count


def int_list(text: str) -> tuple[int, ...]:
    """``4`` or ``1,2,4,8``: positive integers (:func:`positive_int` each)."""
    return _read(text, positive_int)


def token_list(text: str) -> tuple[int, ...]:
    """``8k`` or ``1024,2k,4k``: token counts (:func:`token_count` each)."""
    return _read(text, token_count)


def rate_list(text: str) -> tuple[float, ...]:
    """``8`` or ``1,4,16,inf``: request rates (:func:`positive_rate` each)."""
    return _read(text, positive_rate)


def probability_list(text: str) -> tuple[float, ...]:
    """``0.6`` or ``0.6,0.8``: probabilities in [0, 1) (:func:`probability` each)."""
    return _read(text, probability)


def name_list(text: str) -> tuple[str, ...]:
    """``dgx-a100,dgx-h100``: names or paths, in order."""
    return _read(text, str)


def choice_list(choices, convert=str):
    """A comma list whose every item is one of ``choices`` (after ``convert``)."""
    def parse(text: str) -> tuple[str, ...]:
        out = tuple(convert(x.strip()) for x in _items(text))
        for x in out:
            if x not in choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {clip(repr(x), 60)} (choose from {', '.join(choices)})")
        return _distinct(out, text)
    parse.__name__ = "choice list"
    return parse


def braces(choices) -> str:
    """argparse's way of showing choices in a flag's line: {a,b,c}."""
    return "{" + ",".join(choices) + "}"


def _read(text: str, convert) -> tuple:
    """The comma list ``text``, each item stripped and converted, each value once."""
    return _distinct(tuple(convert(x.strip()) for x in _items(text)), text)


def _distinct(values: tuple, text: str) -> tuple:
    """``values`` (a comma list as read: ``2.18.5`` is ``2.18``, ``8k`` is 8192), each once:
    a value given twice would print two rows alike, neither labelled."""
    for i, x in enumerate(values):
        if x in values[:i]:
            raise argparse.ArgumentTypeError(f"expected a comma list of distinct values, got "
                                             f"{clip(repr(text), 60)} ({x} twice)")
    return values


def _items(text: str) -> list[str]:
    items = text.split(",")
    if not all(x.strip() for x in items):
        raise argparse.ArgumentTypeError(f"expected a value or a comma list of values, got "
                                         f"{clip(repr(text), 60)}")
    return items


MAX_COMBINATIONS = 1000    # rows one command compares: each is a whole prediction


def combinations(args, names) -> list[dict]:
    """Every combination of the list-valued ``names`` of ``args`` (None stays None), in the
    order the flags list them, the last varying fastest; more than MAX_COMBINATIONS is a
    ConfigError, counted before any is built."""
    lists = [getattr(args, n) if isinstance(getattr(args, n), tuple) else (getattr(args, n),)
             for n in names]
    count = math.prod(len(x) for x in lists)
    if count > MAX_COMBINATIONS:
        flags = [_FLAGS.get(n, "--" + n.replace("_", "-")) for n, x in zip(names, lists)
                 if len(x) > 1]
        raise ConfigError(", ".join(flags), "", f"comma lists of at most {MAX_COMBINATIONS} "
                          "combinations in all (one row each)",
                          " x ".join(str(len(x)) for x in lists if len(x) > 1) + f" = {count:,}")
    return [dict(zip(names, combo)) for combo in itertools.product(*lists)]


_FLAGS = {"size": "--bytes", "algo": "--algo"}


def varied(combos: list[dict]) -> list[str]:
    """The names whose value differs between the combinations (the comparison's columns)."""
    return [n for n in (combos[0] if combos else {}) if len({repr(c[n]) for c in combos}) > 1]


def print_runs(preds, fmt, to_json, report, comparison, names) -> None:
    """One run per combination printed: CSV rows, JSON (a list for several), the run's report
    (one) or ``comparison(preds, names)`` (several, ``names`` the settings that vary)."""
    from .common import dump_json
    if fmt == "csv":
        from ..report.flat_csv import csv_text
        print(csv_text(to_json(p) for p in preds))
    elif fmt:
        js = [to_json(p) for p in preds]
        print(dump_json(js if len(js) > 1 else js[0]))
    else:
        print(comparison(preds, names) if len(preds) > 1 else report(preds[0]))
