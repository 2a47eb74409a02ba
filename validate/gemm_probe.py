"""Why the attention core's GEMMs run below the linears' rate on a CPU (torch, one process).

    python validate/gemm_probe.py [--repeats 5]

One thread (as validate/run.py's ranks), warm operands, each time the best of ``repeats`` calls
(interference from other processes only adds time). Two tables:

  thin      fp32 matmuls with one dimension 64 (a head's) and square ones, by the bytes they
            move (gemm_bytes: both operands read, the output written once): the rate, and the
            time above the rate of the first (cache-resident, 5 MB), as bytes / that time;
  batched   the attention core's products as the layer runs them (tpsim.tp.layers'
            unfused_causal_attention: baddbmm on transposed (s, b*np, d) views, bmm), against
            contiguous bmm and the same GEMMs one by one (torch.mm per head).

It is what tpsim.cost.compute.gemm_time's gemm_memory_serial term stands on: a CPU GEMM's
operand bytes past its cache add time its arithmetic does not hide; the batched form costs
what the same GEMMs cost one by one.
"""
from __future__ import annotations

import argparse
import time

import torch

THIN = ((1024, 1024, 64), (2048, 2048, 64), (3072, 3072, 64), (2048, 64, 2048),
        (3072, 64, 3072), (2048, 2048, 256), (1024, 1024, 1024), (2048, 2048, 2048))
BATCHED = ((5, 384, 64), (2, 768, 64), (2, 1536, 64), (6, 1024, 64), (16, 512, 64))


def best_s(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def thin_table(repeats: int) -> list[str]:
    rows, base = [], None
    for m, n, k in THIN:
        a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        flops, nbytes = 2.0 * m * n * k, 4.0 * (m * k + k * n + m * n)
        t = best_s(lambda: torch.mm(a, b, out=c), repeats)
        base = base or flops / t                     # the first: cache-resident (5 MB)
        extra = t - flops / base
        rate = f"{nbytes / extra / 1e9:8.1f}" if extra > 0 else "       -"
        rows.append(f"{m:5d} x {n:5d} x {k:5d} {nbytes / 1e6:8.1f} {flops / t / 1e9:8.1f} "
                    f"{extra * 1e3:8.3f} {rate}")
    return ["    m x     n x     k       MB  GFLOP/s extra ms  MB/ms=GB/s"] + rows


def batched_table(repeats: int) -> list[str]:
    rows = []
    for bh, s, d in BATCHED:
        q, k, v = (torch.randn(s, bh, d).transpose(0, 1) for _ in range(3))   # (bh, s, d) views
        qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
        p, out = torch.randn(bh, s, s), torch.empty(bh, s, s)
        gflop = 2.0 * bh * s * s * d / 1e9
        runs = (lambda: torch.baddbmm(out, q, k.transpose(1, 2), beta=0.0, alpha=d ** -0.5),
                lambda: torch.bmm(qc, kc.transpose(1, 2)),
                lambda: [torch.mm(qc[i], kc[i].t()) for i in range(bh)],
                lambda: torch.bmm(p, v), lambda: torch.bmm(p, vc),
                lambda: [torch.mm(p[i], vc[i]) for i in range(bh)])
        rates = [gflop / best_s(fn, repeats) for fn in runs]
        rows.append(f"{bh:3d} x {s:5d} x {d:3d} " + " ".join(f"{r:8.1f}" for r in rates))
    return ["GFLOP/s          scores: baddbmm  bmm     per head | context: bmm view  bmm  "
            "per head", " bh x     s x   d"] + rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("\n".join(thin_table(args.repeats) + [""] + batched_table(args.repeats)))


if __name__ == "__main__":
    main()
