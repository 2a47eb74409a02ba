"""tpsim's training step against Megatron-LM's own published step times of a dense 7B GPT in
bf16 on one DGX H100 and one DGX A100 (8 GPUs), used in no fit.

The source: NVIDIA/Megatron-LM's functional tests ``gpt3_7b_tp1_pp4_memory_speed`` and
``gpt3_7b_tp4_pp1_memory_speed`` (``tests/functional_tests/test_cases/gpt/<case>/``), whose
``golden_values_dev_dgx_h100.json`` and ``golden_values_dev_dgx_a100.json`` print the
``iteration-time`` Megatron logs (seconds a step, each log line's mean over its 2 iterations) as
text; tests/data/published_steps/megatron_ci_bf16.csv copies their mean over the logged steps
after the first (the README there gives the commits). The recipe (``tests/test_utils/recipes/
h100/gpt.yaml``: 1 node, 8 GPUs) runs ``pretrain_gpt.py`` with the case's ``model_config.yaml``,
which sets every flag: 32 layers, hidden 4096, 32 heads, GQA with 8 query groups, sequence 8192,
vocabulary 131,073 (131,072 at the A100 values' commit; Megatron pads it), untied embeddings,
mock data, ``--bf16``, Transformer Engine, the distributed optimizer with
``--overlap-grad-reduce --overlap-param-gather``, ``--no-gradient-accumulation-fusion``, global
batch 8; TP 1 PP 4 with one layer per virtual stage (8 chunks a stage) at micro-batch 1, and TP
4 PP 1 (no sequence parallelism) at micro-batch 2. What the file leaves to Megatron's defaults
(``megatron/training/arguments.py``): LayerNorm, GeLU with a 4 x hidden MLP, biases in every
linear layer, hidden and attention dropout 0.1, learned absolute positions, the unfused
cross-entropy.

``--deterministic-mode`` (megatron/training/arguments.py:
``torch.use_deterministic_algorithms(True)``, with the recipe's ``NCCL_ALGO=Ring``,
``NVTE_ALLOW_NONDETERMINISTIC_ALGO=0``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``): torch's fill of
every new tensor Transformer Engine allocates is priced (:mod:`tpsim.sim.fill`); Transformer
Engine keeps cuDNN's attention on Hopper in that mode and falls back to FlashAttention-2 on
Ampere (``get_attention_backend`` drops FusedAttention for determinism below compute
capability 9.0), the presets' ``fused`` kernel on each: FlashAttention-2's deterministic
backward (a few CTAs a head looping over key blocks, :mod:`tpsim.sim.deterministic_attention`)
is priced on A100, cuDNN's on H100 with its dP workspace (dS written and read back by a
separate dQ matmul: :mod:`tpsim.cost.dp_workspace`; the golden values' commit 6e091e1b68 runs
Transformer Engine 2.16, which builds cudnn-frontend 1.22, in NGC PyTorch 26.04, before cuDNN
9.25's linear-workspace engine). Priced too: Megatron-core's fp32 main-gradient add
without gradient accumulation fusion (tpsim's default ``main_grad_add``) and the per-step
``--log-params-norm`` and ``--log-num-zeros-in-grad`` passes, and the data loader's attention
mask (Megatron's default ``--create-attention-mask-in-dataloader``: b s^2 bytes copied to the
GPU and broadcast over TP on the first and last stages a micro-batch,
:mod:`tpsim.training.data_mask`), and the attention dropout (0.1, Megatron's
``attention_dropout`` default) inside both fused kernels: Philox random numbers a score,
forward and backward (:mod:`tpsim.cost.attention_dropout`). Not priced: ``NVTE_FWD/BWD_LAYERNORM_SM_MARGIN=16``. The
runner's ``NCCL_PROTO=simple`` and ``NCCL_NVLS_ENABLE=0``
(tests/functional_tests/shell_test_utils/_run_training.sh) are what tpsim picks here anyway
(ring, Simple); the cuBLAS workspace setting reaches torch's handles, not Transformer Engine's
GEMMs, which bring their own. The runs are CI jobs, not tuned benchmarks. The same files
print ``mem-max-allocated-bytes`` (torch's peak on the logging rank: the TensorBoard writer's,
rank world_size - 1, ``global_vars._set_tensorboard_writer``, on the last stage): printed
beside tpsim's fullest stage's peak, here the last (:class:`tpsim.sim.memory.Memory`'s
``total_bytes``, the allocator's waste left out as in torch's figure).

    python bench/megatron_ci_published.py [--breakdown]

``--breakdown``: under each run, its predicted step by part (bench/whole_job_published.py's
``shares``) and one layer's forward and backward by component (bench/moe_breakdown.py).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from moe_breakdown import breakdown
from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict
from whole_job_published import shares

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_steps"
TOPOLOGY = {"dgx_h100": "dgx-h100", "dgx_a100": "dgx-a100"}
# the model_config.yaml flags as tpsim settings (module docstring)
SETTINGS = dict(dtype="bf16", distributed_optimizer=True, overlap_grad_reduce=True,
                overlap_param_gather=True, gradient_accumulation_fusion=False,
                sequence_parallel=False, cross_entropy="unfused", log_params_norm=True,
                log_num_zeros_in_grad=True, deterministic_mode=True, create_attention_mask=True)


def rows() -> list[dict]:
    with open(DATA / "megatron_ci_bf16.csv") as f:
        return list(csv.DictReader(f))


def model(r: dict) -> ModelConfig:
    """The case's GPT: Megatron's defaults where its model_config.yaml sets nothing."""
    n = {k: int(r[k]) for k in ("layers", "hidden", "heads", "query_groups", "vocab", "seq_len")}
    return ModelConfig(name=r["test_case"], layers=n["layers"], hidden=n["hidden"],
                       heads=n["heads"], kv_heads=n["query_groups"], vocab=n["vocab"],
                       seq_len=n["seq_len"], activation="gelu", norm="layernorm", dropout=0.1,
                       bias=True, tie_embeddings=False)


def run(r: dict):
    """tpsim's prediction of published run ``r``."""
    n = {k: int(r[k]) for k in ("gpus", "tp", "pp", "vp", "micro_batch", "global_batch")}
    return predict(model(r), TOPOLOGY[r["platform"]], tp=n["tp"], pp=n["pp"],
                   dp=n["gpus"] // (n["tp"] * n["pp"]), virtual_stages=n["vp"],
                   micro_batch=n["micro_batch"], global_batch=n["global_batch"], **SETTINGS)


def error(r: dict, p) -> float:
    """tpsim's step over the published one, less 1 (+: tpsim slow)."""
    return p.step.time_s / float(r["step_s"]) - 1


def label(r: dict) -> str:
    return f"{r['platform']} TP{r['tp']} PP{r['pp']} VP{r['vp']} mb{r['micro_batch']}"


def main(argv: list[str]) -> int:
    print("Megatron-LM functional tests, dense 7B GPT, bf16, 8 GPUs, seq 8192, global batch 8: "
          "step seconds (+: tpsim slow)")
    print(f"  {'run':32s} {'published':>9s} {'tpsim':>7s}  error   peak memory GiB: published, "
          f"tpsim (fits)")
    errs = []
    for r in rows():
        p = run(r)
        e = error(r, p)
        errs.append(e)
        mem = p.memory
        print(f"  {label(r):32s} {float(r['step_s']):9.3f} {p.step.time_s:7.3f} {e:+6.1%}  "
              f"{float(r['mem_max_allocated_bytes']) / 2**30:5.1f} {mem.total_bytes / 2**30:5.1f}"
              f" ({'yes' if mem.fits else 'NO'})")
        if "--breakdown" in argv:
            parts = breakdown(p)
            layer = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in parts.items() if v > 0)
            print(f"      {shares(p.step)}\n      layer (ms): {layer}")
    e = np.array(errs)
    print(f"  {len(e)} runs: mean error {e.mean():+.1%}, mean |error| {np.abs(e).mean():.1%}, "
          f"max |error| {np.abs(e).max():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
