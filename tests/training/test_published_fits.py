"""Published layouts that ran must be predicted to fit: Megatron and NeMo runs of GPT-3 175B,
each with its own TP, PP, virtual stages, micro-batch and recomputation, Megatron-Bridge's
Llama 3.1 405B runs and NeMo 24.07's Llama 3 CP 2 runs (bench/cp_published.py) and Llama 3 70B
FSDP, MXFP8 and NVFP4 runs (bench/sharded_published.py), torchtitan's Llama 3.1 8B FSDP runs,
llm-foundry's MPT runs on A100 80GB, H100 and A100 40GB."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.model import ModelConfig
from tpsim.spec.model_params import plain_params

NEMO_175B = dict(model="gpt3", topology="dgx-h100-ndr-cluster", nodes=64, tp=4, pp=8,
                 virtual_stages=6, dp=16, global_batch=2048, micro_batch=1,
                 sequence_parallel=True, distributed_optimizer=True)

PUBLISHED = {
    # NeMo 2 recipe nemo/collections/llm/recipes/gpt3_175b.py: TP 4, PP 8, VP 6, SP, the
    # distributed optimizer (distributed_fused_adam), 64 nodes of 8 H100, seq 2048, global
    # batch 2048; its performance variant's TP-overlap config is for micro-batch 1
    # (userbuffers_*_h100_h12288_tp4_mbs1_seqlen2048); bf16, and FP8 (bf16_with_fp8_mixed)
    "nemo-gpt3-175b-bf16": dict(NEMO_175B, dtype="bf16"),
    "nemo-gpt3-175b-fp8": dict(NEMO_175B, dtype="fp8", tp_comm_overlap=True),
    # Megatron-LM examples/gpt3/train_gpt3_175b_distributed.sh: TP 8, PP 16, micro-batch 1,
    # global batch 1536, fp16, no distributed optimizer (A100 80GB, DP 12: Narayanan et al.
    # 2021's 1,536 GPUs)
    "megatron-lm-gpt3-175b-example": dict(model="gpt3", topology="dgx-a100-hdr-cluster",
                                          nodes=192, tp=8, pp=16, dp=12, global_batch=1536,
                                          dtype="fp16"),
    # Korthikanti et al. 2022, Table 5: 175B on A100 80GB, TP 8, PP 8, 3 chunks (interleaved),
    # micro-batch 1, global batch 64, sequence parallelism + selective recomputation
    "korthikanti-2022-175b": dict(model="gpt3", topology="dgx-a100-hdr-cluster", tp=8, pp=8,
                                  virtual_stages=3, dp=1, global_batch=64, dtype="bf16",
                                  sequence_parallel=True, recompute="selective",
                                  attention="unfused"),
}


def _llama31_405b(topology: str, tp: int, dp: int, v: int, **kw) -> dict:
    """Megatron-Bridge's Llama 3.1 405B FP8-CS recipes (perf_recipes/llama/<system>/llama31.py):
    CP 2, PP 8 with v chunks, the embedding and the loss each counted as a layer in the split
    (account_for_embedding/loss_in_pipeline_split: 128 slots), FP8 parameters, bf16 gradients,
    the distributed optimizer, SP with TP overlap, no recomputation; seq 8192, micro-batch 1."""
    per = 128 // (8 * v) * "t"
    return dict(model="llama3-405b", topology=topology, tp=tp, cp=2, pp=8, dp=dp,
                virtual_stages=v, pipeline_layout=f"E{per[1:]}|({per}|)*{8 * v - 2}{per[1:]}L",
                micro_batch=1, seq_len=8192, dtype="fp8", fp8_param_gather=True,
                grad_reduce_in_bf16=True, sequence_parallel=True, tp_comm_overlap=True,
                distributed_optimizer=True, overlap_param_gather=True, **kw)


PUBLISHED |= {
    # Megatron-Bridge performance summary 25.09-26.02 (docs/performance-summary-archive.md)
    "bridge-405b-cp2-h100": _llama31_405b("dgx-h100-ndr-cluster", 8, 8, 8, global_batch=512,
                                          nodes=128),
    "bridge-405b-cp2-b200": _llama31_405b("dgx-b200-ndr-cluster", 4, 2, 8, global_batch=64,
                                          nodes=16),
    "bridge-405b-cp2-gb300": _llama31_405b("gb300-nvl72", 2, 8, 4, global_batch=1536),
}

# NeMo 24.07's DGX-H100 CP 2 rows (bench/cp_published.py): FP8, seq 8192, global batch 128,
# bf16 gradients, the distributed optimizer; Llama 3 8B TP 1 DP 4, Llama 3 70B TP 4 PP 4 VP 5 DP 2
_NEMO_CP2 = dict(topology="dgx-h100-ndr-cluster", cp=2, seq_len=8192, micro_batch=1,
                 global_batch=128, dtype="fp8", grad_reduce_in_bf16=True,
                 distributed_optimizer=True, overlap_param_gather=True)
PUBLISHED |= {
    "nemo-llama3-8b-cp2-h100": dict(_NEMO_CP2, model="llama3-8b", tp=1, dp=4),
    "nemo-llama3-70b-cp2-h100": dict(_NEMO_CP2, model="llama3-70b", tp=4, pp=4,
                                     virtual_stages=5, dp=2, nodes=8, sequence_parallel=True,
                                     tp_comm_overlap=True),
}


# Megatron-Bridge's performance recipes (perf_recipes/_common.py: bf16 gradients, quantized
# parameters, Transformer Engine's cross-entropy), 26.04.01's Llama 3 70B rows
# (bench/sharded_published.py) and 25.11's 405B CP 1 GB200 row (bench/cp_published.py)
RECIPE = dict(seq_len=8192, fp8_param_gather=True, grad_reduce_in_bf16=True,
              cross_entropy="te")
_70B_PP4 = dict(RECIPE, model="llama3-70b", topology="gb300-nvl72", tp=1, pp=4,
                virtual_stages=5, dp=16, micro_batch=1, global_batch=256,
                distributed_optimizer=True)
_CHUNK = "tt"       # 128 slots (126 layers, the embedding, the loss) over 16 x 4 chunks
# torchtitan benchmarks/llama3_h100_202412_torchtitan.md Table 1: FSDP 8, local batch 2,
# selective (op) checkpointing; published peak memory 82.4 GiB (bf16), 76.8 (Float8)
_TITAN_T1 = dict(model="llama3-8b", topology="grand-teton-h100", seq_len=8192, tp=1, dp=8,
                 micro_batch=2, global_batch=16, zero=3, recompute="op", nodes=1,
                 attention="flash2", fsdp_fp32_params=True)
PUBLISHED |= {
    "bridge-70b-fsdp-gb200": dict(RECIPE, model="llama3-70b", topology="gb200-nvl72", tp=1,
                                  dp=64, micro_batch=2, global_batch=256, zero=3,
                                  dtype="fp8", cpu_offload_layers=40),
    "bridge-70b-mxfp8-gb300": dict(_70B_PP4, dtype="mxfp8"),
    "bridge-70b-nvfp4-gb300": dict(_70B_PP4, dtype="nvfp4"),
    "bridge-405b-cp1-gb200": dict(
        RECIPE, model="llama3-405b", topology="gb200-nvl72", tp=4, pp=16, virtual_stages=4,
        dp=4, global_batch=1536, micro_batch=1, dtype="fp8", sequence_parallel=True,
        tp_comm_overlap=True, distributed_optimizer=True, overlap_param_gather=True,
        pipeline_layout=f"E{_CHUNK[1:]}|({_CHUNK}|)*62{_CHUNK[1:]}L"),
    # GB300's FP8 recipe from 26.02 (Megatron-Bridge r0.3.0: TP 4 PP 8 CP 1 VP 4, 128 slots
    # over 8 x 4 chunks of 4)
    "bridge-405b-cp1-gb300": dict(
        RECIPE, model="llama3-405b", topology="gb300-nvl72", tp=4, pp=8, virtual_stages=4,
        dp=8, global_batch=1536, micro_batch=1, dtype="fp8", sequence_parallel=True,
        tp_comm_overlap=True, distributed_optimizer=True, overlap_param_gather=True,
        pipeline_layout="Ettt|(tttt|)*30tttL"),
    "torchtitan-8b-fsdp8-bf16": dict(_TITAN_T1, dtype="bf16", eager_kernels=True),
    "torchtitan-8b-fsdp8-float8": dict(_TITAN_T1, dtype="fp8"),
}


# llm-foundry's MPT-30B benchmarks (scripts/train/benchmarking/README.md, b2a43a147): PyTorch
# FSDP FULL_SHARD over 8 GPUs, block checkpointing, 21 gradient accumulations; FSDP's fp32 shards
# are the master weights (the llm-foundry preset's --fsdp-fp32-params; its loss is flash-attn's
# --cross-entropy xentropy, bench/whole_job_bf16_published.py)
MPT_30B = ModelConfig(name="mpt-30b", layers=48, hidden=7168, heads=56, vocab=50368,
                      seq_len=8192, bias=True, tie_embeddings=True)
_MPT = dict(model=MPT_30B, tp=1, dp=8, zero=3, dtype="bf16", recompute="full",
            attention="triton", fsdp_fp32_params=True, cross_entropy="xentropy")
PUBLISHED |= {
    "llm-foundry-mpt-30b-h100-seq8192": dict(_MPT, topology="dgx-h100", micro_batch=1,
                                             global_batch=8 * 21),
    "llm-foundry-mpt-30b-a100-seq512": dict(_MPT, topology="dgx-a100", seq_len=512,
                                            micro_batch=12, global_batch=12 * 21 * 8),
}

# The same README's A100 40GB table (the earlier edition, 300cc5c58: mosaicml/examples v0.0.4 on
# Composer 0.13.4, FSDP mixed precision PURE: bf16 reduce-scatters), its fullest runs on
# dgx-a100-40gb (39.59 GiB): 13B on 8 GPUs (26 GiB of state a GPU), 3B and 1B at 2k without
# checkpointing on 32 GPUs (micro-batches 6 and 10), 70B on 64 (bench/whole_job_bf16_published.py)
_MPT_40GB = dict(FRAMEWORKS["llm-foundry"], topology="dgx-a100-40gb", tp=1, zero=3, dtype="bf16",
                 grad_reduce_in_bf16=True)


def _mpt(layers: int, hidden: int, heads: int, seq: int) -> ModelConfig:
    return ModelConfig(name=f"mpt-{hidden}", layers=layers, hidden=hidden, heads=heads,
                       vocab=50368, seq_len=seq, bias=True, tie_embeddings=True)


PUBLISHED |= {
    "llm-foundry-mpt-13b-a100-40gb-seq8192": dict(
        _MPT_40GB, model=_mpt(40, 5120, 40, 8192), dp=8, micro_batch=1, global_batch=128,
        recompute="full"),
    "llm-foundry-mpt-3b-a100-40gb-32gpus": dict(
        _MPT_40GB, model=_mpt(32, 2560, 20, 2048), dp=32, micro_batch=6, global_batch=192),
    "llm-foundry-mpt-1b-a100-40gb-32gpus": dict(
        _MPT_40GB, model=_mpt(24, 2048, 16, 2048), dp=32, micro_batch=10, global_batch=320),
    "llm-foundry-mpt-70b-a100-40gb-64gpus": dict(
        _MPT_40GB, model=_mpt(80, 8192, 64, 2048), dp=64, micro_batch=2, global_batch=128,
        recompute="full"),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_layout_fits(name):
    p = tpsim.predict(**PUBLISHED[name])
    mem = p.memory
    assert mem.fits, f"{name}: {mem.total_bytes / 2**30:.1f} GiB over " \
                     f"{(mem.capacity_bytes - mem.reserved_bytes) / 2**30:.1f} GiB"
    assert all(s.fits for s in p.stage_memory)
    assert not any(w.code == "memory_does_not_fit" for w in p.warnings)


def test_a_layout_over_the_memory_is_caught():
    """Not vacuous: NeMo's layout with twice the micro-batch's activations does not fit."""
    p = tpsim.predict(**dict(NEMO_175B, dtype="bf16", micro_batch=2))
    assert not p.memory.fits


def test_nemo_24_07_gpt3_20b_fits_with_the_allocator_waste_on_its_activations():
    """NeMo 24.07's GPT-3 20B row (64 H100, TP 2, micro-batch 2, FP8; bench/
    whole_job_published.py) ran under Apex's distributed Adam with store_param_remainders, the
    2 + 2 + 12 / d bytes a parameter of the distributed optimizer with bf16 gradients; its
    term by term: bf16 weights with fp8 copies of the linears only (the embedding 2 bytes),
    Transformer Engine's 6 fp8 + 4 bf16 userbuffers of (4096, 6144). It fits in the H100 less
    the CUDA context and NCCL's reserve and the allocator's 0.047 of the activations, the
    bytes the step churns; 5% of all the rest (the weights, gradient buffers and optimizer
    state too, allocated once) would not leave it room, and the run bounds the waste below 14%
    of its activations (the recipe's dropout 0.1, NeMo-Framework-Launcher 24.07
    conf/training/gpt3/20b.yaml, keeping its masks; 22% without them)."""
    m = ModelConfig(name="gpt3-20b", layers=44, hidden=6144, heads=48, vocab=50257,
                    seq_len=2048, bias=True, tie_embeddings=True, dropout=0.1)
    p = tpsim.predict(m, "dgx-h100-ndr-cluster", tp=2, dp=32, global_batch=256, micro_batch=2,
                      dtype="fp8", sequence_parallel=True, distributed_optimizer=True,
                      overlap_param_gather=True, tp_comm_overlap=True, nodes=8,
                      grad_reduce_in_bf16=True)
    mem, dev = p.memory, tpsim.load_topology("dgx-h100-ndr-cluster").device
    n, plain = mem.params_per_gpu, plain_params(m, 2, 44, True, True)
    assert mem.weights_bytes == pytest.approx(4 * n - 2 * plain)
    assert mem.tp_buffers_bytes == 4096 * 6144 * (6 + 4 * 2)
    room = dev.memory_bytes - dev.memory_reserved_bytes
    assert mem.activations_bytes > mem.step_copy_bytes
    assert mem.reserved_bytes == pytest.approx(
        dev.memory_reserved_bytes + 0.047 * mem.activations_bytes, rel=1e-12)
    assert mem.fits and mem.total_bytes > 0.95 * room
    assert (room - mem.total_bytes) / mem.activations_bytes < 0.14
