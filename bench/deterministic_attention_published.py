"""tpsim's FlashAttention-2 forward and deterministic backward against flash-attention PR
#1893's H100 timings, used in no fit.

    python bench/deterministic_attention_published.py

Reads tests/data/published_compute/attention_deterministic.csv (source in the README there)
and prices each row as a training step would: the kernel's fitted time
(:func:`tpsim.sim.price.kernel_time`), the deterministic backward through
:mod:`tpsim.sim.deterministic_attention` (its key-loop grid, :mod:`tpsim.cost.key_loop`).
Printed beside it: tpsim's default backward, and the slowdown of the grid alone.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from tpsim.cluster.topology import load_topology
from tpsim.cost.key_loop import slowdown
from tpsim.layer.ops import Attention
from tpsim.sim.deterministic_attention import deterministic_attention_times
from tpsim.sim.price import kernel_time

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_compute"
TOPOLOGY = {"H100-SXM5-80GB": "dgx-h100", "A100-SXM4-80GB": "dgx-a100"}


def rows() -> list[dict]:
    with open(DATA / "attention_deterministic.csv") as f:
        return list(csv.DictReader(f))


def price(r: dict) -> tuple[float, float]:
    """(tpsim's seconds for row ``r``, its default kernel's seconds)."""
    device = load_topology(TOPOLOGY[r["device"]]).device
    n = {k: int(r[k]) for k in ("batch", "heads", "seq", "head_dim")}
    op = Attention(n["batch"], n["heads"], n["heads"], n["seq"], n["seq"], n["head_dim"], "bf16",
                   r["causal"] == "1", r["pass"] == "backward", r["kernel"])
    default = kernel_time(op, device)
    if r["deterministic"] == "1":
        return deterministic_attention_times([op], [default], device)[0], default
    return default, default


def error(r: dict) -> float:
    """tpsim over published, less 1 (+: tpsim slow)."""
    return price(r)[0] / (float(r["ms"]) * 1e-3) - 1


def main() -> int:
    print("FlashAttention-2, ms (+: tpsim slow); default: tpsim's non-deterministic kernel")
    for r in rows():
        t, default = price(r)
        device = load_topology(TOPOLOGY[r["device"]]).device
        note = ""
        if r["deterministic"] == "1":
            tile = tuple(device.attention_kernels[r["kernel"]].deterministic_tile)
            grid = slowdown(int(r["batch"]) * int(r["heads"]), int(r["seq"]), int(r["seq"]),
                            r["causal"] == "1", device.sm_count, tile)
            note = f"  (default {default * 1e3:.3f}, the grid alone x{grid:.3f})"
        mode = "deterministic" if r["deterministic"] == "1" else "default"
        print(f"  {r['device']} {r['pass']:8s} {mode:13s} b{r['batch']} h{r['heads']} s{r['seq']} "
              f"d{r['head_dim']}: published {float(r['ms']):6.3f} tpsim {t * 1e3:6.3f} "
              f"{error(r):+6.1%}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
