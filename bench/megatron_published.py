"""tpsim's training-step prediction against Megatron-LM's published end-to-end throughput.

Two tables, used in no fit (tpsim's parameters come from datasheets and microbenchmarks):

* Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters", SC21),
  Table 1: weak scaling on Selene (DGX A100 80GB, 8 HDR NICs per node), 1.7B to 1T GPT, V=51200,
  s=2048, full activation recomputation; TFLOP/s per GPU with the paper's count
  F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) (recomputation included), turned into the step's
  seconds with that same count (so both sides share one FLOP convention). The table does not
  list the micro-batch, the interleaving nor the DDP; the paper's own scripts do
  (NVIDIA/Megatron-LM ``examples/sc21/run_table_1.sh`` and ``CONFIG.sh``, commit 6985e58938,
  August 2021): micro-batch 16/16/16/8/4/2/2/1/1/1, layers per virtual stage 5 (76B, 145B),
  3 (310B), 1 (530B), ``--DDP-impl torch`` (PyTorch DDP: fp16 gradients all-reduced in buckets
  beside the backward of the last micro-batch, ``no_sync`` before it) up to 18B and ``local``
  (after the whole backward) above, ``--fp16``, nodes = GPUs / 8. Megatron-LM of 2021
  (``--framework megatron-lm-2021``): 1F1B, scatter/gather of the p2p activations over the TP
  ranks (section 4.1), fp16, unfused attention.
* Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
  Table 5: iteration time of 22B, 175B (interleaved, 3 chunks), 530B (interleaved, 3 chunks) and
  1T on A100, DP = 1, with full recomputation, and with sequence parallelism + selective
  recomputation.

Calculon (Isaev et al. 2023) reports 3.65% mean absolute error on Korthikanti's Table 5.

    python bench/megatron_published.py
"""
from __future__ import annotations

import sys
import time

import numpy as np

from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict
from tpsim.cluster.topology import load_topology
from tpsim.spec.frameworks import FRAMEWORKS

PEAK = 312e12          # A100 bf16/fp16 dense, the papers' peak
SELENE = "dgx-a100-hdr-cluster"
COMMON = dict(dtype="fp16", attention="unfused", scatter_gather_p2p=True,
              overlap_grad_reduce=False)
STACK_2021 = dict(FRAMEWORKS["megatron-lm-2021"], dtype="fp16", attention="unfused")

# params (B), heads, hidden, layers, TP, PP, GPUs, global batch, micro-batch, virtual stages,
# gradients reduced beside the backward (torch DDP), published TFLOP/s per GPU; the layout of
# examples/sc21/run_table_1.sh (module docstring)
NARAYANAN_TABLE1 = (
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 16, 1, True, 137),
    (3.6, 32, 3072, 30, 2, 1, 64, 512, 16, 1, True, 138),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 16, 1, True, 142),
    (18.4, 48, 6144, 40, 8, 1, 256, 1024, 8, 1, True, 135),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 4, 1, False, 138),
    (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 2, 3, False, 140),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 2, 2, False, 148),
    (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 1, 2, False, 155),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 1, 3, False, 163),
    (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 1, 1, False, 163))

# name, heads, hidden, layers, TP, PP, virtual stages, global batch, micro-batch,
# measured iteration time (s): full recompute, sequence parallel + selective recompute
KORTHIKANTI_TABLE5 = (
    ("22B", 64, 6144, 48, 8, 1, 1, 4, 4, 1.42, 1.10),
    ("175B", 96, 12288, 96, 8, 8, 3, 64, 1, 18.13, 13.75),
    ("530B", 128, 20480, 105, 8, 35, 3, 280, 1, 49.05, 37.83),
    ("1T", 160, 25600, 128, 8, 64, 1, 512, 1, 94.42, 71.49))


def gpt(name: str, heads: int, hidden: int, layers: int) -> ModelConfig:
    return ModelConfig(name=name, layers=layers, hidden=hidden, heads=heads, vocab=51200,
                       seq_len=2048, dropout=0.1, bias=True, tie_embeddings=True)


def narayanan_flops(batch: int, layers: int, hidden: int, s: int = 2048, V: int = 51200):
    """Eq. 3 of Narayanan et al. 2021: 96 B s l h^2 (1 + s/(6h) + V/(16 l h))."""
    return 96 * batch * s * layers * hidden ** 2 * (1 + s / (6 * hidden) + V / (16 * layers * hidden))


def narayanan() -> list[tuple[str, float, float]]:
    out = []
    for params, a, h, L, tp, pp, gpus, gb, mb, v, torch_ddp, tflops in NARAYANAN_TABLE1:
        dp = gpus // (tp * pp)
        p = predict(gpt(f"{params}B", a, h, L), SELENE, tp=tp, pp=pp, dp=dp, global_batch=gb,
                    micro_batch=mb, virtual_stages=v, recompute="full", nodes=gpus // 8,
                    **{**STACK_2021, "overlap_grad_reduce": torch_ddp})
        published = narayanan_flops(gb, L, h) / (tflops * 1e12 * gpus)   # step seconds
        out.append((f"{params:7.1f}B tp{tp} pp{pp:2d} dp{dp:3d} mb{mb:2d} v{v}", published,
                    p.step.time_s))
    return out


def korthikanti() -> list[tuple[str, float, float]]:
    out = []
    for name, a, h, L, tp, pp, v, gb, mb, full, seqsel in KORTHIKANTI_TABLE5:
        topo = "dgx-a100" if tp * pp <= 8 else SELENE
        nodes = None if topo == "dgx-a100" else -(-tp * pp // 8)
        for mode, measured, kw in (("full", full, dict(recompute="full")),
                                   ("seq+sel", seqsel, dict(recompute="selective",
                                                            sequence_parallel=True))):
            p = predict(gpt(name, a, h, L), topo, tp=tp, pp=pp, global_batch=gb, micro_batch=mb,
                        virtual_stages=v, nodes=nodes, **COMMON, **kw)
            out.append((f"{name:>5s} {mode:8s}", measured, p.step.time_s))
    return out


def table(title: str, unit: str, rows) -> float:
    print(f"{title}\n  {'run':30s} {'published':>10s} {'tpsim':>10s}   error")
    e = np.array([pred / pub - 1 for _, pub, pred in rows])
    for (name, pub, pred), x in zip(rows, e):
        print(f"  {name:30s} {pub:10.2f} {pred:10.2f}   {x:+6.1%}   {unit}")
    print(f"  mean |error| {np.abs(e).mean():.1%}, max {np.abs(e).max():.1%}")
    return float(np.abs(e).mean())


def main(argv: list[str]) -> int:
    load_topology(SELENE)
    t0 = time.process_time()
    table("Narayanan et al. 2021, Table 1 (step time: the published TFLOP/s per GPU through the "
          "paper's own FLOP count)", "s", narayanan())
    table("Korthikanti et al. 2022, Table 5 (iteration time)", "s", korthikanti())
    print("Calculon on Korthikanti Table 5: 3.65% mean |error| (its published validation)")
    print(f"{time.process_time() - t0:.1f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
