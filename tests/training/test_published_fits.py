"""Published layouts that ran must be predicted to fit: CP-free Megatron and NeMo runs of
GPT-3 175B, each with its own TP, PP, virtual stages, micro-batch and recomputation."""
from __future__ import annotations

import pytest

import tpsim

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
