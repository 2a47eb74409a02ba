"""tpsim's deterministic attention backward against published timings, used in no fit:
FlashAttention-2's on H100 (flash-attention PR #1893) and cuDNN's on H200 (cudnn-frontend's
SDPA training benchmark, cuDNN 9.19.1), beside cuDNN's default backward there.

    python bench/deterministic_attention_published.py

Reads tests/data/published_compute/attention_deterministic.csv (source in the README there)
and prices each row as a training step would: the kernel's fitted time
(:func:`tpsim.sim.price.kernel_time`), the deterministic backward through
:mod:`tpsim.sim.deterministic_attention`: FlashAttention-2's key-loop grid
(:mod:`tpsim.cost.key_loop`), cuDNN's dP workspace (:mod:`tpsim.cost.dp_workspace`). A row
whose value head dim differs from its query/key one (DeepSeek-V3's 192 / 128) is priced at
the head dim of the same backward FLOPs, (3 d_qk + 2 d_v) / 5 (the five matmuls: QK^T, dS K,
dS^T Q at d_qk; dO V^T, P^T dO at d_v). Printed beside it: tpsim's default backward, and for
FlashAttention-2 the slowdown of the grid alone.
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
TOPOLOGY = {"H100-SXM5-80GB": "dgx-h100", "A100-SXM4-80GB": "dgx-a100", "H200": "dgx-h200"}


def rows() -> list[dict]:
    with open(DATA / "attention_deterministic.csv") as f:
        return list(csv.DictReader(f))


def op(r: dict) -> Attention:
    """Row ``r``'s attention op (module docstring: the head dim of mixed ones)."""
    n = {k: int(r[k]) for k in ("batch", "heads", "kv_heads", "seq", "head_dim", "head_dim_v")}
    head_dim = round((3 * n["head_dim"] + 2 * n["head_dim_v"]) / 5)
    return Attention(n["batch"], n["heads"], n["kv_heads"], n["seq"], n["seq"], head_dim, "bf16",
                     r["causal"] == "1", r["pass"] == "backward", r["kernel"])


def price(r: dict) -> tuple[float, float]:
    """(tpsim's seconds for row ``r``, its default kernel's seconds)."""
    device = load_topology(TOPOLOGY[r["device"]]).device
    a = op(r)
    default = kernel_time(a, device)
    if r["deterministic"] == "1":
        return deterministic_attention_times([a], [default], device)[0], default
    return default, default


def error(r: dict) -> float:
    """tpsim over published, less 1 (+: tpsim slow)."""
    return price(r)[0] / (float(r["ms"]) * 1e-3) - 1


def note(r: dict, default: float) -> str:
    if r["deterministic"] != "1":
        return ""
    tile = load_topology(TOPOLOGY[r["device"]]).device.attention_kernels[r["kernel"]] \
        .deterministic_tile
    if not tile:
        return f"  (default {default * 1e3:.3f})"
    device = load_topology(TOPOLOGY[r["device"]]).device
    grid = slowdown(int(r["batch"]) * int(r["heads"]), int(r["seq"]), int(r["seq"]),
                    r["causal"] == "1", device.sm_count, tuple(tile))
    return f"  (default {default * 1e3:.3f}, the grid alone x{grid:.3f})"


def main() -> int:
    print("Fused attention, ms (+: tpsim slow); default: tpsim's non-deterministic kernel")
    for r in rows():
        t, default = price(r)
        mode = "deterministic" if r["deterministic"] == "1" else "default"
        dims = r["head_dim"] if r["head_dim"] == r["head_dim_v"] else \
            f"{r['head_dim']}/{r['head_dim_v']}"
        print(f"  {r['device']:14s} {r['kernel']} {r['pass']:8s} {mode:13s} b{r['batch']} "
              f"h{r['heads']}/{r['kv_heads']} s{r['seq']} d{dims}: published {float(r['ms']):6.3f}"
              f" tpsim {t * 1e3:6.3f} {error(r):+6.1%}{note(r, default)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
