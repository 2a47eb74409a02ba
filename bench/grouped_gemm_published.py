"""tpsim's grouped GEMM of small experts against a published H100 grouped-GEMM benchmark, used
in no fit.

tgale96/grouped_gemm PR #37 ("SM90 Hopper Grouped GEMM Kernels", 2026-03-03) times, on an H100,
the experts' first GEMM of Qwen3-30B-A3B (``up_proj``: 128 experts, k = hidden 2048, n = 2 x
expert FFN 768 = 1536, 65,536 routed rows split evenly: 512 a expert), forward and backward, with
five backends; its table gives TFLOP/s per backend. The fork's ``benchmark.py`` (Knarf04/
grouped_gemm, commit 1d388bd) times ``out = gmm(x, w, batch_sizes); out.sum().backward()`` under
``torch.profiler`` with CUDA activities only and divides the forward's FLOPs (2 R k n) by the
summed kernel time of the forward and backward (``device_time_total``): the kernels alone,
without the host's gaps between them, the backward's data and weight gradients included (and
the small ``sum`` and its gradient's fill). So each row's time is

    t_pub = 2 R k n / TFLOPs_pub

for the forward GEMM, the data gradient (m x k) = (m x n)(n x k) and the weight gradient
(n x k) = (n x m)(m x k) of every expert, each written in bf16 (the package's weight gradient
is not accumulated into an fp32 main gradient). The fork's own script sets 4096 x top-8 =
32,768 rows (an earlier commit than the PR's table, which states 65,536); both are printed.

Backends: "cuBLAS (base)" is the package's default, one ``cublasGemmEx`` per expert in a C++
loop on one stream (``csrc/grouped_gemm.cu`` ``CublasGroupedGemm``: Megatron-core's legacy
``moe_grouped_gemm`` path); "CUTLASS SM90 cooperative" is one grouped kernel over every
expert's tiles. tpsim prices the three GEMMs of the 128 experts with
:func:`tpsim.cost.compute.grouped_gemm_time` on one stream (the loop), on Transformer Engine's
4 streams (``tpsim.layer.moe.GROUPED_GEMM_STREAMS``) and with every expert side by side (128:
the tiles of all experts packed, one grouped kernel), each without the kernel launch
(``kernel_launch_us``; the profiler sums kernel time only), on one H100 of ``dgx-h100``.

Then Transformer Engine's own grouped GEMM (tests/data/published_compute/grouped_gemm_te.csv:
TE PR #2045, H100, ``general_grouped_gemm`` at Qwen3-30B-A3B's expert dimensions, 8 groups of
4,096 rows and 16 of 2,048: the shapes of its training rows' local experts), timed on the host's
clock over back-to-back calls, so each GEMM's launch counts: tpsim's 4 streams with the launch,
for (m, n, k) as the PR writes the shape and with n and k swapped (the table does not say which
of 768 and 2,048 is the reduction).

    python bench/grouped_gemm_published.py
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import grouped_gemm_time
from tpsim.layer.moe import GROUPED_GEMM_STREAMS

TOPOLOGY = "dgx-h100"
TE_TABLE = Path(__file__).resolve().parents[1] / "tests/data/published_compute/grouped_gemm_te.csv"
EXPERTS, K, N = 128, 2048, 1536
ROWS = (65536, 32768)             # the PR's table; the fork's benchmark.py
PUBLISHED = {"cuBLAS (base), one GEMM per expert": 129.5, "CUTLASS SM80 grouped": 116.9,
             "cuBLAS SM90 batched": 85.2, "CUTLASS SM90 cooperative grouped": 160.5,
             "CUTLASS SM90 pingpong grouped": 134.0}   # TFLOP/s, uniform split (PR #37 table)


def tpsim_s(rows: int, streams: int) -> float:
    """Forward, data gradient and weight gradient of the experts, kernels only (the device's
    ``kernel_launch_us`` set to 0), bf16 out, seconds."""
    device = dataclasses.replace(load_topology(TOPOLOGY).device, kernel_launch_s=0.0)
    m = rows / EXPERTS
    shapes = ((m, N, K), (m, K, N), (N, K, m))
    return sum(grouped_gemm_time(a, b, c, device, "bf16", EXPERTS, streams) for a, b, c in shapes)


def te_rows(path: Path = TE_TABLE) -> list[tuple]:
    """(groups, m, n, k, implementation, published TFLOP/s, tpsim (m, n, k), tpsim (m, k, n)):
    tpsim on Transformer Engine's streams, each GEMM with its launch."""
    device = load_topology(TOPOLOGY).device
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            g, m, n, k = (int(r[c]) for c in ("groups", "m", "n", "k"))
            flops = 2.0 * g * m * n * k
            mine = [flops / grouped_gemm_time(m, a, b, device, "bf16", g, GROUPED_GEMM_STREAMS)
                    / 1e12 for a, b in ((n, k), (k, n))]
            out.append((g, m, n, k, r["implementation"], float(r["tflops"]), *mine))
    return out


def print_te() -> None:
    print("\nTransformer Engine's grouped GEMM, H100, TFLOP/s (TE PR #2045)")
    print(f"{'groups x (m, n, k)':24s} {'published':44s} {'TFLOP/s':>8s} {'tpsim mnk':>10s} "
          f"{'tpsim mkn':>10s}")
    for g, m, n, k, impl, pub, mnk, mkn in te_rows():
        print(f"{g:2d} x ({m}, {n}, {k})     {impl:44s} {pub:8.1f} {mnk:6.0f} {mnk / pub - 1:+4.0%}"
              f" {mkn:6.0f} {mkn / pub - 1:+4.0%}")


def main() -> None:
    print("Qwen3-30B-A3B up_proj, 128 experts, k 2048, n 1536, bf16, forward + backward, "
          "H100, ms of kernel time")
    for rows in ROWS:
        flops = 2.0 * rows * K * N
        print(f"\n{rows} routed rows ({rows // EXPERTS} a expert)")
        for name, tflops in PUBLISHED.items():
            print(f"  published  {name:36s} {flops / (tflops * 1e12) * 1e3:7.2f}")
        for streams, label in ((1, "one stream (the per-expert loop)"),
                               (GROUPED_GEMM_STREAMS, "Transformer Engine's streams"),
                               (EXPERTS, "every expert side by side")):
            print(f"  tpsim      {label:36s} {tpsim_s(rows, streams) * 1e3:7.2f}")
    print_te()


if __name__ == "__main__":
    main()
