"""tpsim's training step of mixture-of-experts models with expert parallelism against published
whole-step throughput, used in no fit.

Megatron-Bridge's performance summary (NVIDIA-NeMo/Megatron-Bridge,
``docs/performance-summary-archive.md``, DGX-H100 rows; the recipes in
``src/megatron/bridge/perf_recipes/qwen/h100/qwen3_moe.py``): Qwen3-30B-A3B pre-training on
16 H100s, FP8 (current scaling), sequence 4096, micro-batch 1, global batch 1024, the router
force-balanced and no token dropped (the summary's MoE note: ``--moe-imbalance`` 1, no
capacity factor), no recomputation. Two layouts:

* 26.04.01 container: TP 1, PP 1, EP 16 (the recipe's flex dispatcher with the HybridEP
  backend): 8,960 tokens/s per GPU, 206 model TFLOP/s per GPU;
* 26.02.01 container: TP 1, PP 2, 12 virtual stages, EP 8: 9,058 tokens/s, 208 TFLOP/s.

Both recipes use Megatron-Bridge's FP8 current-scaling precision (``_perf_precision`` /
``get_precision_config("fp8_cs")``: ``fp8_param_gather`` on, ``grad_reduce_in_fp32`` off:
``--fp8-param-gather --grad-reduce-in-bf16``) and the distributed optimizer with the gradient
reduction overlapped (tpsim's default overlap). tpsim prices the all-to-all as NCCL's (no
HybridEP deduplication across nodes), CUDA graphs as none. The TFLOP/s compared is
Megatron-LM's count (``megatron_tflops_per_gpu``), as the summary's "Model TFLOP/sec/GPU".

What tpsim leaves out of the EP 8 row: its recipe (``scripts/performance/configs/qwen/
qwen3_workload_base_configs.py`` ``QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_FP8_CS_V1`` before
Megatron-Bridge commit 4a6450755, the all-to-all dispatcher) sets ``moe_a2a_overlap`` (each
micro-batch's all-to-alls under another's compute), which would make tpsim faster still; and the
host. The same layout is published at 5,113 tokens/s in the 26.02 container and 9,058 in
26.02.01: the software stack alone moves it 1.8x, and Megatron-LM PR #2168 names the CPU
overhead of this overlap as leaving the GPU idle (partial CUDA graphs of the router and the
dispatcher's preprocessing to cut it). tpsim's host model (``host_dispatch_us`` per op, fitted on a
dense model) does not see a MoE layer's hundreds of small kernels and its device-to-host sync of
the tokens per expert (``token_dispatcher.py`` ``_maybe_dtoh_and_synchronize``). NVIDIA's blog "Boosting
MoE Training Throughput with Advanced Fusion Kernels" (2026-06-15) names the same CPU
synchronisation and boundedness of the MoE block, and reports sync-free fused expert kernels
(which allow whole-step CUDA graphs) worth 93% end to end on GPT-OSS and 8% on DeepSeek-V3.

DeepSeek-V3 on 1,024 H100, 25.09 container, dropless: 1,297 tokens/s and 338 model TFLOP/s per
GPU (the summary's 25.09 DGX-H100 table; FP8: the parenthesised 330 is the blockwise recipe).
Its recipe then (Megatron-Bridge commit bafab587b, ``scripts/performance/configs/deepseek/
deepseek_v3_llm_pretrain.yaml``): TP 2 PP 8 VP 4 EP 64 expert-TP 1, global batch 8192, the
layers placed by Megatron's pipeline layout ``Et|(tt|)*30mL`` (``--pipeline-layout``: one
layer beside the embedding, the multi-token-prediction layer, not priced, beside the loss), the
dense layers' MLP and the experts' activation recomputed (``recompute_granularity: selective``,
``recompute_modules: [mlp, moe_act]``: ``--recompute selective --recompute-modules mlp,moe_act``,
:mod:`tpsim.layer.recompute_modules`), the shared expert overlapped with the dispatch (as
tpsim's all-to-all slot issues it), no CUDA graphs.

Not checked: Qwen3-235B-A22B on 256 H100 (TP 2 PP 8 VP 4 EP 32, 1,712 tokens/s in 26.04.01:
94 layers split with ``account_for_embedding_in_pipeline_split`` and ``..._loss_...``, three
per chunk but two in the first and last, which ``--pipeline-layout`` can place but which is not
run yet; it also runs ``moe_a2a_overlap``),
GPT-OSS 120B on 64 H100 (BF16, PP 4 EP 8, 5,824 tokens/s: biases in the experts, refused).
The summary has no Mixtral row on H100.

    python bench/moe_published.py
"""
from __future__ import annotations

from tpsim.training.predict import predict

TOPOLOGY = "dgx-h100-ndr-cluster"
# the performance scripts' Transformer Engine fused cross-entropy (cross_entropy_fusion_impl
# "te": scripts/performance/utils/helpers.py, perf_recipes/_common.py's _benchmark_common)
COMMON = dict(dtype="fp8", seq_len=4096, micro_batch=1, global_batch=1024,
              distributed_optimizer=True, grad_reduce_in_bf16=True, fp8_param_gather=True,
              cross_entropy="te")

# DeepSeek-V3's recipe (25.09): selective recomputation of the dense MLPs and the experts'
# activation
RECOMPUTE_V3 = dict(recompute="selective", recompute_modules=("mlp", "moe_act"))

# label, model, GPUs, layout, published tokens/s per GPU, published model TFLOP/s per GPU
ROWS = (
    ("Qwen3-30B-A3B, 16 H100, TP1 PP1 EP16 (26.04.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=1, dp=16, ep=16), 8960, 206),
    ("Qwen3-30B-A3B, 16 H100, TP1 PP2 VP12 EP8 (26.02.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=2, dp=8, virtual_stages=12, ep=8), 9058, 208),
    ("DeepSeek-V3, 1024 H100, TP2 PP8 VP4 EP64 (25.09)", "deepseek-v3", 1024,
     dict(tp=2, pp=8, dp=64, virtual_stages=4, ep=64, expert_tp=1, sequence_parallel=True,
          global_batch=8192, pipeline_layout="Et|(tt|)*30mL",
          **RECOMPUTE_V3), 1297, 338),
)


def rows():
    """(label, predicted tokens/s per GPU, published, predicted TFLOP/s, published, the
    prediction) of each row."""
    out = []
    for label, model, gpus, layout, tokens, tflops in ROWS:
        p = predict(model, TOPOLOGY, nodes=gpus // 8, **{**COMMON, **layout})
        st = p.step
        out.append((label, st.tokens_per_s / gpus, tokens, st.megatron_tflops_per_gpu, tflops, p))
    return out


def main() -> None:
    print(f"{'case':55s} {'tokens/s/GPU':>22s} {'TFLOP/s/GPU':>20s}  exposed EP  fits")
    print(f"{'':55s} {'tpsim':>7s} {'published':>9s} {'err':>5s} {'tpsim':>6s} {'publ.':>5s} "
          f"{'err':>6s}")
    errors = []
    for label, tok, tok_pub, tf, tf_pub, p in rows():
        e1, e2 = tok / tok_pub - 1, tf / tf_pub - 1
        errors.append(abs(e1))
        share = p.step.ep_comm_exposed_s / p.step.time_s
        print(f"{label:55s} {tok:7,.0f} {tok_pub:9,} {e1:+5.1%} {tf:6.1f} {tf_pub:5} {e2:+6.1%}"
              f"  {share:9.1%}  {p.memory.fits}")
    print(f"mean |error| tokens/s: {sum(errors) / len(errors):.1%}, max {max(errors):.1%}")


if __name__ == "__main__":
    main()
