"""tpsim's collective model against published nccl-tests all-reduce curves it was not fitted on.

Reads tests/data/published_collectives (index.csv names each curve's machine, NCCL, harness,
algorithm and role; README.md cites its source), prices every size with
``tpsim.collective_time`` on the curve's shipped topology and the algorithm the run used
(``auto`` unless the run forced one), and prints the median and max |predicted / measured - 1|
per curve and size band: 8 KiB - 1 MiB and 1 MiB - 8 GiB.

Roles: ``check`` (used in no fit; the goals: median <= 15% below 1 MiB, <= 10% from 1 MiB),
``fit`` (the NVLS step and efficiency were fitted on it, or, across nodes, its cluster's
``ll_host_latency_us``: not evidence), ``reference`` (a run
tpsim does not model: one host thread driving 8 GPUs with NCCL's defaults, or NCCL_ALGO=NVLS
on an A100, which has no NVLS) and ``multi-node`` (used in no fit; the same goals, reported
on their own line: they do not set the exit status). Below 1 MiB the goal holds for runs timed
one process per GPU, as a TP job runs; with one thread driving 8 GPUs (``-g 8``) the host's
eight launches set the floor there, a cost tpsim does not price.

    python bench/collectives_published.py           # the error table
    python bench/collectives_published.py --fit     # refit NVLS on the fit curve, then the table
    python bench/collectives_published.py --fit-ll  # refit each cluster's LL host latency

Across nodes a curve runs on its cluster: the shipped topology with ``ll_host_latency_us``
(index.csv, a property of the cluster's hosts: what an LL hop across the network pays beyond
NCCL's hwLat) on its network level; it is fitted on the cluster's ``fit`` curve (8 KiB - 1 MiB)
and checked on its other curves.
"""
from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from tpsim.cost.collectives import bus_factor, collective_time
from tpsim.cluster.nccl import NCCL_NVLS, nccl_release, with_nccl
from tpsim.cluster.topology import load_topology

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_collectives"
KiB, MiB, GiB = 2**10, 2**20, 2**30
BANDS = (("8KiB-1MiB", 8 * KiB, MiB), ("1MiB-8GiB", MiB, 8 * GiB + 1))


def curves(index: str = "index.csv", op: str = "all-reduce") -> list[dict]:
    """Every curve of ``index`` (index.csv: all-reduce; alltoall_index.csv: all-to-all): its
    metadata, ``op``, ``sizes`` (bytes) and ``times`` (seconds).

    Tables that print only bus bandwidth give time = S * bus_factor / busbw (nccl-tests'
    definition run backwards).
    """
    with open(DATA / index) as f:
        meta = list(csv.DictReader(f))
    out = []
    for m in meta:
        ranks = int(m["ranks"])
        with open(DATA / m["file"]) as f:
            rows = list(csv.DictReader(f))
        sizes = np.array([float(r["size_bytes"]) for r in rows])
        times = np.array([float(r["time_us"]) * 1e-6 if r["time_us"] else
                          s * bus_factor(op, ranks) / (float(r["busbw_GBps"]) * 1e9)
                          for s, r in zip(sizes, rows)])
        out.append({**m, "op": op, "ranks": ranks, "sizes": sizes, "times": times})
    return out


# The all-to-all curves print no NCCL version. Their run is most likely 2.25-2.28: NCCL supports
# B200 from v2.25.1-1 (SM100_NVLINK_BW and the sm100 search speeds in src/graph, the Blackwell
# row of tuning.cc's tables; 2.22-2.24 know none of them), and the one-node curve's 4 MiB point,
# slower than its 8 MiB one, is LL up to 512 KiB a peer, a rule of 2.22-2.28 only (enqueue.cc
# addP2pToPlan). 2.25-2.27 price an all-to-all alike (tpsim.cluster.nccl); 2.28 runs the same
# p2p code. Priced as 2.25, and beside it as 2.21 (= 2.29-2.30 and the shipped rule in a node:
# LL to 16 KiB a peer), so the spread shows.
A2A_RELEASE = "2.25"
A2A_NEIGHBOUR = "2.21"


def a2a_curves(release: str = A2A_RELEASE) -> list[dict]:
    """The all-to-all curves (alltoall_index.csv), each to be priced as NCCL ``release``."""
    return [{**c, "priced_nccl": release} for c in curves("alltoall_index.csv", "all-to-all")]


def cluster_topology(curve: dict, ll_host_us: float | None = None):
    """The curve's shipped topology as the curve's NCCL runs NVLS and p2p (``with_nccl`` of the
    release index.csv names, or of ``priced_nccl`` where the curve carries one, where tpsim
    lists it: 2.18-2.30), with its cluster's ``ll_host_latency_us`` (index.csv, or
    ``ll_host_us``) on every network level."""
    release = nccl_release(curve.get("priced_nccl") or curve.get("nccl", "").split(" ")[0])
    topo = with_nccl(load_topology(curve["topology"]), release if release in NCCL_NVLS else None)
    value = ll_host_us if ll_host_us is not None else curve.get("ll_host_latency_us") or ""
    if value == "":
        return topo
    levels = tuple(dataclasses.replace(lv, ll_host_latency_s=float(value) * 1e-6)
                   if lv.inter_node else lv for lv in topo.levels)
    return dataclasses.replace(topo, levels=levels)


def predicted(curve: dict, topo=None) -> np.ndarray:
    """Model seconds at each size of ``curve``, with the algorithm its run used."""
    topo = topo or cluster_topology(curve)
    return np.array([collective_time(curve.get("op", "all-reduce"), s, curve["ranks"], topo,
                                     curve["algorithm"]).time_s for s in curve["sizes"]])


def band_errors(curve: dict, topo=None) -> dict[str, np.ndarray]:
    """|predicted / measured - 1| per size band (only the sizes the curve has in that band)."""
    err = np.abs(predicted(curve, topo) / curve["times"] - 1)
    s = curve["sizes"]
    return {name: err[(s >= lo) & (s < hi)] for name, lo, hi in BANDS}


def goal_for(curve: dict, band: str) -> float | None:
    """The median error a check or multi-node curve must meet in ``band``, or None where none
    applies."""
    if curve["role"] not in ("check", "multi-node"):
        return None
    if band.startswith("8KiB"):
        return 0.15 if curve["harness"] == "process per GPU" else None
    return 0.10


def fit_nvls(curve: dict) -> tuple[float, float, float]:
    """(efficiency.nvls, nvls_step_us, rms log error): least squares on log(model / measured)
    over the curve's sizes >= 2 MiB (above the harness's launch floor), every other
    parameter as shipped. Needs scipy (the ``validate`` extra)."""
    from scipy.optimize import least_squares
    base = load_topology(curve["topology"])
    keep = curve["sizes"] >= 2 * MiB
    sub = {**curve, "sizes": curve["sizes"][keep], "times": curve["times"][keep]}

    def topo(x):
        lv = base.levels[0]
        eff = dataclasses.replace(lv.efficiency, nvls=float(x[0]))
        lv = dataclasses.replace(lv, efficiency=eff, nvls_step_s=float(x[1]) * 1e-6)
        return dataclasses.replace(base, levels=(lv, *base.levels[1:]))

    res = least_squares(lambda x: np.log(predicted(sub, topo(x)) / sub["times"]),
                        x0=[0.7, 3.0], bounds=([0.05, 0.0], [1.0, 50.0]))
    return float(res.x[0]), float(res.x[1]), float(np.sqrt(np.mean(res.fun ** 2)))


def fit_ll_host(curve: dict) -> tuple[float, float]:
    """(ll_host_latency_us, rms log error): least squares on log(model / measured) over the
    curve's sizes from 8 KiB to 1 MiB (where LL runs), every other parameter as shipped."""
    from scipy.optimize import least_squares
    keep = (curve["sizes"] >= 8 * KiB) & (curve["sizes"] < MiB)
    sub = {**curve, "sizes": curve["sizes"][keep], "times": curve["times"][keep]}
    res = least_squares(lambda x: np.log(predicted(sub, cluster_topology(sub, x[0]))
                                         / sub["times"]), x0=[1.0], bounds=([0.0], [100.0]))
    return float(res.x[0]), float(np.sqrt(np.mean(res.fun ** 2)))


def print_rows(curve_list: list[dict]) -> tuple[list[str], list[str]]:
    """Print each curve's band rows; return the (check, multi-node) curves missing a goal."""
    print(f"{'curve':40s} {'role':10s} {'algo':5s} {'band':10s} {'n':>3s} {'median':>7s} "
          f"{'max':>7s} {'goal':>5s}")
    failed, across = [], []
    for c in curve_list:
        for band, err in band_errors(c).items():
            if not len(err):
                continue
            med, worst = float(np.median(err)), float(err.max())
            goal = goal_for(c, band)
            print(f"{c['file'][:-4]:40s} {c['role']:10s} {c['algorithm']:5s} {band:10s} "
                  f"{len(err):3d} {med:7.1%} {worst:7.1%} {f'{goal:.0%}' if goal else '-':>5s}")
            if goal and med > goal:
                (failed if c["role"] == "check" else across).append(f"{c['file']} {band}")
    return failed, across


def main(argv: list[str]) -> int:
    all_curves = curves()
    if "--fit-ll" in argv:
        for c in all_curves:
            if c["role"] == "fit" and c["ranks"] > 8:
                value, rms = fit_ll_host(c)
                print(f"LL host fit on {c['file']} (8 KiB-1 MiB): ll_host_latency_us = "
                      f"{value:.2f} (rms log error {rms:.1%})")
        print()
    if "--fit" in argv:
        fit = next(c for c in all_curves if c["role"] == "fit" and c["algorithm"] == "nvls")
        eff, step, rms = fit_nvls(fit)
        print(f"NVLS fit on {fit['file']} (sizes >= 2 MiB): efficiency.nvls = {eff:.3f}, "
              f"nvls_step_us = {step:.2f} (rms log error {rms:.1%})\n")
    failed, across = print_rows(all_curves)
    print("\ngoals (check curves): median <= 15% below 1 MiB (one process per GPU), <= 10% "
          "from 1 MiB: "
          + ("met" if not failed else "missed on " + ", ".join(failed)))
    print("the same goals across nodes (multi-node curves): "
          + ("met" if not across else "missed on " + ", ".join(across)))
    print_a2a()
    return 1 if failed else 0


def print_a2a() -> None:
    """The all-to-all rows, priced as their most likely NCCL and as its neighbour."""
    print("\nall-to-all (alltoall_perf; alltoall_index.csv), on their own: not in the exit "
          f"status; priced as NCCL {A2A_RELEASE} (most likely 2.25-2.28: LL to 512 KiB a peer)")
    a2a_failed, _ = print_rows(a2a_curves())
    print("all-to-all goals (the same): "
          + ("met" if not a2a_failed else "missed on " + ", ".join(a2a_failed)))
    print(f"\nthe same priced as NCCL {A2A_NEIGHBOUR} (2.18-2.21, 2.29-2.30 and the shipped "
          "files: LL to 16 KiB a peer)")
    print_rows(a2a_curves(A2A_NEIGHBOUR))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
