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

The recipes' optimizer settings are Megatron-Bridge's defaults, taken here as the distributed
optimizer with the gradient reduction overlapped (``--distributed-optimizer``; tpsim's default
overlap). tpsim prices the all-to-all as NCCL's (no HybridEP deduplication, no all-to-all
overlap with another micro-batch's compute), CUDA graphs as none. The TFLOP/s compared is
Megatron-LM's count (``megatron_tflops_per_gpu``), as the summary's "Model TFLOP/sec/GPU".

Not checked (tpsim cannot run them yet): DeepSeek-V3 (multi-head latent attention),
GPT-OSS 120B (biases in the experts), Qwen3-235B-A22B (94 layers over PP 8 x 4 virtual
stages needs Megatron's pipeline layout, which tpsim's even-per-chunk split cannot express).

    python bench/moe_published.py
"""
from __future__ import annotations

from tpsim.training.predict import predict

TOPOLOGY = "dgx-h100-ndr-cluster"
COMMON = dict(dtype="fp8", seq_len=4096, micro_batch=1, global_batch=1024,
              distributed_optimizer=True)

# label, model, GPUs, layout, published tokens/s per GPU, published model TFLOP/s per GPU
ROWS = (
    ("Qwen3-30B-A3B, 16 H100, TP1 PP1 EP16 (26.04.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=1, dp=16, ep=16), 8960, 206),
    ("Qwen3-30B-A3B, 16 H100, TP1 PP2 VP12 EP8 (26.02.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=2, dp=8, virtual_stages=12, ep=8), 9058, 208),
)


def rows():
    """(label, predicted tokens/s per GPU, published, predicted TFLOP/s, published, the
    prediction) of each row."""
    out = []
    for label, model, gpus, layout, tokens, tflops in ROWS:
        p = predict(model, TOPOLOGY, nodes=gpus // 8, **COMMON, **layout)
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
