"""tpsim's context-parallel training steps against NVIDIA's published throughput.

Megatron-Bridge's performance summary (NVIDIA-NeMo/Megatron-Bridge,
``docs/performance-summary.md`` and ``docs/performance-summary-archive.md``, containers 25.09
to 26.06) lists Llama 3.1 405B pre-training at seq 8192 with CP 2, FP8 (current scaling),
micro-batch 1; tokens/s per GPU. Used in no fit. Megatron-core's defaults of those recipes are
assumed where the table is silent: sequence parallelism, TP communication overlap, the
distributed optimizer with the overlapped weight all-gather, the p2p ring.

The recipes (Megatron-Bridge ``src/megatron/bridge/perf_recipes/llama/<system>/llama31.py``,
and before 26.02 ``scripts/performance/configs/llama/llama31_workload_base_configs.py`` with
``llama31_llm_pretrain.py``) set what the summary does not print: FP8 current scaling with FP8
parameters (``bf16_with_fp8_current_scaling_mixed``: ``fp8_param_gather=True``, tpsim's
``fp8_param_gather``) and the gradients kept and reduced in bf16 (``_benchmark_common`` and
``_perf_precision``: ``grad_reduce_in_fp32=False``, tpsim's ``grad_reduce_in_bf16``), no
activation recomputation (``recompute_granularity=None``), Transformer Engine's fused
cross-entropy (``cross_entropy_fusion_impl="te"``, the performance scripts' and
``_benchmark_common``'s; tpsim's ``cross_entropy="te"``), and the 126 layers split with the
embedding and the loss each counted as a layer (``account_for_embedding_in_pipeline_split``,
``account_for_loss_in_pipeline_split``): 128 slots over PP 8 x VP model chunks, one layer beside
the embedding in the first chunk and one beside the loss in the last (:func:`layout`, passed as
Megatron-core's pipeline layout string). Without the two precision settings tpsim counts 4 bytes
of weights (bf16 + the FP8 cast and its transpose) and 4 of fp32 gradients per parameter where
the run holds 2 and 2; without them and with 2 chunks per stage (this script before) it put
every row over memory, and the B200 row needs both (the 8 chunks' split leaves the fullest
stage 15 layers, not 16). The CP 1 rows of the same table (GB200 TP 4 PP 16; GB300 TP 4 PP 8,
4 chunks) are printed beside them: tpsim's error without context parallelism, for scale.

What each container ran on DGX-H100 (the performance scripts at its tag: 25.09 r0.1.0rc3's
``configs/llama31/llama31_405b_llm_pretrain.yaml``, 25.11 r0.2.0's
``configs/llama31/workload_base_configs.py``, 26.02-26.06 r0.3.0-r0.5.0's
``LLAMA31_405B_PRETRAIN_CONFIG_H100_FP8_CS_V2``): one layout, one TP-overlap configuration
(``userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192``, unchanged over the five tags), no CUDA
graphs, the p2p CP exchange. They differ in the global batch (512 to 25.11, 1,536 from 26.02)
and in settings tpsim does not price, each under a point of the step by its breakdown (exposed
DP 0.8%, optimizer 0.2% at GBS 512): 25.09's recipe deferred the output layer's weight
gradients (``defer_embedding_wgrad_compute``) and left ``overlap_param_gather_with_optimizer_step``
off (25.11's scripts set it at DP, PP and VP > 1); 25.09's launcher built its environment plugin
without the pipeline size, leaving NCCL's p2p network chunk at its default where later ones set
2 MiB; 25.09's table names no FP8 recipe (its scripts' default was delayed scaling: tpsim 342,
+13.1%; priced here as 25.11's current scaling). 26.02, 26.04.01 and 26.06 ran one recipe:
311 -> 328 came with the software (Megatron-core 0.16 -> 0.17, Transformer Engine 2.12 -> 2.14,
CUDA 13.0.2 -> 13.1.1: ``docs/releases/software-versions.md``), no documented setting. The same
containers' Llama 3 70B H100 row moved with its batch as tpsim does (25.11 GBS 128 -> 26.02 GBS
256: +1.2% published, +1.4% tpsim), the 405B +6.5% where tpsim's larger batch gives +2.8%; the
405B moved more than the 70B at every step (-3.3% against -1.0% from 25.09 to 25.11, +5.5%
against +2.7% from 26.02 to 26.04.01): an undocumented speed-up of its own.

GB300's FP8 row of the 26.02.01 container is printed as CP 1: the summary gives it TP 2 PP 8
CP 2 VP 4 (1,024), but the recipe that container ran (26.02.01 is Megatron-Bridge r0.3.1,
``docs/releases/known-issues.md``; ``LLAMA31_405B_PRETRAIN_CONFIG_GB300_FP8_CS_V2`` in that
tag's ``llama31_workload_base_configs.py``) is TP 4 PP 8 CP 1 VP 4, the change of commit
039143ae8 ("Lm3.1 405B TP4-CP1 GB300 FP8-CS", 2026-02-03), which the r0.3.0 and r0.3.1 tags
carry; the 26.02, 26.04, 26.04.01 and 26.06 tables list that layout for GB300's FP8 row (988,
1,036, 1,024, 1,048), and the 26.02.01 row's TP, PP, CP and VP equal the MXFP8 row printed
above it (TP 2 CP 2: that recipe's).

NeMo 24.07's DGX-H100 pre-training table (NVIDIA/NeMo ``docs/source/performance/
performance_summary.md`` at 9c5c5e9709, the source of bench/whole_job_published.py's NeMo rows)
has two CP 2 rows, FP8, seq 8192, micro-batch 1, global batch 128, used in no fit: Llama 3 8B on
8 GPUs (TP 1 PP 1, DP 4) and Llama 3 70B on 64 (TP 4 PP 4, VP 5, DP 2), CP inside the node (TP x
CP = 8). They run as that script's NeMo rows do (NeMo-Framework-Launcher 24.07
``examples/training/llama/h100/llama3_{8b,70b}_fp8.sh``: ``grad_sync_dtype=bf16``, Apex's
distributed Adam, TP overlap at TP > 1); the launcher's ``conf/training/llama/llama3_*.yaml`` set
``cross_entropy_loss_fusion: true`` (Megatron-core's own jit-fused kernels, priced as its unfused
ones here) and VP 10 for the 70B, where the table prints VP 5 (printed as the table has it); its
``conf/config.yaml`` sets ``NVTE_FUSED_ATTN=0`` for every job, so Transformer Engine 1.8 runs
FlashAttention-2, not cuDNN (bench/whole_job_published.py's ``NEMO``).

Llama 3's long-context pre-training (Dubey et al. 2024, "The Llama 3 Herd of Models", Table 4):
405B on 16,384 H100s, TP 8, CP 16 (all-gather, section 3.3.2), PP 16, DP 8, seq 131,072, 16M
tokens per batch (128 sequences), BF16: 380 TFLOP/s per GPU (38% MFU). The paper's FLOP count
(causal attention as half the square or the full square) and its model chunks per stage are not
stated; it removes one layer from the first and the last stage (7 + 14 x 8 + 7 = 126 layers),
which tpsim can split only with 1 chunk per stage. Both counts are printed.

    python bench/cp_published.py [--breakdown] [--layers]

``--breakdown``: under each layout, where its predicted step goes (bench/whole_job_published.py's
``shares``). ``--layers``: each layout's layer, forward and backward of one micro-batch on one
GPU, by component (bench/moe_breakdown.py's ``breakdown``: attention, GEMMs, FP8 casts, the
rest of the elementwise kernels, the exposed TP and CP communication, the host's wait), its
model TFLOP/s, and the layer time each published figure implies (the layer x tpsim's tokens/s
over the published, as if every part of the step were off by the same factor), with the Llama 3
70B runs the H100 clock is fitted on (bench/whole_job_published.py) below, for scale.
"""
from __future__ import annotations

import sys

from moe_breakdown import breakdown
from tpsim.cluster.topology import load_topology
from tpsim.training.predict import predict
import whole_job_published
from whole_job_published import FIT_FAMILY, TOPOLOGY, rows as fit_rows, run, shares

COMMON = dict(micro_batch=1, seq_len=8192, dtype="fp8", sequence_parallel=True,
              tp_comm_overlap=True, distributed_optimizer=True, overlap_param_gather=True,
              fp8_param_gather=True, grad_reduce_in_bf16=True, cross_entropy="te",
              fp8_recipe="tensorwise")     # FP8 current scaling (module docstring)
LLAMA31_405B_LAYERS = 126


def layout(pp: int, v: int) -> dict:
    """The recipes' split of the 126 layers over pp stages of v chunks, the embedding and the
    loss each counted as a layer (module docstring): Megatron-core's layout string."""
    per_chunk, left = divmod(LLAMA31_405B_LAYERS + 2, pp * v)
    assert not left, (pp, v)
    t = "t" * per_chunk
    return dict(pp=pp, virtual_stages=v,
                pipeline_layout=f"E{t[1:]}|({t}|)*{pp * v - 2}{t[1:]}L")


# system, topology, nodes, layout, published tokens/s per GPU (container)
RUNS = (
    ("DGX-H100, 1024 GPUs, TP 8 PP 8 CP 2 (VP 8), GBS 512", "dgx-h100-ndr-cluster", 128,
     dict(tp=8, cp=2, dp=8, global_batch=512, **layout(8, 8)), (("25.09", 302), ("25.11", 292))),
    ("DGX-H100, 1024 GPUs, TP 8 PP 8 CP 2 (VP 8), GBS 1536", "dgx-h100-ndr-cluster", 128,
     dict(tp=8, cp=2, dp=8, global_batch=1536, **layout(8, 8)),
     (("26.02", 311), ("26.04.01", 328), ("26.06", 326))),
    ("DGX-B200, 128 GPUs, TP 4 PP 8 CP 2 (VP 8), GBS 64", "dgx-b200-ndr-cluster", 16,
     dict(tp=4, cp=2, dp=2, global_batch=64, **layout(8, 8)), (("25.09", 664), ("25.11", 661))),
    ("DGX-GB300, 256 GPUs, TP 2 PP 8 CP 2 (VP 4), GBS 1536", "gb300-nvl72", None,
     dict(tp=2, cp=2, dp=8, global_batch=1536, **layout(8, 4)), (("25.11", 999),)),
    ("CP 1 for scale: DGX-GB300, 256 GPUs, TP 4 PP 8 (VP 4), GBS 1536", "gb300-nvl72", None,
     dict(tp=4, dp=8, global_batch=1536, **layout(8, 4)),
     (("26.02", 988), ("26.02.01", 1024), ("26.04", 1036), ("26.04.01", 1024), ("26.06", 1048))),
    ("CP 1 for scale: DGX-GB200, 256 GPUs, TP 4 PP 16 (VP 4), GBS 1536", "gb200-nvl72", None,
     dict(tp=4, dp=4, global_batch=1536, **layout(16, 4)),
     (("25.11", 813), ("26.02", 793), ("26.02.01", 818), ("26.04", 842), ("26.04.01", 864),
      ("26.06", 843))),
)


NEMO = dict(micro_batch=1, seq_len=8192, dtype="fp8", distributed_optimizer=True,
            overlap_param_gather=True, grad_reduce_in_bf16=True, global_batch=128,
            **whole_job_published.NEMO)     # FlashAttention-2 (module docstring)
NEMO_RUNS = (
    ("Llama 3 8B, DGX-H100, 8 GPUs, TP 1 PP 1 CP 2, GBS 128", "llama3-8b", "dgx-h100",
     None, dict(tp=1, cp=2, dp=4), (("24.07", 12273),)),
    ("Llama 3 70B, DGX-H100, 64 GPUs, TP 4 PP 4 CP 2 (VP 5), GBS 128", "llama3-70b",
     "dgx-h100-ndr-cluster", 8, dict(tp=4, pp=4, cp=2, dp=2, virtual_stages=5,
                                     sequence_parallel=True, tp_comm_overlap=True),
     (("24.07", 1524),)),
)


def runs():
    """(run, model, topology, nodes, settings, published) of every row (module docstring)."""
    bridge = tuple((name, "llama3-405b", topo, nodes, {**COMMON, **layout}, published)
                   for name, topo, nodes, layout, published in RUNS)
    return bridge + tuple((name, model, topo, nodes, {**NEMO, **layout}, published)
                          for name, model, topo, nodes, layout, published in NEMO_RUNS)


def rows():
    """(run, container, published, tpsim tokens/s per GPU, error %, fits, the step's split
    (bench/whole_job_published.py's ``shares``)) per published row."""
    out = []
    for name, model, topo, nodes, settings, published in runs():
        p = predict(model, topo, **settings, **({"nodes": nodes} if nodes else {}))
        got = p.step.tokens_per_s / p.inputs.gpus
        for container, value in published:
            out.append((name, container, value, got, 100 * (got / value - 1), p.memory.fits,
                        shares(p.step)))
    return out


LAYER_PARTS = (("attention", "attention"), ("GEMMs", "dense GEMMs"), ("FP8 casts", "FP8 casts"),
               ("other", "glue"), ("TP comm", "TP comm"), ("CP comm", "CP comm"),
               ("host", "host wait"))


def layer_rows():
    """(run, the layer's parts in seconds (:data:`LAYER_PARTS` of bench/moe_breakdown.py's
    ``breakdown``), the layer's seconds, its model TFLOP/s per GPU, ((container, the layer
    seconds the published figure implies), ...)) per layout, then per run the H100 clock is
    fitted on (module docstring: ``--layers``)."""
    def row(name, p, got, published):
        parts, layer = breakdown(p), p.layer.total_s
        return (name, tuple(parts.get(key, 0.0) for _, key in LAYER_PARTS), layer,
                p.layer.flops / layer / 1e12,
                tuple((c, layer * got / value) for c, value in published))
    out = []
    for name, model, topo, nodes, settings, published in runs():
        p = predict(model, topo, **settings, **({"nodes": nodes} if nodes else {}))
        out.append(row(name, p, p.step.tokens_per_s / p.inputs.gpus, published))
    h100, fitted = load_topology(TOPOLOGY), {}
    for r in fit_rows():
        if r["family"] == FIT_FAMILY:
            got, p = run(r, h100)
            name = (f"fitted: Llama 3 70B, H100, {r['gpus']} GPUs, TP {r['tp']} PP {r['pp']} "
                    f"(VP {r['vp']}), seq {r['seq_len']}")
            new = row(name, p, got, ((r["release"], float(r["tokens_per_s_per_gpu"])),))
            old = fitted.get(name, new[:4] + ((),))
            fitted[name] = old[:4] + (old[4] + new[4],)
    return out + list(fitted.values())


def print_layers() -> None:
    """The ``--layers`` table (module docstring)."""
    print("\none layer, forward + backward of one micro-batch on one GPU, us; TFLOP/s: the "
          "layer's model FLOPs per second; published: the layer time each figure implies")
    print(f"{'run':64s}" + "".join(f"{label:>10s}" for label, _ in LAYER_PARTS)
          + f"{'layer':>8s}{'TFLOP/s':>8s}  published (release)")
    for name, parts, layer, tflops, implied in layer_rows():
        cells = "".join(f"{x * 1e6:10.0f}" for x in parts)
        pub = ", ".join(f"{t * 1e6:.0f} ({c})" for c, t in implied)
        print(f"{name[:64]:64s}{cells}{layer * 1e6:8.0f}{tflops:8.0f}  {pub}")


LLAMA3_LONG = dict(tp=8, cp=16, pp=16, dp=8, global_batch=128, micro_batch=1, seq_len=131072,
                   cp_comm="all-gather", sequence_parallel=True, distributed_optimizer=True,
                   first_stage_layers=7, last_stage_layers=7, nodes=2048)
LLAMA3_LONG_TFLOPS = 380


def llama3_long_context() -> tuple[float, float]:
    """tpsim's TFLOP/s per GPU by Megatron-LM's counts (causal half, full square) for Llama 3's
    long-context stage (module docstring)."""
    step = predict("llama3-405b", "dgx-h100-ndr-cluster", **LLAMA3_LONG).step
    return step.megatron_tflops_per_gpu, step.megatron_full_square_tflops_per_gpu


def main(argv: list[str]) -> None:
    print("seq 8192, FP8, micro-batch 1: tokens/s per GPU (Megatron-Bridge performance summary: "
          "Llama 3.1 405B; NeMo 24.07's: Llama 3 8B and 70B)")
    print(f"{'run':64s} {'release':>8s} {'published':>9s} {'tpsim':>7s} {'error':>7s}  memory")
    last = None
    for name, container, value, got, err, fits, split in rows():
        print(f"{name:64s} {container:>8s} {value:9d} {got:7.0f} {err:+6.1f}%  "
              f"{'fits' if fits else 'does not fit in tpsim'}")
        if "--breakdown" in argv and (name, split) != last:
            print(f"    {split}")
        last = name, split
    if "--layers" in argv:
        print_layers()
    half, square = llama3_long_context()
    print(f"\nLlama 3 405B long context, 16,384 H100, TP 8 CP 16 (all-gather) PP 16 DP 8, "
          f"seq 131,072: published {LLAMA3_LONG_TFLOPS} TFLOP/s per GPU")
    for name, got in (("causal half", half), ("full square", square)):
        print(f"  tpsim, {name:11s} count: {got:6.1f} TFLOP/s per GPU, "
              f"{100 * (got / LLAMA3_LONG_TFLOPS - 1):+6.1f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
