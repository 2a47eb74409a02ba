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

    python bench/grouped_gemm_published.py
"""
from __future__ import annotations

import dataclasses

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import grouped_gemm_time
from tpsim.layer.moe import GROUPED_GEMM_STREAMS

TOPOLOGY = "dgx-h100"
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


if __name__ == "__main__":
    main()
