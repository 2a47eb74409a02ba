"""QK-norm (Qwen3): the query's and the key's RMSNorm against their closed forms, where they sit
in the layer, what they keep, and the presets and Hugging Face configs that carry them."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.layer.graph import layer_dims, layer_template
from tpsim.spec.model import load_model
from tpsim.training.predict import predict


def ops_of(qk_norm: bool, tp: int = 1, sp: bool = False):
    """Qwen3-30B-A3B's attention block at b 1, s 1024, bf16, on one of ``tp`` ranks."""
    d = layer_dims(load_model("qwen3-30b-a3b"), tp, 1, 1024, "bf16", sp, training=True)
    tpl = layer_template(tp > 1, sp, ("attention",), dropout=False, swiglu=True,
                         qk_norm=qk_norm)
    return d, tpl, dict(zip(tpl.names, tpl.ops(d)))


@pytest.mark.parametrize("tp, sp", [(1, False), (2, True), (4, False)])
def test_bytes_closed_form(tp, sp):
    """T = 1024 tokens (all of them, SP or not: after the QKV GEMM), q = 32/tp x 128 and
    kv = 4/tp x 128 per rank, bf16: forward 2 T w 2 bytes, backward 3 T w 2, for w = q, kv."""
    d, _, ops = ops_of(True, tp, sp)
    q, kv = 32 // tp * 128, 4 // tp * 128
    for name, w in (("q_norm", q), ("k_norm", kv)):
        assert ops[f"fwd.{name}"].bytes == 2 * 1024 * w * 2
        assert ops[f"bwd.{name}"].bytes == 3 * 1024 * w * 2


def test_order_and_saved_inputs():
    """Forward: QKV GEMM, q_norm, k_norm, attention; backward: attention, k_norm, q_norm, the
    QKV gradients; each keeps its input, T (q + kv) bf16 elements in all, and adds no FLOP."""
    d, tpl, ops = ops_of(True)
    names = list(tpl.names)
    assert names.index("fwd.qkv") < names.index("fwd.q_norm") < names.index("fwd.k_norm") \
        < names.index("fwd.attn")
    assert names.index("bwd.attn") < names.index("bwd.k_norm") < names.index("bwd.q_norm") \
        < names.index("bwd.qkv.dgrad")
    plain_d, plain, plain_ops = ops_of(False)
    assert set(ops) - set(plain_ops) == {"fwd.q_norm", "fwd.k_norm", "bwd.q_norm", "bwd.k_norm"}
    assert tpl.saved_bytes(d) - plain.saved_bytes(plain_d) == 1024 * (4096 + 512) * 2
    assert sum(o.flops for o in ops.values()) == sum(o.flops for o in plain_ops.values())


def test_presets_and_hf_configs():
    """The Qwen3 presets carry it, others do not (a qwen3_moe config.json loads as the preset:
    tests/spec/test_hf_moe.py)."""
    assert load_model("qwen3-30b-a3b").qk_norm and load_model("qwen3-235b-a22b").qk_norm
    assert not load_model("llama3-70b").qk_norm and not load_model("deepseek-v3").qk_norm


def test_it_lengthens_the_layer():
    """Four more memory-bound kernels and four more host ops: the layer is longer, by no more
    than their GPU time plus their issue on the host."""
    m = load_model("qwen3-30b-a3b")
    run = dict(tp=1, ep=8, dp=8, seq_len=4096, dtype="bf16")
    p = predict(m, "dgx-h100", **run)
    plain = predict(dataclasses.replace(m, qk_norm=False), "dgx-h100", **run)
    added = sum(r.time_s for r in p.ops if r.name.split(".")[-1] in ("q_norm", "k_norm"))
    host = p.run.host_dispatch_s
    assert 0 < p.layer.total_s - plain.layer.total_s <= added + 4 * host + 1e-12
