"""Fit the exponent of a power-capped GPU's rate against its power above idle on Zeus's V100 trace.

:func:`tpsim.cluster.sustained.power_limited_clock` scales a board's sustained rate as
(P - P_idle)^k between power limits. k is fitted here, on data used in no other fit: the power
trace Zeus published (Jae-Won Chung et al., "Zeus: Understanding and Optimizing GPU Energy
Consumption of DNN Training", NSDI 2023; github.com/ml-energy/zeus, commit 75a8b93,
examples/research_reproducibility/zeus_nsdi23/trace/summary_power_v100.csv): one training epoch
on one V100 at power limits 100-250 W (250 W, the trace's largest limit, taken as its TDP), the
epoch's time and the GPU's measured mean draw. The rows below are the largest batch of each
workload whose draw reaches the cap (the trace's ShuffleNet and NCF runs never draw within 5% of
any cap: their rate is bound elsewhere).

A row is power-capped where its mean draw is within 5% of the cap (``BINDING``). The fit is
least squares on those rows of log(1 / epoch time) = k log(P - P_idle) + c_workload, one
intercept per workload, P the measured draw, P_idle = 0.1 x 250 W (tpsim's ``IDLE_SHARE``, the
idle draw presets assume). The whole epoch includes work that the SM clock does not set (input
pipeline, memory-bound kernels), so the kernels' own exponent is, if anything, larger.

    python bench/power_exponent.py
"""
from __future__ import annotations

import numpy as np

from tpsim.cluster.power import IDLE_SHARE
from tpsim.cluster.sustained import POWER_EXPONENT

TDP_W = 250.0
BINDING = 0.95
# (workload, batch size): [(power limit W, seconds per epoch, mean draw W)], the trace's rows.
TRACE = {
    ("imagenet resnet50", 360): [
        (100, 6822.45, 98.71), (125, 5145.34, 119.76), (150, 4179.75, 143.76),
        (175, 3851.47, 165.19), (200, 3705.62, 181.53), (225, 3582.42, 202.79),
        (250, 3519.50, 217.54)],
    ("librispeech deepspeech2", 192): [
        (100, 8477.90, 98.12), (125, 7361.96, 114.99), (150, 6845.56, 125.74),
        (175, 6533.73, 134.77), (200, 6353.21, 143.93), (225, 6199.13, 153.22),
        (250, 6181.63, 160.56)],
    ("squad bert-base", 56): [
        (100, 3769.47, 101.84), (125, 2947.12, 118.91), (150, 2325.37, 146.48),
        (175, 2005.14, 169.25), (200, 1884.20, 188.74), (225, 1807.78, 210.74),
        (250, 1766.01, 226.75)],
    ("sentiment140 bert-base", 128): [
        (100, 7724.07, 100.14), (125, 5918.45, 123.30), (150, 4939.33, 146.66),
        (175, 4626.85, 169.22), (200, 4432.79, 189.47), (225, 4208.98, 206.28),
        (250, 4114.86, 223.44)],
}


def binding_rows(binding: float = BINDING) -> list[tuple[int, float, float]]:
    """(workload index, P - P_idle, rate) of every row whose draw is within the cap's share."""
    idle = IDLE_SHARE * TDP_W
    return [(i, draw - idle, 1.0 / seconds)
            for i, rows in enumerate(TRACE.values())
            for cap, seconds, draw in rows if draw >= binding * cap]


def fit(binding: float = BINDING) -> float:
    """k of log rate = k log(P - P_idle) + c_workload, least squares (module docstring)."""
    rows = binding_rows(binding)
    workloads = sorted({w for w, _, _ in rows})
    design = np.zeros((len(rows), 1 + len(workloads)))
    for r, (w, power, _) in enumerate(rows):
        design[r, 0] = np.log(power)
        design[r, 1 + workloads.index(w)] = 1.0
    rates = np.log([rate for _, _, rate in rows])
    return float(np.linalg.lstsq(design, rates, rcond=None)[0][0])


def main() -> None:
    rows = binding_rows()
    print(f"V100 power trace (Zeus), {len(rows)} power-capped epochs of {len(TRACE)} workloads: "
          f"k = {fit():.3f} (shipped POWER_EXPONENT {POWER_EXPONENT:g}; 1/3 if V ~ f, 1 at the "
          "voltage floor)")
    for share in (0.90, 0.93, 0.95, 0.97):
        print(f"  rows with the draw >= {share:.0%} of the cap: k = {fit(share):.3f}")


if __name__ == "__main__":
    main()
