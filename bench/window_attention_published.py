"""tpsim's banded (sliding-window) attention kernel against cuDNN's published timings of
gpt-oss's attention shape, used in no fit.

    python bench/window_attention_published.py

Reads tests/data/published_compute/attention_window.csv (sources in the README there): cuDNN's
fused attention with a causal window, the forward and the backward per call, on H200 (a 1,024
window, 64 query and 8 key/value heads of 64) and GB200 / GB300 (a 128 window, 128 heads of 64).
Each row is priced as the training step prices gpt-oss's banded layers
(:func:`tpsim.sim.price.kernel_time` of an :class:`~tpsim.layer.ops.Attention` with its
``window``: the device's default fused kernel, flash3 on these presets, looping over the
window's keys with its causal diagonal tiles), on dgx-h200 (the H100's die and clock),
gb200-nvl72 and gb300-nvl72.
"""
from __future__ import annotations

import csv
from pathlib import Path

from tpsim.cluster.topology import load_topology
from tpsim.layer.ops import Attention
from tpsim.sim.price import kernel_time

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_compute"
TOPOLOGY = {"H200": "dgx-h200", "GB200": "gb200-nvl72", "GB300": "gb300-nvl72"}


def rows() -> list[tuple[dict, float]]:
    """(row, tpsim's seconds) of every published row."""
    out = []
    with open(DATA / "attention_window.csv") as f:
        for r in csv.DictReader(f):
            dev = load_topology(TOPOLOGY[r["device"]]).device
            b, h, kv, d, s, w = (int(r[k]) for k in ("batch", "heads", "kv_heads", "head_dim",
                                                   "seq", "window"))
            op = Attention(b, h, kv, s, s, d, "bf16", True, r["pass"] == "bwd", None, w)
            out.append((r, kernel_time(op, dev)))
    return out


def main() -> None:
    print(f"{'device':6s} {'window':>6s} {'seq':>6s} {'pass':4s} {'cuDNN ms':>9s} {'tpsim ms':>9s}"
          f" {'err':>6s}")
    errors: dict[str, list[float]] = {}
    for r, t in rows():
        pub = float(r["time_ms"]) * 1e-3
        errors.setdefault(f"{r['device']} window {r['window']} {r['pass']}", []).append(t / pub - 1)
        print(f"{r['device']:6s} {r['window']:>6s} {r['seq']:>6s} {r['pass']:4s} {pub * 1e3:9.3f} "
              f"{t * 1e3:9.3f} {t / pub - 1:+6.1%}")
    for key, errs in errors.items():
        print(f"{key}: {min(errs):+.1%} to {max(errs):+.1%}")


if __name__ == "__main__":
    main()
