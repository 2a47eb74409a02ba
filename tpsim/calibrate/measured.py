"""Measured points read from files: a CSV of collective timings (nccl-tests' columns or
tpsim's), nccl-tests' own text output, or a ``validate/run.py`` report.json. Every number is checked where it is read: a
size or time that is negative, zero, NaN or infinite is a ConfigError naming the row, never a
point drawn.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from ..base.errors import ConfigError
from ..base.schema import load_json, read_text
from . import nccl_text


def finite(value, lo: float | None = None) -> bool:
    """A JSON number (not a bool), finite, and above ``lo`` when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int) and abs(value) > 1e300:   # float(10**400) overflows
        return False
    return math.isfinite(value) and (lo is None or value > lo)


def _number(value) -> float | None:
    """A number read from a file (text or JSON), else None (a label, a blank); bools are not."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


_SIZE_KEYS = ("size_bytes", "size(b)", "bytes", "nbytes", "size")
_TIME_KEYS = (("measured_s", 1.0), ("time_s", 1.0), ("time_us", 1e-6), ("time(us)", 1e-6),
              ("time_ns", 1e-9), ("time(ns)", 1e-9))


def _size_and_time(record: dict, source: str, where: str) -> tuple[float, float] | None:
    """(size_bytes, time_s) of one row; None for a row without numbers in those columns (a
    label line). A number that is not positive and finite (negative, 0, NaN, inf) is bad input:
    a measured point is never that."""
    low = {str(k).strip().lower(): v for k, v in record.items()}
    size_key = next((k for k in _SIZE_KEYS if k in low), None)
    time_key = next(((k, s) for k, s in _TIME_KEYS if k in low and _number(low[k]) is not None),
                    None)
    if size_key is None or time_key is None or _number(low[size_key]) is None:
        return None
    size, time_s = _number(low[size_key]), _number(low[time_key[0]]) * time_key[1]
    for key, value in ((size_key, size), (time_key[0], time_s)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(source, f"{where}: {key}" if where.startswith("line") else
                              f"{where}.{key}", "a positive, finite number", low[key])
    return size, time_s


def _measured_records(p: Path, op: str, ranks: int | None) -> list[tuple[str, dict]]:
    """(label, record) of every row of a measured CSV or report.json."""
    if p.suffix == ".json":
        data = load_json(p, "a readable report.json")
        key = "collectives" if isinstance(data, dict) and data.get("collectives") else "cases"
        records = data if isinstance(data, list) else (data.get(key) or []) \
            if isinstance(data, dict) else []
        if not isinstance(records, list):
            raise ConfigError(str(p), key, "a list of measured points", type(records).__name__)
        return [(f"{key}[{i}]", r) for i, r in enumerate(records)
                if isinstance(r, dict) and r.get("op", op) == op
                and (ranks is None or r.get("ranks", ranks) == ranks)]
    lines = read_text(p, "a readable CSV, nccl-tests output or report.json").splitlines()
    if nccl_text.header(lines):
        return nccl_text.records(lines, str(p))
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln.strip() and not ln.startswith("#")]
    rows = list(csv.reader(ln for _, ln in numbered)) or [[]]
    header, body = rows[0], zip((n for n, _ in numbered[1:]), rows[1:])
    # nccl-tests repeats time(ns) (out-of-place, then in-place): the first column wins
    first: dict = {}
    for j, name in enumerate(header):          # linear: header.index per name was quadratic
        first.setdefault(name, j)
    return [(f"line {n}", {name: row[j] for name, j in first.items() if j < len(row)})
            for n, row in body]


def read_measured(path: str | Path, op: str, ranks: int | None = None) -> list[tuple[float, float]]:
    """(size_bytes, time_s) points of one collective from a CSV, nccl-tests' text output
    (:mod:`tpsim.calibrate.nccl_text`: its out-of-place time) or a validate/ report.json.

    CSV: a header naming a size column (``size_bytes``, ``bytes`` or nccl-tests' ``size(B)``) and
    a time column (``time_s``, ``time_us``, ``time_ns`` or ``time(ns)``; the first one wins, so an
    nccl-tests table gives its out-of-place time). JSON: the records under ``collectives`` (or
    ``cases``) that carry a size and a time, and whose ``op`` and ``ranks``, where given, match
    (validate/run.py's ``collectives`` rows: op, ranks, size_bytes, time_s measured). Rows
    without numbers there are skipped; a size or time that is not a positive finite number is
    a ConfigError naming the row.
    """
    p = Path(path)
    points = sorted(pt for label, r in _measured_records(p, op, ranks)
                    if (pt := _size_and_time(r, str(p), label)))
    if not points:
        raise ConfigError(str(p), "", f"{op} points with a size column (size_bytes, bytes, size(B)) "
                          "and a time column (time_s, time_us, time_ns, time(ns), measured_s)")
    return points
