"""The output layer's loss: what each cross-entropy implementation keeps for the backward
(tpsim.layer.embedding)."""
from __future__ import annotations

import pytest

from tpsim.training.predict import predict

KW = dict(tp=2, dp=1, micro_batch=2, seq_len=1024, dtype="bf16")


@pytest.mark.parametrize("fusion, per_logit", [("unfused", 4), ("te", 2), ("xentropy", 2)])
def test_the_loss_keeps_an_fp32_softmax_or_the_gradient_in_the_16bit_logits(fusion, per_logit):
    """Megatron-core's unfused loss keeps the fp32 softmax, 4 bytes a logit; Transformer
    Engine's writes the gradient into the bf16 logits, 2; flash-attn's xentropy keeps the bf16
    logits themselves, 2: b s V/t bytes apart."""
    none = predict("llama3-8b", "dgx-h100", **KW)
    got = predict("llama3-8b", "dgx-h100", cross_entropy=fusion, **KW)
    logits = 2 * 1024 * 128256 // 2
    assert none.memory.activations_bytes - got.memory.activations_bytes == \
        logits * (4 - per_logit)
