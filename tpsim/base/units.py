"""Unit conversions, done once at the edges.

Inside tpsim everything is SI: seconds, bytes, bytes/s, FLOP/s. YAML keys and CLI flags carry
their unit in their name (``bandwidth_GBps``, ``latency_us``); the loader multiplies each by the
named scale below (``spec(..., scale=GB)`` in :mod:`tpsim.cluster.topology`), once. GB is 1e9 bytes and
GiB is 2**30 bytes, as in nccl-tests. Network rates quoted in Gb/s (HDR 200 Gb/s) enter the
YAML as GB/s with the /8 shown in its comment.
"""
from __future__ import annotations

import math
import re

from .errors import ConfigError

GB = 1e9          # GB/s -> bytes/s, GB -> bytes
GiB = 2**30
TERA = 1e12       # TFLOP/s -> FLOP/s
US = 1e-6         # us -> s


_SIZE_UNITS = {
    "": 1, "B": 1,
    "K": 2**10, "KIB": 2**10, "KB": 1e3,
    "M": 2**20, "MIB": 2**20, "MB": 1e6,
    "G": 2**30, "GIB": 2**30, "GB": 1e9,
    "T": 2**40, "TIB": 2**40, "TB": 1e12,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


MAX_BYTES = 2**50   # 1 PiB: no buffer one collective moves comes near it


def parse_size(text: str | int | float, source: str = "--bytes") -> int:
    """'64MiB' -> 67108864. K/M/G/T alone are binary (as nccl-tests' -b/-e); KB/MB/GB decimal.
    At most MAX_BYTES (1 PiB)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = (float(text) if isinstance(text, float) or abs(text) <= MAX_BYTES
                       else math.inf), ""
    else:
        m = _SIZE_RE.match(str(text)) if isinstance(text, str) else None
        if not m or m.group(2).upper() not in _SIZE_UNITS:
            raise ConfigError(source, "", "a size such as 4096, 64MiB, 1.5GB or 8G", text)
        value, unit = float(m.group(1)), m.group(2).upper()
    nbytes = value * _SIZE_UNITS[unit]
    if not math.isfinite(nbytes) or nbytes > MAX_BYTES:
        raise ConfigError(source, "", f"a finite size of at most {MAX_BYTES} bytes (1 PiB)", text)
    if nbytes <= 0 or nbytes != int(nbytes):
        raise ConfigError(source, "", "a positive whole number of bytes", text)
    return int(nbytes)


def format_size(nbytes: float) -> str:
    """67108864 -> '64MiB'; binary units, as nccl-tests prints them."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            v = nbytes / scale
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.2f}{unit}"
    return f"{nbytes:.0f}B"


def tflops_text(tflops: float) -> str:
    """A rate in TFLOP/s as the outputs write it: one decimal from 1 TFLOP/s (every GPU), three
    significant digits below (a CPU's 0.0312, which one decimal would print as 0.0)."""
    return f"{tflops:.1f}" if tflops >= 1 or tflops == 0 else f"{tflops:.3g}"


def gpus_text(n: int) -> str:
    """"1 GPU", "8 GPUs": a GPU count as the outputs write it."""
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def power_of_two_sizes(lo: int, hi: int) -> list[int]:
    """lo, 2 lo, 4 lo, ... up to hi: the sizes nccl-tests sweeps with -f 2."""
    if lo > hi:
        raise ConfigError("--min-bytes", "", f"at most --max-bytes ({hi})", lo)
    sizes = []
    while lo <= hi:
        sizes.append(lo)
        lo *= 2
    return sizes
