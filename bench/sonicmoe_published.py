"""tpsim's MoE layer on one H100 at fine-grained shapes against SonicMoE's published layer
benchmark, used in no fit.

SonicMoE (Guo, Mishra, Cheng, Stoica, Dao, "SonicMoE: Accelerating MoE with IO and Tile-aware
Optimizations", arXiv:2512.14080, Figure 14; the same figure is ``assets/tput.png`` of
Dao-AILab/sonic-moe, commit 8565e84) gives the forward and backward TFLOP/s of one MoE layer
(router, gather, up-projection with SwiGLU, down-projection, the experts' aggregation) on one
H100 in BF16, at four model sizes (tokens T, hidden d) and three granularities each (expert FFN
n, experts E, top K at equal active FLOPs), for seven implementations. The figure prints no
numbers: each bar's top was read off the image, 93 pixels to 200 TFLOP/s (about 2 TFLOP/s a
pixel), into tests/data/published_compute/moe_layer_sonicmoe.csv. Its benchmark script
(``benchmarks/moe-cute.py``) counts 6 T K n d FLOPs forward (two GEMMs, the first 2n wide) and
12 T K n d backward, the backward's time being ``do_bench`` of forward and backward less the
forward's, so each bar's time is

    t_fwd = 6 T K n d / TFLOPs_fwd,   t_bwd = 12 T K n d / TFLOPs_bwd.

"Megatron" is Megatron-core's MoE layer, the one tpsim models; the paper's figure does not state
its options (dispatcher, Transformer Engine's grouped GEMM or the legacy one, fusions). tpsim
prices Megatron-core's layer as it does by default (the all-to-all dispatcher at EP 1, so the
fused permutation and no exchange; Transformer Engine's grouped GEMM over 4 streams; the
router's fused top-k, no auxiliary loss) on one H100 of ``dgx-h100``: the MoE slot's forward and
backward on the simulated timeline (:func:`moe_layer_published.slot_times`). SonicMoE's own
bars (fused, IO-overlapped kernels) and DeepGEMM++'s (DeepGEMM's grouped GEMM with SonicMoE's
gather and aggregation kernels) are printed beside it: the fastest published layer at each shape.

The last table divides each size's coarsest shape's TFLOP/s by its finest's: how much a finer
granularity costs at equal FLOPs, published and in tpsim; a factor common to every shape of one
implementation (its options, the benchmark's) cancels there.

    python bench/sonicmoe_published.py
"""
from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from pathlib import Path

from moe_layer_published import slot_times
from tpsim.spec.model import load_model
from tpsim.training.predict import predict

TABLE = Path(__file__).resolve().parents[1] / "tests/data/published_compute/moe_layer_sonicmoe.csv"
TOPOLOGY = "dgx-h100"
IMPLEMENTATIONS = ("Megatron", "SonicMoE", "DeepGEMM++")


def load(path: Path = TABLE) -> dict:
    """{(model, T, d, n, E, K): {(pass, implementation): TFLOP/s}} from the table."""
    out: dict = defaultdict(dict)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["model"], *(int(r[c]) for c in ("tokens", "hidden", "expert_ffn",
                                                     "experts", "topk")))
            out[key][r["pass"], r["implementation"]] = float(r["tflops"])
    return dict(out)


def flops(T: int, d: int, n: int, K: int) -> tuple[float, float]:
    """(forward, backward) FLOPs as the benchmark counts them: 6 T K n d and 12 T K n d."""
    return 6.0 * T * K * n * d, 12.0 * T * K * n * d


def layer(T: int, d: int, n: int, E: int, K: int):
    """tpsim's prediction of one layer of Qwen3-30B-A3B's other fields at the shape: hidden d,
    E experts of FFN n, top K, no shared expert and no auxiliary loss, T tokens on one H100."""
    base = load_model("qwen3-30b-a3b")
    m = dataclasses.replace(base, name=f"sonicmoe-{d}-{n}-{E}-{K}", hidden=d, heads=d // 128,
                            kv_heads=d // 128, head_dim=128, expert_ffn_hidden=n,
                            experts=E, experts_per_token=K, shared_experts=0,
                            shared_expert_ffn_hidden=None, load_balancing="none")
    m.validate("SonicMoE shape")
    return predict(m, TOPOLOGY, tp=1, dp=1, ep=1, seq_len=T, micro_batch=1, dtype="bf16")


def rows(table: dict | None = None) -> list[tuple]:
    """(shape key, tpsim forward TFLOP/s, backward TFLOP/s, published {(pass, impl): TFLOP/s})."""
    out = []
    for key, published in (table or load()).items():
        _, T, d, n, E, K = key
        f_s, b_s = slot_times(layer(T, d, n, E, K))
        f_fl, b_fl = flops(T, d, n, K)
        out.append((key, f_fl / f_s / 1e12, b_fl / b_s / 1e12, published))
    return out


def granularity_cost(out: list[tuple]) -> list[tuple]:
    """(model, pass, tpsim, Megatron published): TFLOP/s of the size's coarsest shape (fewest
    experts) over its finest (most experts)."""
    by_model = defaultdict(list)
    for key, f, b, pub in out:
        by_model[key[0]].append((key[4], f, b, pub))
    res = []
    for model, shapes in by_model.items():
        shapes.sort()
        (_, fc, bc, pc), (_, ff, bf, pf) = shapes[0], shapes[-1]
        res.append((model, "fwd", fc / ff, pc["fwd", "Megatron"] / pf["fwd", "Megatron"]))
        res.append((model, "bwd", bc / bf, pc["bwd", "Megatron"] / pf["bwd", "Megatron"]))
    return res


def main() -> None:
    out = rows()
    print("one MoE layer on one H100, BF16, TFLOP/s (6 T K n d forward, 12 T K n d backward)")
    head = "".join(f"{x:>11s}" for x in ("tpsim", *IMPLEMENTATIONS, "tpsim/Meg."))
    print(f"{'model, n / E / K':26s} {'pass':4s}{head}")
    for key, f, b, pub in out:
        model, T, d, n, E, K = key
        for pas, mine in (("fwd", f), ("bwd", b)):
            cells = "".join(f"{pub[pas, impl]:11.0f}" for impl in IMPLEMENTATIONS)
            print(f"{model:5s} T {T:5d} d {d:4d} {n:4d}/{E:3d}/{K:2d} {pas:4s}{mine:11.0f}{cells}"
                  f"{mine / pub[pas, 'Megatron']:11.2f}")
    print("\nwhat the finest granularity costs: coarsest shape's TFLOP/s / finest's")
    print(f"{'model':6s} {'pass':4s} {'tpsim':>7s} {'Megatron':>9s}")
    for model, pas, mine, pub in granularity_cost(out):
        print(f"{model:6s} {pas:4s} {mine:7.2f} {pub:9.2f}")


if __name__ == "__main__":
    main()
