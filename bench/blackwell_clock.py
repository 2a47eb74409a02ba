"""Fit the Blackwell presets' ``sustained_clock`` on Megatron-Bridge's Llama 3 8B MXFP8 run on B200.

One parameter, B200's sustained clock at its 1,000 W limit (``dgx-b200``), is fitted on one
run: Megatron-Bridge's performance summary, container 25.11, Llama 3 8B, MXFP8, sequence 8192,
8 GPUs, DP 8, micro-batch 2 (bench/sharded_published.py's ``8B, MXFP8, B200`` row: 29,521
tokens/s per GPU). GB200 (1,200 W, the same die) and GB300 (1,400 W, Blackwell Ultra: 152 SMs
of the same architecture against 148, each SM's energy per operation ASSUMED the B200's) follow
from it by :func:`tpsim.cluster.sustained.power_limited_clock` (the rate as (power above
idle)^k, k fitted on a V100's power trace: bench/power_exponent.py). The same summary's GB200
and GB300 8B rows (29,789 and 36,108), printed below, and the 70B and 405B Blackwell rows of
bench/sharded_published.py and bench/cp_published.py are used in no fit: they check it
(docs/checks.md).

    python bench/blackwell_clock.py
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tpsim.cluster.sustained import power_limited_clock
from tpsim.cluster.topology import load_topology
from tpsim.training.predict import predict

from sharded_published import ROWS, SEQ, settings

REFERENCE = "dgx-b200"
DERIVED = ("dgx-b200-ndr-cluster", "gb200-nvl72", "gb300-nvl72")
FIT_ROWS = [r for r in ROWS if "8B, MXFP8, B200" in r[0]]
CHECK_ROWS = [r for r in ROWS if "8B, MXFP8, GB" in r[0]]


def clocks(ref_clock: float) -> dict[str, float]:
    """Each Blackwell topology's sustained clock from B200's ``ref_clock`` (module docstring)."""
    ref = load_topology(REFERENCE).device
    out = {REFERENCE: ref_clock}
    for name in DERIVED:
        out[name] = power_limited_clock(ref, ref_clock, load_topology(name).device)
    return out


def with_clock(name: str, clock: float):
    topo = load_topology(name)
    new = dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                               sustained_clock=clock))
    object.__setattr__(new, "path", topo.path)
    return new


def errors(ref_clock: float, rows=None) -> list[float]:
    """tpsim / published - 1 on ``rows`` (the fitted ones by default) at B200's ``ref_clock``."""
    c = clocks(ref_clock)
    out = []
    for name, model, topo, layout, published, _ in FIT_ROWS if rows is None else rows:
        p = predict(model, with_clock(topo, c[topo]), seq_len=SEQ, **settings(name, layout))
        out.append(p.step.tokens_per_s / p.inputs.gpus / published - 1)
    return out


def fit() -> float:
    """Grid-fit B200's clock (0.60-1.00 by 0.005): the least mean |error| on the fitted row."""
    grid = np.round(np.arange(0.60, 1.0001, 0.005), 3)     # 1.0, not arange's 1.0000000000000004
    scores = [np.abs(errors(c)).mean() for c in grid]
    return float(grid[int(np.argmin(scores))])


def main() -> None:
    best = fit()
    print(f"B200 sustained_clock fitted on the Llama 3 8B MXFP8 run on 8 B200: {best:.3f}")
    for name, clock in clocks(best).items():
        print(f"  {name:22s} sustained_clock {clock:.3f} (shipped "
              f"{load_topology(name).device.sustained_clock:g})")
    for row, err in zip(FIT_ROWS + CHECK_ROWS, errors(best, FIT_ROWS + CHECK_ROWS)):
        print(f"  {row[0]:44s} {err:+.1%}  {'fitted' if row in FIT_ROWS else 'check'}")


if __name__ == "__main__":
    main()
