"""tpsim's training step against published whole-job runs in bf16 on one node, used in no fit.

MosaicML llm-foundry's MPT training benchmarks, ``scripts/train/benchmarking/README.md``
(mosaicml/llm-foundry), two tables added by commit b2a43a147 (October 2023), unchanged at
5e85bd62d: "H100 80GB BF16", 37 runs on 8 H100 (tests/data/published_steps/
h100_bf16_llmfoundry.csv), and the 8-GPU runs of "A100 80GB with 1600 Gbps node-node
interconnect", 59 runs on 8 A100 80GB (a100_bf16_llmfoundry.csv); one node each, no network.
Each MPT model as llm-foundry v0.3.0's ``scripts/train/yamls/pretrain/mpt-*.yaml`` builds it
(``llmfoundry/models/mpt/configuration_mpt.py`` defaults: biases, tied embeddings, LayerNorm,
GELU MLP x4, no dropout, vocabulary 50368; learned position embeddings, not priced) and each run
as its table lists it: PyTorch FSDP FULL_SHARD over the 8 GPUs (tpsim: ZeRO-3), the
micro-batch (``submit_benchmarks.py``'s ``--microbatch_size``, not Composer's ``auto``) and
gradient accumulation, activation checkpointing of whole MPT blocks (tpsim: full
recomputation). The software: PyTorch 2.1 (``sweep.sh``'s image
``mosaicml/pytorch:2.1.0_cu121-python3.10-ubuntu20.04``; v0.3.0's ``setup.py`` allows
``torch<2.1.1``) and Composer 0.16.3 or 0.16.4 (``mosaicml>=0.16.3,<0.17``). The yamls'
``fsdp_config``: ``limit_all_gathers: true`` (FSDP's rate limiter, two units' all-gathers in
flight), ``activation_checkpointing_reentrant: false``, ``activation_cpu_offload: false``;
Composer's defaults for the rest (``composer/trainer/dist_strategy.py``,
``set_fsdp_default``): ``backward_prefetch: BACKWARD_POST``, ``forward_prefetch: false``,
``use_orig_params: true``: one unit gathered ahead, as tpsim's FSDP schedule runs
(:mod:`tpsim.training.sharded_dp`). Composer's ``DEFAULT`` mixed precision gathers bf16; its
``reduce_dtype`` is fp32 in 0.16.4 (``composer/trainer/mosaic_fsdp_utils.py``,
``get_mixed_precision``), unset in 0.16.3 (bf16 under PyTorch 2.1's FSDP): tpsim
reduce-scatters fp32 gradients, as 0.16.4 does. Every MPT yaml's optimizer is Composer's
``DecoupledAdamW`` at weight decay 0; ``submit_benchmarks.py`` sets ``norm_type:
low_precision_layernorm`` (LayerNorm in bf16 under autocast, no fp32 output to cast back:
tpsim's fused 16-bit kernel).

The stack is ``--framework llm-foundry`` (:mod:`tpsim.spec.frameworks`): ``submit_benchmarks.py``
at b2a43a147 installs llm-foundry v0.3.0 with ``.[gpu]`` and leaves ``attn_impl`` at its default
``triton``: llm-foundry's copy of flash-attention's ``flash_attn_triton.py`` on Triton's pre-MLIR
compiler, not FlashAttention-2. Its kernel (``triton`` in the topologies) is fitted on its own
A100 forward and backward timings (xformers PR #479, python bench/triton_attention_published.py);
dgx-h100's is derived from it (topologies/dgx-h100.yaml): no H100 timing of it was found. The
loss is flash-attn's fused cross-entropy (``--cross-entropy xentropy``): v0.3.0's
``ComposerMPTCausalLM`` defaults to ``loss_fn: fused_crossentropy``, which ``.[gpu]`` installs.
After each micro-batch's backward, Composer 0.16 updates the model's two training metrics
(``LanguageCrossEntropy``, ``LanguagePerplexity``): two cross-entropies over the logits in fp32,
without gradient (``--train-metrics 2``).

The table "A100 40GB with 1600 Gbps node-node interconnect (RoCE)" (a100_40gb_bf16_llmfoundry.csv,
78 runs on 8 to 128 A100-SXM4-40GB, ``dgx-a100-40gb``: its RoCE network joins the nodes) is the
earlier edition's, unchanged since the README's first commit (300cc5c58, May 2023): that
commit's ``submit_benchmarks.py`` and ``sweep.sh`` ran mosaicml/examples v0.0.4's MosaicGPT (the
same MPT blocks, ``yamls/mosaic_gpt/*.yaml``: 70B is 80 layers of 8,192, 64 heads) on PyTorch
1.13.1 (``mosaicml/pytorch:1.13.1_cu117``) and Composer 0.13.4 (v0.0.4's requirements), with the
same ``attn_impl: triton``, ``low_precision_layernorm``, fused cross-entropy (flash-attn 0.2.8's
xentropy), two train metrics updated every micro-batch (Composer 0.13.4's
``_eval_train_metrics``), ``limit_all_gathers`` and non-reentrant checkpointing. Its
``--fsdp_config_mixed_precision`` default is ``PURE``: Composer 0.13.4's
``get_mixed_precision`` sets ``reduce_dtype`` to bf16, so the gradients are reduce-scattered in
bf16 (``--grad-reduce-in-bf16``, the one setting apart from the 80 GB rows; FSDP casts each
reduced shard back to the fp32 parameter and keeps it so, as tpsim.training.shard_state counts
it); its ``bf16``
precision is Composer's deprecated name for ``amp_bf16`` (``trainer.py``). A published run that
tpsim calls "does not fit" is flagged ``NO`` with the GiB it lacks.

Each row also prints the memory tpsim leaves free on the card (its capacity less the step's
count and the allocator's reserve, GiB), attention's share of tpsim's step and the factor by
which tpsim's attention would have to run faster to meet the published step (other terms as
priced): a diagnosis of which term misses, fitted on nothing.

    python bench/whole_job_bf16_published.py
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_steps"
# the tables, each on its nodes: (data file, topology, card, settings beyond the stack's preset)
TABLES = (("h100_bf16_llmfoundry.csv", "dgx-h100", "8 H100", {}),
          ("a100_bf16_llmfoundry.csv", "dgx-a100", "8 A100 80GB", {}),
          ("a100_40gb_bf16_llmfoundry.csv", "dgx-a100-40gb", "A100 40GB",
           {"grad_reduce_in_bf16": True}))      # Composer's PURE mixed precision
FRAMEWORK = "llm-foundry"
# llm-foundry v0.3.0 scripts/train/yamls/pretrain/mpt-*.yaml (70B: mosaicml/examples v0.0.4
# examples/llm/yamls/mosaic_gpt/70b.yaml): (n_layers, d_model, n_heads)
MPT = {"mpt-125m": (12, 768, 12), "mpt-350m": (24, 1024, 16), "mpt-760m": (24, 1536, 12),
       "mpt-1b": (24, 2048, 16), "mpt-3b": (32, 2560, 20), "mpt-7b": (32, 4096, 32),
       "mpt-13b": (40, 5120, 40), "mpt-30b": (48, 7168, 56), "mpt-70b": (80, 8192, 64)}


def rows(name: str = TABLES[0][0]) -> list[dict]:
    with open(DATA / name) as f:
        return list(csv.DictReader(f))


def run(r: dict, topology: str = TABLES[0][1], settings: dict | None = None) -> tuple[float, object]:
    """Predicted tokens/s per GPU of published run ``r`` on ``topology`` (``settings``: layout
    knobs beyond the stack's preset), and the prediction."""
    layers, hidden, heads = MPT[r["model"]]
    seq, gpus, mbs = int(r["seq_len"]), int(r["gpus"]), int(r["micro_batch"])
    m = ModelConfig(name=r["model"], layers=layers, hidden=hidden, heads=heads, vocab=50368,
                    seq_len=seq, bias=True, tie_embeddings=True)
    p = predict(m, topology, tp=1, dp=gpus, micro_batch=mbs,
                global_batch=mbs * int(r["grad_accum"]) * gpus, zero=3, dtype="bf16",
                recompute="full" if r["activation_checkpointing"] == "true" else "none",
                **FRAMEWORKS[FRAMEWORK], **(settings or {}))   # every knob of the stack's preset
    return p.step.tokens_per_s / gpus, p


def attention_terms(p, published_tokens_per_s: float) -> tuple[float, float]:
    """(attention's share of tpsim's step, the speed-up of attention that meets the published
    step with every other term as priced: a / (T_published - (T - a))); nan past reach."""
    st = p.step
    a = sum(o.time_s for o in p.ops if o.kind == "attention") * p.model.layers * st.micro_batches
    published = st.time_s * st.tokens_per_s / (published_tokens_per_s * st.dp)
    left = published - (st.time_s - a)
    return a / st.time_s, a / left if left > 0 else float("nan")


def free_gib(mem) -> float:
    """GiB tpsim leaves free on the card: capacity - the step's count - the allocator's reserve."""
    return (mem.capacity_bytes - mem.total_bytes - mem.reserved_bytes) / 2**30


def label(r: dict) -> str:
    """A run's name: model, sequence, GPUs (when not one node), micro-batch x accumulation."""
    gpus = f" on {r['gpus']}" if r["gpus"] != "8" else ""
    return (f"{r['model']} seq {r['seq_len']}{gpus} mbs {r['micro_batch']} x{r['grad_accum']}"
            f"{' ckpt' if r['activation_checkpointing'] == 'true' else ''}")


def table(name: str, topology: str, card: str, settings: dict) -> None:
    print(f"\n{card} ({topology}), {name}: FSDP FULL_SHARD over each run's GPUs")
    print(f"  {'run':44s} {'published':>9s} {'tpsim':>7s}  error  fits  free  attn  x attn")
    errors, short = [], []
    for r in rows(name):
        pred, p = run(r, topology, settings)
        pub = float(r["tokens_per_s_per_gpu"])
        errors.append(pred / pub - 1)
        share, factor = attention_terms(p, pub)
        if not p.memory.fits:     # a published run that ran, called out of memory
            short.append(-free_gib(p.memory))
        print(f"  {label(r):44s} {pub:9.0f} {pred:7.0f} {errors[-1]:+6.1%}  "
              f"{'yes' if p.memory.fits else 'NO ':3s}  {free_gib(p.memory):4.1f}  {share:4.0%}  "
              f"{factor:5.2f}")
    e = np.abs(np.array(errors))
    print(f"  used in no fit (llm-foundry, {card}, bf16): {len(e)} runs, mean error "
          f"{np.mean(errors):+.1%}, mean |error| {e.mean():.1%}, median |error| "
          f"{np.median(e):.1%}, max |error| {e.max():.1%}, within 10%: {int((e <= 0.10).sum())}")
    print(f"  published runs tpsim calls out of memory: {len(short)}"
          + (f" (short by {min(short):.1f}-{max(short):.1f} GiB)" if short else ""))


def main() -> int:
    for name, topology, card, settings in TABLES:
        table(name, topology, card, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
