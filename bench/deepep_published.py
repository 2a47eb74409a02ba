"""The fit of DeepEP's intranode rate (``efficiency.deepep`` on NVLink, ``deepep_sm_copy_GBps``)
on its published B200 curve over SM counts, and its checks on other machines.

Data: ``tests/data/published_collectives/deepep_intranode.csv`` (its README section gives the
sources and settings): DeepEP's normal (V1) intranode kernels, 8 ranks, 4096 tokens, hidden
7168, top 8, timed through the Python API, on B200 and GB200 at 16-48 SMs (the DeepEP rows of
deepseek-ai/DeepEP branch ``hybrid-ep``, ``docs/README_Hybrid-EP.md``; 64 experts) and on H20
at DeepEP's test's 24 SMs (deepseek-ai/DeepEP issue #16; 256 experts). The metric counts what
a rank receives, its own slice included, T R b, over the time. tpsim prices the kernel as
:func:`tpsim.cost.all_to_all.hierarchical_dispatch_time` at the NVLink line rate B:

    t = launch + latency + max(T b R (g - 1)/g / (B eff),  T b R / (sms r))

Fitted, on the B200 BF16 dispatch rows only:

* ``eff`` (NVLink, ``efficiency.deepep``): the line-rate NVLink time over the measured time
  less the fixed part, averaged over the 36-48 SM rows, where the curve has flattened
  (635-646 GB/s);
* ``r`` (``deepep_sm_copy_GBps``): T R b / (16 (t - fixed)) on the 16-SM row.

Checked (used in no fit): the B200 rows at 24-32 SMs, GB200's 16-32, H20's one point (Hopper,
NVLink4's 450 GB/s; the maintainer's answer there: more SMs would raise it), and DeepEP's H800
table (``tests/cost/test_published_all_to_all.py``). The FP8 dispatch and the combine at 16-32
SMs are printed beside: one copy rate per SM does not hold for them (shorter FP8 rows, the
combine's reduction).

    python bench/deepep_published.py
"""
from __future__ import annotations

import csv
from pathlib import Path

from tpsim.base.schema import from_mapping, load_yaml
from tpsim.cluster.topology import Topology, shipped_topologies
from tpsim.cost.all_to_all import hierarchical_dispatch_time, uniform_fanout

DATA = Path(__file__).resolve().parents[1] / "tests/data/published_collectives/deepep_intranode.csv"
TOKENS, HIDDEN, TOP_K = 4096, 7168, 8
EXPERTS = {"b200": 64, "gb200": 64, "h20": 256}        # 8 local experts; DeepEP's test: 256
CLUSTER = {"b200": "dgx-b200", "gb200": "gb200-nvl72", "h20": "dgx-h100"}   # H20: NVLink4 x 18
BYTES = {"dispatch_fp8": HIDDEN * (1 + 4 / 128), "dispatch_bf16": 2 * HIDDEN, "combine": 2 * HIDDEN}
FIT_SMS, PLATEAU_SMS = 16, 36


def line_rate(name: str) -> Topology:
    """The shipped preset with every efficiency 1 and no SM bound: the stages at line rate."""
    mapping = load_yaml(shipped_topologies()[name])
    for level in mapping["levels"]:
        level["efficiency"] = {"ring": 1.0}
    mapping["device"].pop("deepep_sm_copy_GBps", None)
    return from_mapping(Topology, mapping, f"{name} (line rate)")


def rows():
    """(machine, sms, phase, measured s, T R b, the priced kernel at line rate) per published
    figure."""
    out = []
    with open(DATA) as f:
        for r in csv.DictReader(f):
            topo, n = line_rate(CLUSTER[r["machine"]]), int(r["ranks"])
            remote, ranks = uniform_fanout(EXPERTS[r["machine"]], TOP_K, n, n)
            for phase, b in BYTES.items():
                if r[f"api_{phase}_GBps"]:
                    moved = TOKENS * ranks * b
                    d = hierarchical_dispatch_time(TOKENS, b, topo.place(n), topo, remote, ranks)
                    out.append((r["machine"], int(r["sms"]), phase,
                                moved / float(r[f"api_{phase}_GBps"]) / 1e9, moved, d))
    return out


def fit(data=None) -> tuple[float, float]:
    """(efficiency.deepep on NVLink, deepep_sm_copy bytes/s): module docstring."""
    data = rows() if data is None else data
    bf16 = [(s, t, moved, d) for m, s, p, t, moved, d in data
            if m == "b200" and p == "dispatch_bf16"]
    eff = [d.nvlink_s / (t - d.launch_s - d.latency_s) for s, t, _, d in bf16 if s >= PLATEAU_SMS]
    rate = [moved / FIT_SMS / (t - d.launch_s - d.latency_s) for s, t, moved, d in bf16
            if s == FIT_SMS]
    return sum(eff) / len(eff), rate[0]


def priced(d, moved: float, sms: int, eff: float, rate: float) -> float:
    """The kernel's time at efficiency ``eff`` and ``rate`` per SM (the formula above)."""
    return d.launch_s + d.latency_s + max(d.nvlink_s / eff, moved / (sms * rate))


def main() -> None:
    data = rows()
    eff, rate = fit(data)
    print(f"fitted on {DATA.name} (B200, BF16 dispatch): efficiency.deepep {eff:.3f} "
          f"(SMs >= {PLATEAU_SMS}), deepep_sm_copy_GBps {rate / 1e9:.1f} ({FIT_SMS} SMs)")
    print(f"\n{'machine':>7s} {'SMs':>4s} {'phase':>14s} {'GB/s':>6s} {'tpsim':>6s} {'err':>7s} "
          f"{'bound':>6s} {'role':>6s}")
    for m, sms, phase, t, moved, d in data:
        pred = priced(d, moved, sms, eff, rate)
        fitted = m == "b200" and phase == "dispatch_bf16" and (sms == FIT_SMS or sms >= PLATEAU_SMS)
        role = "fit" if fitted else ("check" if phase == "dispatch_bf16" else "beside")
        bound = "nvlink" if d.nvlink_s / eff >= moved / (sms * rate) else "SMs"
        print(f"{m:>7s} {sms:4d} {phase:>14s} {moved / t / 1e9:6.0f} {moved / pred / 1e9:6.0f} "
              f"{t / pred - 1:+7.1%} {bound:>6s} {role:>6s}")
    print("\nerr: the published time over tpsim's less 1 (+: tpsim fast)")


if __name__ == "__main__":
    main()
