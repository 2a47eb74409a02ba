"""tpsim's training step against NeMo AutoModel's published H100 BF16 pre-training runs (the
PyTorch-native stack: FSDP2, expert parallelism by DeepEP, torch's pipeline schedules,
Transformer Engine's layers), used in no fit.

Source: NVIDIA-NeMo/Automodel, ``docs/performance-summary.md`` (added at commit 89e3a9fdd,
2025-10-06, "Last Updated 2025-10-02"; the Qwen3 row re-measured at 8d9bfb90e, the Llama 3
70B row added at 2013a4dd6, now ``docs/performance-summary.mdx``), "System: DGX-H100,
Precision: BF16", copied in tests/data/published_steps/h100_bf16_automodel.csv with each row's
recipe. What every MoE recipe runs (``examples/benchmark/configs/*_te_deepep.yaml`` and
``nemo_automodel/components/moe/parallelizer.py`` at those commits): ``--framework automodel``
(FSDP2 per transformer block, its copies, torch's foreach Adam); ``activation_checkpointing``
wraps every block in ``checkpoint_wrapper`` (``--recompute full``); Transformer Engine's
attention (cuDNN: the H100's flash3 class), linears and RMSNorm; ``enable_deepep``
(``--moe-dispatcher flex --moe-flex-backend deepep``); ``fake_balanced_gate``
(``FakeBalancedGate``: token t to experts kt..kt+k-1 mod E, weights 1/k, no router GEMM and no
auxiliary loss; every expert the same tokens, ``--moe-imbalance`` 1), which on AutoModel's
contiguous expert shards (``ExpertParallel``: ``Shard(0)``) sends each token to 1 rank (Qwen3,
16 experts a rank) or to 2 ranks of one node (DeepSeek-V3, 4 a rank), where a random balanced
router's token reaches 5.3 and 7.7 ranks (4.6 other nodes): ``--moe-routing round-robin``,
the DeepEP kernels' bytes a fifth of a random router's, and the gate's five index and weight
kernels in place of the router's GEMM, top-k, auxiliary loss and backward, no router weight
held (:mod:`tpsim.layer.fake_gate`: 0.03 ms a MoE layer and micro-batch where the router took
0.20, DeepSeek-V3, and 0.23, Qwen3; the script prints each MoE row with a random balanced
router too: its fan-out, ops and weight); no torch.compile; FSDP2's
``reshard_after_forward`` off (``not pp_enabled`` at 89e3a9fdd, the parallelizer's default
False at 8d9bfb90e); the experts' ``fully_shard`` over ``ep_shard`` without a
``MixedPrecisionPolicy``, so their gradients reduce-scatter in bf16
(``--expert-grad-reduce-in-bf16``, the preset's). DeepSeek-V3 is AutoModel's own model, without
the multi-token-prediction layer (``--mtp-layers 0``), its MLA in eager PyTorch (the rotary
embedding as fp32 complex products, the q and k concatenations, v copied contiguous for
Transformer Engine's attention: ``--mla-eager``, the preset's; :mod:`tpsim.layer.mla_eager`).

* DeepSeek-V3, PP 4 ``interleaved1f1b`` with ``layers_per_stage`` 2: AutoPipeline makes
  ceil(61 / 2) + 1 = 32 stages (``calculate_virtual_stages``, a multiple of PP 4: VP 8), the
  61 layers split 2 to the first 29 and 1 to the last 3, the embedding in the first, the norm
  and output layer in the last (``generate_hf_model_fqn_per_model_part``). The 1,024-GPU row's
  later recipe (``deepseek_v3_te_deepep_1024.yaml``, added 2025-10-08) sets ``layers_per_stage``
  4 (16 stages, VP 4), not the table's VP 8: priced as the table. Its ``local_batch_size`` 8
  at ``pp_microbatch_size`` 1 is 8 micro-batches, and gradient accumulation calls the schedule
  once per local batch (``recipes/llm/benchmark.py``: ``for ga_step_idx in range(ga_steps)``),
  each call a whole pipeline: the 1,024-GPU step is 4 such pipelines (global batch 2,048 each)
  and one optimizer step (``FLUSHES``). A stage's module is the ``DeepseekV3ForCausalLM`` copy,
  not ``fully_shard``-ed itself (``parallelize_model`` shards its inner model, blocks,
  embedding and output layer), so torch 2.8's ``backward_maybe_with_nosync`` takes its
  "regular backward" branch: FSDP2's hooks reduce-scatter each unit's gradients and reshard it
  in every micro-batch's backward, gathering it again for the next
  (``--fsdp-sync-every-micro-batch``, the preset's; AutoModel's ``MoEFSDPSyncMixin`` of
  2025-10-08 later deferred both to the last backward). On 1,024 GPUs the experts are sharded
  over ``ep_shard`` 4 ranks 64 apart, one per node: each micro-batch gathers and reduces them
  through one NIC a GPU (5.8 ms each a MoE layer).
* Qwen3-30B-A3B on one node: EP 8 over the 8 FSDP ranks (the experts unsharded), micro-batch 4
  (``local_batch_size``), 16 micro-batches, FSDP2's per-micro-batch reduce-scatter (the
  recipe's ``enable_fsdp_optimization`` key does not name ``BackendConfig``'s
  ``enable_fsdp_optimizations``; over NVLink the reduction is 0.15 s of the step either way).
* Llama 3.1 70B (``custom_llama3_1_70b_pretrain_benchmark_8nodes.yaml`` at 2013a4dd6): the
  Hugging Face model with ``attn_implementation: sdpa`` (FlashAttention-2 on H100, as the
  torchtitan preset), ``enable_compile`` (per-layer torch.compile: fused elementwise kernels),
  CP 2 by torch's ``context_parallel`` with ``cp_rotate_method="allgather"``
  (``components/distributed/cp_utils.py``: ``--cp-comm all-gather``), FSDP over the 32 x 2
  DP x CP ranks with explicit prefetch (tpsim's one unit ahead), checkpointing of each layer's
  attention and MLP (``--recompute full``: the two RMSNorms are not re-run there), Transformer
  Engine's ``FusedAdam`` (``--adam fused``), micro-batch 1, 4 micro-batches, and FSDP2Manager's
  default ``MixedPrecisionPolicy`` then (``components/distributed/config.py``: ``reduce_dtype``
  bf16: ``--grad-reduce-in-bf16``; every layer but the last resharded after its forward).

Where the DeepSeek-V3 rows miss (tpsim fast by a sixth at both scales): the published
1,024-GPU pipeline takes 1.29 s more than the 256-GPU one (9.47 against 8.18 s), tpsim's 1.14 s
more (8.12 against 6.99 s: the experts' per-micro-batch gathers and reductions over 4 nodes;
0.16 s with the reduction deferred to the last backward); the rest is the same at both
scales, a MoE layer and micro-batch (forward, recomputation, backward) 45 ms in tpsim (expert
GEMMs 16.2, dense GEMMs 12.6, attention 6.2, glue 5.9 of which the eager MLA 2.0, exposed EP
3.6, host wait 0.7: ``bench/moe_breakdown.py``'s groups) where the 256-GPU step is 1.16 times
tpsim's. Priced: torch 2.8's interleaved table in lock-step (``pp_runtime`` torch-multi, the
preset's: +1%); DeepEP's host sync in the forward and its recomputation (not in the backward:
the combine's backward is a dispatch with the forward's handle, DeepEP's cached mode, no host
wait), and FSDP2's next gather issued only once the host is past it
(:mod:`tpsim.sim.host_lag`: hidden at these rows, the host 6.3 ms into a 12.7 ms forward).
Not priced: memory pressure (8 chunks' weights gathered); no profile of these runs is
published.

Not priced (the CSV's ``priced`` column says why): Kimi K2 and GPT-OSS 20B (no model config
shipped), GPT-OSS 120B (PyTorch's FlexAttention with sinks and a sliding window: no kernel of
tpsim's), the Nemotron V3 rows (hybrid Mamba-Transformer layers). Not modelled in the priced
rows: the bf16 gradient shards (priced fp32, as their reduce-scatter), Qwen3's eager PyTorch rotary
embedding, the shared experts' eager SwiGLU (silu, then the product), the experts'
``grouped_gemm`` kernels (priced as tpsim's grouped GEMM), and around DeepEP AutoModel's own
Python (``GroupedExpertsDeepEP``), priced as Megatron-core's flex dispatcher's
(:mod:`tpsim.layer.moe_host`).

    python bench/automodel_published.py
"""
from __future__ import annotations

import csv
from pathlib import Path

from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.training.predict import predict

DATA = Path(__file__).resolve().parent.parent / "tests/data/published_steps/h100_bf16_automodel.csv"
TOPOLOGY = "dgx-h100-ndr-cluster"
AUTOMODEL = FRAMEWORKS["automodel"]
# the MoE recipes' settings (module docstring); fake_balanced_gate's token t to experts
# kt..kt+k-1 mod E, no router GEMM or weight (--moe-routing round-robin: tpsim.spec.fake_gate)
MOE = dict(tp=1, recompute="full", dtype="bf16", zero=3, reshard_after_forward=False,
           moe_dispatcher="flex", moe_flex_backend="deepep", moe_routing="round-robin",
           **AUTOMODEL)
# DeepSeek-V3's 32 stages (module docstring): 2 layers in each of the first 29, 1 in the last 3
DEEPSEEK = dict(MOE, pp=4, virtual_stages=8, ep=64, micro_batch=1, mtp_layers=0,
                pipeline_layout="Ett|(tt|)*28t|t|tL")
# the Llama recipe's transformer_engine.pytorch.optimizers.FusedAdam at its defaults
# (master_weights=False, exp_avg_dtype=exp_avg_sq_dtype=torch.float32): the bf16 weights
# updated in place, fp32 moments
LLAMA_ADAM = {**AUTOMODEL, "adam": "fused", "exp_avg_dtype": "fp32", "exp_avg_sq_dtype": "fp32"}
# (model, nodes, layout, pipelines a step) by the CSV's (model, GPUs)
LAYOUTS = {
    ("DeepSeek V3 671B", 1024): ("deepseek-v3", 128, dict(DEEPSEEK, dp=256, global_batch=2048), 4),
    ("DeepSeek V3 671B", 256): ("deepseek-v3", 32, dict(DEEPSEEK, dp=64, global_batch=512), 1),
    ("Qwen3 MoE 30B", 8): ("qwen3-30b-a3b", 1, dict(MOE, dp=8, ep=8, micro_batch=4,
                                                    global_batch=512), 1),
    ("Llama3 70B", 64): ("llama3-70b", 8, dict(tp=1, cp=2, cp_comm="all-gather", dp=32, zero=3,
                                               micro_batch=1, global_batch=128,
                                               recompute="full", dtype="bf16",
                                               grad_reduce_in_bf16=True,
                                               attention="flash2", **LLAMA_ADAM), 1),
}
FLUSHES = {key: flushes for key, (_, _, _, flushes) in LAYOUTS.items()}


def published() -> list[dict]:
    """The CSV's rows, as published."""
    with open(DATA) as f:
        return list(csv.DictReader(f))


def predicted(row: dict, **changes):
    """(step seconds, the prediction of one pipeline) of a priced row, its layout with
    ``changes``: ``flushes`` pipelines and one optimizer step, t = n (t_1 - t_opt) + t_opt."""
    model, nodes, layout, flushes = LAYOUTS[(row["model"], int(row["gpus"]))]
    p = predict(model, TOPOLOGY, nodes=nodes, seq_len=int(row["seq"]), **{**layout, **changes})
    opt = p.step.optimizer_s
    return flushes * (p.step.time_s - opt) + opt, p


def rows() -> list[tuple]:
    """(name, published step s, tpsim step s, published tokens/s per GPU, tpsim's, error of
    tokens/s, fits, prediction, step s with a random balanced router or None) per priced row."""
    out = []
    for r in published():
        if r["priced"] != "yes":
            continue
        step, p = predicted(r)
        gpus = int(r["gpus"])
        tps = int(r["global_batch"]) * int(r["seq"]) / step / gpus
        pub = float(r["tokens_per_s_gpu"])
        moe = "moe_routing" in LAYOUTS[(r["model"], gpus)][2]
        uniform = predicted(r, moe_routing="uniform")[0] if moe else None
        out.append((f"{r['model']}, {gpus} H100", float(r["step_s"]), step, pub, tps,
                    tps / pub - 1, p.memory.fits, p, uniform))
    return out


def breakdown(p) -> str:
    """One pipeline's step by part: compute, exposed EP / DP / PP, bubble, host, optimizer."""
    s = p.step
    parts = (("compute", s.compute_s), ("EP", s.ep_comm_exposed_s), ("DP", s.dp_comm_exposed_s),
             ("PP", s.pp_comm_exposed_s), ("bubble", s.bubble_s), ("host", s.host_wait_s),
             ("optimizer", s.optimizer_s))
    return ", ".join(f"{k} {v:.2f} s ({v / s.time_s:.0%})" for k, v in parts if v > 0)


def main() -> None:
    print(f"{'run':28s} {'step s':>7s} {'tpsim':>7s} {'tokens/s/GPU':>12s} {'tpsim':>7s} "
          f"{'error':>7s}  fits  a random router (step s, error)")
    errors = []
    for name, step_pub, step, pub, tps, err, fits, p, uniform in rows():
        errors.append(abs(err))
        alone = f"{uniform:7.2f} {(1 + err) * step / uniform - 1:+7.1%}" if uniform else ""
        print(f"{name:28s} {step_pub:7.2f} {step:7.2f} {pub:12,.0f} {tps:7,.0f} {err:+7.1%}"
              f"  {'yes' if fits else 'NO '}  {alone}")
        print(f"{'':28s} one pipeline: {breakdown(p)}")
    print(f"mean |error| {sum(errors) / len(errors):.1%}, max {max(errors):.1%} over "
          f"{len(errors)} runs used in no fit (error: tokens/s, + is tpsim fast)")
    print("\nnot priced:")
    for r in published():
        if r["priced"] != "yes":
            print(f"  {r['model']}, {r['gpus']} H100: {r['priced'][4:]}")


if __name__ == "__main__":
    main()
