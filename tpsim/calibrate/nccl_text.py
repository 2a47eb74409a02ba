"""nccl-tests' own text output, as ``all_reduce_perf`` and its siblings print it::

    #                                                 out-of-place                  in-place
    #       size         count      type   redop    root     time   algbw   busbw #wrong     time ...
    #        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us) ...
            1024           256     float     sum      -1     5.45    0.19    0.33      0     5.35 ...

read as records of :mod:`tpsim.calibrate.measured`: ``size(B)`` and the out-of-place
``time(us)`` (the first time column) of every row. The header line names the columns, so older
tables (``error`` for ``#wrong``, no ``root``) read the same; every line around the table
(``# nThread ...``, ``# Using devices``, NCCL INFO logs, ``# Avg bus bandwidth``) is skipped.
A row of 0 bytes (nccl-tests prints them for counts below the ranks) moves nothing and is
skipped; a row nccl-tests found wrong (``#wrong`` not 0 or N/A) is a ConfigError.
"""
from __future__ import annotations

from ..base.errors import ConfigError


def header(lines: list[str]) -> tuple[int, list[str]] | None:
    """(line index, column names) of the nccl-tests table header among ``lines``, else None."""
    for i, line in enumerate(lines):
        names = line.lstrip("#").split() if line.startswith("#") else []
        if names[:2] == ["size", "count"] and "time" in names:
            return i, names
    return None


def records(lines: list[str], source: str) -> list[tuple[str, dict]]:
    """(label, {size(B), time(us)}) of every row of the table whose header :func:`header`
    finds (a :mod:`tpsim.calibrate.measured` record)."""
    at, names = header(lines)
    size, time = 0, names.index("time")
    wrong = names.index("#wrong") if "#wrong" in names else None   # older tables: error
    out = []
    for n, line in enumerate(lines[at + 1:], at + 2):
        cells = line.split()
        if line.startswith("#") or len(cells) < len(names) or not cells[0].isdigit():
            continue                      # units row, comments, logs, a truncated row
        if wrong is not None and cells[wrong] not in ("0", "N/A"):
            raise ConfigError(source, f"line {n}: {names[wrong]}", "0 (nccl-tests found no "
                              "wrong results in the out-of-place run)", cells[wrong])
        if cells[size] != "0":
            out.append((f"line {n}", {"size(B)": cells[size], "time(us)": cells[time]}))
    return out
