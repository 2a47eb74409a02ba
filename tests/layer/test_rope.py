"""Megatron-core's unfused RoPE under YaRN's attention factor (tpsim.layer.rope): the kernels
and bytes its docstring counts, and none for a factor of 1."""
from __future__ import annotations

import dataclasses
import math

from tpsim.spec.model import load_model
from tpsim.training.predict import predict

B, F = 2, 4   # bf16 activations, fp32 angles


def ops(model):
    p = predict(model, "dgx-h100", tp=1, dp=8, ep=8, seq_len=4096, dtype="bf16")
    return {o.name: o for o in p.ops}, p


def total(rows, prefix):
    return sum(o.bytes for name, o in rows.items() if name.startswith(prefix))


def test_gpt_oss_rope_kernels_and_bytes():
    """12B forward and 14B backward (the empty slice's zeroed gradient and its add included) per
    element of q (4096 wide) and k (512), and per q and k
    call 6 kernels on the (s, d) angles: 2 x 8 + 2 x (F + B) bytes an element."""
    m = load_model("gpt-oss-120b")
    assert m.rope_attention_factor == 0.1 * math.log(32) + 1
    rows, _ = ops(m)
    T, q, kv, d = 4096, 64 * 64, 8 * 64, 64
    freqs = (4 * 2 * F + 2 * (F + B)) * T * d
    assert total(rows, "fwd.rope.q") == 12 * B * T * q + freqs
    assert total(rows, "fwd.rope.k") == 12 * B * T * kv + freqs
    assert total(rows, "bwd.rope.") == 14 * B * T * (q + kv)
    assert sum(n.startswith("fwd.rope.") for n in rows) == 24
    assert sum(n.startswith("bwd.rope.") for n in rows) == 14


def test_no_unfused_rope_at_factor_one_and_it_costs_time():
    """A factor of 1 (every preset but gpt-oss) keeps RoPE fused, no op of its own; the
    unfused kernels lengthen the layer."""
    m = load_model("gpt-oss-120b")
    plain = dataclasses.replace(m, rope_attention_factor=1.0)
    rows, p = ops(plain)
    assert not any("rope" in n for n in rows)
    assert ops(m)[1].layer.total_s > p.layer.total_s
