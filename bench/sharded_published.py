"""tpsim's training step against published runs with sharded data parallelism (FSDP / ZeRO-3)
and with Blackwell's block-scaled dtypes (MXFP8, NVFP4), in tokens/s per GPU. Used in no fit
but the Llama 3 8B MXFP8 row on B200, which the Blackwell presets' sustained clock is fitted on
(bench/blackwell_clock.py; marked FITTED, left out of the summary); the FSDP model has no
fitted parameter.

Sources (the rows' settings as published; what tpsim does not model is said per row):

* torchtitan, benchmarks/llama3_h100_202412_torchtitan.md (pytorch/torchtitan): Llama 3.1 8B
  and 70B with FSDP2 on Grand Teton H100s (96 GB HBM2e, 2.4 TB/s, 500 W: the
  grand-teton-h100 preset), sequence 8192, torchtitan's own kernels (the torchtitan and
  torchtitan-compile framework presets: SDPA's FlashAttention-2, eager or compiled
  elementwise kernels); its selective checkpointing by operation (every second matmul and
  every elementwise kernel recomputed) is ``--recompute op``.
* Megatron-Bridge, docs/performance-summary-archive.md (NVIDIA-NeMo/Megatron-Bridge), NeMo
  containers 25.11 and 26.04.01, sequence 8192; the recipes in
  src/megatron/bridge/perf_recipes/llama/<system>/llama3.py (FSDP: Megatron-FSDP,
  optim_grads_params; DDP rows with the distributed optimizer). The 8B H100 FP8 recipe
  (``llama3_8b_pretrain_8gpu_h100_fp8cs_config``) recomputes the first 5 of the 32 layers
  in full (``recompute_granularity full``, ``recompute_method block``,
  ``recompute_num_layers 5``: tpsim.training.partial_recompute). The 70B FSDP rows' recipes
  (scripts/performance/configs/llama/llama3_workload_base_configs.py of April 2026,
  LLAMA3_70B_PRETRAIN_CONFIG_GB200_FP8_CS_V2 and _GB300_FP8_CS_V2) offload the activations of
  40 (GB200) and 20 (GB300) of the 80 layers to the Grace CPU's memory
  (``cpu_offloading_num_layers``: tpsim's ``cpu_offload_layers``). The NVFP4 rows' recipe
  (``bf16_with_nvfp4_mixed``) keeps no layer in bf16 (``first_last_layers_bf16`` False) and
  runs Transformer Engine's NVFP4BlockScaling (tpsim.spec.precision); with sequence
  parallelism each column-parallel input and row-parallel output gradient all-reduces its
  amax over the TP group before its cast (``with_amax_reduction``: tpsim.layer.linears's
  ``amax_reduce``).

    python bench/sharded_published.py
"""
from __future__ import annotations

from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.training.predict import predict

SEQ = 8192
# torchtitan's kernels and FSDP2's fp32 shards (tpsim.spec.frameworks: --framework
# torchtitan, torchtitan-compile)
TORCHTITAN = FRAMEWORKS["torchtitan"]
COMPILED = FRAMEWORKS["torchtitan-compile"]
FIT = "FITTED: the Blackwell sustained clock (bench/blackwell_clock.py)"
# the performance recipes' precision (perf_recipes/_common.py: _perf_precision keeps bf16
# gradients, grad_reduce_in_fp32=False, and quantized parameters: fp8_param_gather=True for
# "fp8_cs" and "fp8_mx", fp4_param_gather=True for "nvfp4", training/mixed_precision.py) and
# Transformer Engine's cross-entropy (_benchmark_common: cross_entropy_fusion_impl = "te"; in
# the 25.11 scripts, scripts/performance/utils/helpers.py)
FP8_CS = dict(fp8_param_gather=True, grad_reduce_in_bf16=True, cross_entropy="te",
              fp8_recipe="tensorwise")   # fp8_cs: current scaling (MXFP8, NVFP4: their own)
BRIDGE_CE = dict(cross_entropy="te")
# (name, model, topology, layout, published tokens/s per GPU, note)
ROWS = (
    ("torchtitan T1: 8B, FSDP 8, bf16", "llama3-8b", "grand-teton-h100",
     dict(tp=1, dp=8, micro_batch=2, global_batch=16, zero=3, recompute="op",
          dtype="bf16", nodes=1, **TORCHTITAN), 5762, "eager PyTorch kernels"),
    ("torchtitan T1: 8B, FSDP 8, Float8 + compile", "llama3-8b", "grand-teton-h100",
     dict(tp=1, dp=8, micro_batch=2, global_batch=16, zero=3, recompute="op",
          dtype="fp8", nodes=1, **COMPILED), 8532, "77 GiB of 96 used"),
    ("torchtitan T3: 8B, FSDP 128, bf16", "llama3-8b", "grand-teton-h100",
     dict(tp=1, dp=128, micro_batch=2, global_batch=256, zero=3, recompute="op",
          dtype="bf16", nodes=16, **TORCHTITAN), 5605, "eager PyTorch kernels"),
    ("torchtitan T4: 70B, FSDP 32 x TP 8, Float8", "llama3-70b", "grand-teton-h100",
     dict(tp=8, dp=32, micro_batch=16, global_batch=512, zero=3, recompute="full",
          dtype="fp8", sequence_parallel=True, nodes=32, **COMPILED), 829, "compiled"),
    ("Megatron-Bridge 25.11: 8B, FSDP 8, FP8, H100", "llama3-8b", "dgx-h100",
     dict(tp=1, dp=8, micro_batch=1, global_batch=128, zero=3, dtype="fp8", recompute="full",
          recompute_method="block", recompute_num_layers=5, **FP8_CS), 14451,
     "5 of 32 layers recomputed (full, block: the recipe's)"),
    ("Megatron-Bridge 26.04.01: 70B, FSDP 64, FP8, GB200", "llama3-70b", "gb200-nvl72",
     dict(tp=1, dp=64, micro_batch=2, global_batch=256, zero=3, dtype="fp8",
          cpu_offload_layers=40, **FP8_CS), 4224, "40 of 80 layers' activations on the host"),
    ("Megatron-Bridge 26.04.01: 70B, FSDP 64, FP8, GB300", "llama3-70b", "gb300-nvl72",
     dict(tp=1, dp=64, micro_batch=2, global_batch=256, zero=3, dtype="fp8",
          cpu_offload_layers=20, **FP8_CS), 5248, "20 of 80 layers' activations on the host"),
    ("Megatron-Bridge 26.04.01: 70B, MXFP8, GB200 TP2 PP4 VP5", "llama3-70b", "gb200-nvl72",
     dict(tp=2, pp=4, virtual_stages=5, dp=8, micro_batch=1, global_batch=256, zero=1,
          dtype="mxfp8", sequence_parallel=True, tp_comm_overlap=True, **FP8_CS), 3712, ""),
    ("Megatron-Bridge 26.04.01: 70B, NVFP4, GB200 TP2 PP4 VP5", "llama3-70b", "gb200-nvl72",
     dict(tp=2, pp=4, virtual_stages=5, dp=8, micro_batch=1, global_batch=256, zero=1,
          dtype="nvfp4", sequence_parallel=True, **FP8_CS), 4864,
     "the TP amax all-reduces priced"),
    ("Megatron-Bridge 26.04.01: 70B, MXFP8, GB300 PP4 VP5", "llama3-70b", "gb300-nvl72",
     dict(tp=1, pp=4, virtual_stages=5, dp=16, micro_batch=1, global_batch=256, zero=1,
          dtype="mxfp8", **FP8_CS), 4864, ""),
    ("Megatron-Bridge 26.04.01: 70B, NVFP4, GB300 PP4 VP5", "llama3-70b", "gb300-nvl72",
     dict(tp=1, pp=4, virtual_stages=5, dp=16, micro_batch=1, global_batch=256, zero=1,
          dtype="nvfp4", **FP8_CS), 7296, ""),
    ("Megatron-Bridge 25.11: 8B, MXFP8, B200", "llama3-8b", "dgx-b200",
     dict(tp=1, dp=8, micro_batch=2, global_batch=128, zero=1, dtype="mxfp8"), 29521, FIT),
    ("Megatron-Bridge 25.11: 8B, MXFP8, GB200", "llama3-8b", "gb200-nvl72",
     dict(tp=1, dp=8, micro_batch=2, global_batch=128, zero=1, dtype="mxfp8"), 29789, ""),
    ("Megatron-Bridge 25.11: 8B, MXFP8, GB300", "llama3-8b", "gb300-nvl72",
     dict(tp=1, dp=8, micro_batch=2, global_batch=128, zero=1, dtype="mxfp8"), 36108, ""),
)


def settings(name: str, layout: dict) -> dict:
    """A row's layout with what its framework's recipes set beside it (Megatron-Bridge's fused
    cross-entropy, ``BRIDGE_CE``)."""
    return {**layout, **BRIDGE_CE} if name.startswith("Megatron-Bridge") else layout


def rows() -> list[tuple]:
    """(name, published, tpsim tokens/s per GPU, relative error, fits, note) per row."""
    out = []
    for name, model, topo, layout, published, note in ROWS:
        p = predict(model, topo, seq_len=SEQ, **settings(name, layout))
        tps = p.step.tokens_per_s / p.inputs.gpus
        out.append((name, published, tps, tps / published - 1, p.memory.fits, note))
    return out


def main() -> None:
    print(f"{'run':58s} {'published':>9s} {'tpsim':>8s} {'error':>7s}  fits  note")
    errors = []
    for name, published, tps, err, fits, note in rows():
        errors += [] if note == FIT else [abs(err)]
        print(f"{name:58s} {published:9,d} {tps:8,.0f} {err:+7.1%}  {'yes' if fits else 'NO ':4s}"
              f"  {note}")
    errors.sort()
    print(f"median |error| {errors[len(errors) // 2]:.1%}, max {errors[-1]:.1%} over "
          f"{len(errors)} runs used in no fit (target: within 15%)")


if __name__ == "__main__":
    main()
