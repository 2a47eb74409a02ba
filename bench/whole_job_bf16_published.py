"""tpsim's training step against published whole-job runs on H100 in bf16, used in no fit.

MosaicML llm-foundry's MPT training benchmarks, ``scripts/train/benchmarking/README.md``
(mosaicml/llm-foundry, commit 5e85bd62d, January 2024), the "H100 80GB BF16" table: its 37 runs
on 8 H100 80GB (one node, no network), tests/data/published_steps/h100_bf16_llmfoundry.csv.
Each MPT model as its ``scripts/train/yamls/pretrain/mpt-*.yaml`` builds it
(``llmfoundry/models/mpt/configuration_mpt.py`` defaults: biases, tied embeddings, LayerNorm,
GELU MLP x4, no dropout, vocabulary 50368) and each run as the table lists it: Composer with
PyTorch FSDP FULL_SHARD over the 8 GPUs (tpsim: ZeRO-3), the micro-batch and gradient
accumulation, activation checkpointing (tpsim: full recomputation), FlashAttention 2
(``pip install .[gpu-flash2]``, ``attn_impl: flash``). Composer runs PyTorch's eager kernels
(``low_precision_layernorm``, unfused GELU and residual adds) and FSDP's default mixed
precision (fp32 gradient reduction), not the Transformer Engine kernels tpsim's H100 preset
prices.

    python bench/whole_job_bf16_published.py
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_steps"
TOPOLOGY = "dgx-h100"
# llm-foundry scripts/train/yamls/pretrain/mpt-*.yaml: (n_layers, d_model, n_heads)
MPT = {"mpt-760m": (24, 1536, 12), "mpt-1b": (24, 2048, 16), "mpt-3b": (32, 2560, 20),
       "mpt-7b": (32, 4096, 32), "mpt-13b": (40, 5120, 40), "mpt-30b": (48, 7168, 56)}


def rows() -> list[dict]:
    with open(DATA / "h100_bf16_llmfoundry.csv") as f:
        return list(csv.DictReader(f))


def run(r: dict) -> tuple[float, object]:
    """Predicted tokens/s per GPU of published run ``r``, and the prediction."""
    layers, hidden, heads = MPT[r["model"]]
    seq, gpus, mbs = int(r["seq_len"]), int(r["gpus"]), int(r["micro_batch"])
    m = ModelConfig(name=r["model"], layers=layers, hidden=hidden, heads=heads, vocab=50368,
                    seq_len=seq, bias=True, tie_embeddings=True)
    p = predict(m, TOPOLOGY, tp=1, dp=gpus, micro_batch=mbs,
                global_batch=mbs * int(r["grad_accum"]) * gpus, zero=3, dtype="bf16",
                attention="flash2",
                recompute="full" if r["activation_checkpointing"] == "true" else "none")
    return p.step.tokens_per_s / gpus, p


def main() -> int:
    print(f"  {'run':44s} {'published':>9s} {'tpsim':>7s}  error  fits")
    errors = []
    for r in rows():
        pred, p = run(r)
        pub = float(r["tokens_per_s_per_gpu"])
        errors.append(pred / pub - 1)
        name = (f"{r['model']} seq {r['seq_len']} mbs {r['micro_batch']} x{r['grad_accum']}"
                f"{' ckpt' if r['activation_checkpointing'] == 'true' else ''}")
        print(f"  {name:44s} {pub:9.0f} {pred:7.0f} {errors[-1]:+6.1%}  "
              f"{'yes' if p.memory.fits else 'NO'}")
    e = np.array(errors)
    print(f"  used in no fit (llm-foundry, 8 H100, bf16): {len(e)} runs, mean error "
          f"{e.mean():+.1%}, mean |error| {np.abs(e).mean():.1%}, max |error| "
          f"{np.abs(e).max():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
