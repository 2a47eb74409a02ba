"""The fit of ``dgx-h100-ndr-cluster``'s ``efficiency.hybridep`` (the rate HybridEP's dispatch and
combine kernels reach across nodes) on HybridEP's published H100 table, and what it gives.

Data: ``tests/data/published_collectives/hybridep_h100.csv`` (deepseek-ai/DeepEP branch
``hybrid-ep``, ``docs/README_Hybrid-EP.md``; its README section states the setting): 4096
tokens a rank, hidden 7168, top 8 of 8 experts a rank, uniform routing, BF16, the kernel alone,
at the table's largest SM count, 16 (HybridEP's own default across nodes is 8, ``csrc/hybrid_ep/
config.cuh`` ``Configurer``; Megatron-Bridge's performance harness gives it 32,
``scripts/performance/utils/overrides.py`` ``moe_hybridep_num_sms = 32``, and the recipes 16 or
32; the table's kernels run no faster at 16 than at 8, so 32 is taken as 16). Its
bandwidth counts T N 2h bytes, N the nodes a token goes to with its own node, so

    t = T N 2 h / bandwidth                        N = m (1 - C(E - E/m, k) / C(E, k))

is the measured kernel time. tpsim prices the kernel as
:func:`tpsim.cost.all_to_all.hierarchical_dispatch_time`: launch + latency + the slower of
the network stage (T 2h r over the rank's NIC) and the NVLink stage (T 2h R (g - 1)/g over its
NVLink), at the levels' line rates times ``efficiency.hybridep`` (the dispatch's rows 4 x 64
bytes longer: the probabilities they carry). Each stage's efficiency is
fitted where it binds, as the stage's line-rate time over the measured time less the fixed
part (the mean over dispatch and combine):

* NVLink: the 16-rank rows (2 nodes: each rank forwards 5.7 times the bytes it sends over its
  NIC); the network stage there would run at 31-36 GB/s of the NIC's 50, where the 32- and
  64-rank rows reach 43-44;
* network: the 32- and 64-rank rows (4 and 8 nodes).

Nothing else is fitted on these rows; ``bench/moe_published.py`` and
``bench/moe_overlap_published.py`` (Qwen3-30B-A3B EP 16 with HybridEP, 2 nodes) are the
checks. The API rows are printed beside: the Python call costs 1.2-1.4 times the kernel.

    python bench/hybridep_published.py
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from tpsim.base.schema import from_mapping, load_yaml
from tpsim.cluster.topology import Topology, shipped_topologies
from tpsim.cost.all_to_all import hierarchical_dispatch_time, uniform_fanout

DATA = Path(__file__).resolve().parents[1] / "tests/data/published_collectives/hybridep_h100.csv"
TOKENS, HIDDEN, TOP_K, LOCAL_EXPERTS, PER_NODE, SMS = 4096, 7168, 8, 8, 8, 16
CLUSTER = "dgx-h100-ndr-cluster"
# the benchmark's dispatch passes the routing weights: each row carries the fp32 probabilities
# of its target node's experts (tests/test_hybrid_ep.py; tpsim.cost.all_to_all.flex_dispatch_time)
PROBS = 4 * LOCAL_EXPERTS * PER_NODE


def line_rate_cluster() -> Topology:
    """The shipped cluster with every efficiency 1: the stages at line rate."""
    mapping = load_yaml(shipped_topologies()[CLUSTER])
    for level in mapping["levels"]:
        level["efficiency"] = {"ring": 1.0}
    return from_mapping(Topology, mapping, f"{CLUSTER} (line rate)")


def nodes_per_token(ranks: int) -> float:
    """N: the nodes a token's top-k experts sit on, its own counted (uniform routing)."""
    experts, m = ranks * LOCAL_EXPERTS, ranks // PER_NODE
    return m * (1 - math.comb(experts - experts // m, TOP_K) / math.comb(experts, TOP_K))


def rows():
    """(ranks, phase, measured kernel s, API s, the priced kernel at line rate) for the BF16
    rows at 16 SMs; phase dispatch or combine."""
    topo = line_rate_cluster()
    out = []
    with open(DATA) as f:
        for r in csv.DictReader(f):
            n = int(r["ranks"])
            if int(r["sms"]) != SMS:
                continue
            counted = TOKENS * nodes_per_token(n) * 2 * HIDDEN
            fan = uniform_fanout(n * LOCAL_EXPERTS, TOP_K, n, PER_NODE)
            for phase, key, b in (("dispatch", "dispatch_bf16", 2 * HIDDEN + PROBS),
                                  ("combine", "combine", 2 * HIDDEN)):
                line = hierarchical_dispatch_time(TOKENS, b, topo.place(n), topo, *fan)
                out.append((n, phase, counted / float(r[f"kernel_{key}_GBps"]) / 1e9,
                            counted / float(r[f"api_{key}_GBps"]) / 1e9, line))
    return out


def fit(data=None) -> tuple[float, float]:
    """(NVLink, network) efficiency.hybridep: each stage's line-rate time over the measured
    time less the fixed part, averaged over the rows where it binds (module docstring)."""
    data = rows() if data is None else data
    nvl = [d.nvlink_s / (t - d.launch_s - d.latency_s) for n, _, t, _, d in data if n == 16]
    net = [d.network_s / (t - d.launch_s - d.latency_s) for n, _, t, _, d in data if n > 16]
    return sum(nvl) / len(nvl), sum(net) / len(net)


def main() -> None:
    data = rows()
    e_nvl, e_net = fit(data)
    print(f"efficiency.hybridep fitted on {DATA.name} (BF16, kernel only, {SMS} SMs): "
          f"nvlink {e_nvl:.3f}, network {e_net:.3f}")
    print(f"\n{'ranks':>5s} {'phase':>9s} {'kernel us':>10s} {'API us':>8s} {'tpsim us':>9s} "
          f"{'err':>7s} {'bound':>8s} {'ring us':>8s}")
    for n, phase, t, api, d in data:
        fixed = d.launch_s + d.latency_s
        nvl, net = d.nvlink_s / e_nvl, d.network_s / e_net
        ring = d.launch_s + d.latency_s + max(d.nvlink_s / 0.82, d.network_s / 0.92)
        pred = fixed + max(nvl, net)
        print(f"{n:5d} {phase:>9s} {t * 1e6:10.0f} {api * 1e6:8.0f} {pred * 1e6:9.0f} "
              f"{pred / t - 1:+7.1%} {'nvlink' if nvl >= net else 'network':>8s} "
              f"{ring * 1e6:8.0f}")
    print("\nring us: the same kernel at the NCCL ring efficiencies shipped before "
          "(NVLink 0.82, network 0.92)")


if __name__ == "__main__":
    main()
