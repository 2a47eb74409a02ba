"""Megatron's unfused attention core (tpsim.layer.unfused): the layout copies' bytes."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.layer.dims import Dims
from tpsim.layer.unfused import fused_softmax
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.layout import Layout
from tpsim.training.predict import predict

B = 2   # bf16 activations


def ops(model, tp, seq=2048, **kw):
    p = predict(model, "dgx-h100", tp=tp, dp=1, seq_len=seq, attention="unfused", **kw)
    return {o.name: o for o in p.ops}


def total(rows, prefix):
    return sum(o.bytes for name, o in rows.items() if name.startswith(prefix))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_copies_without_grouped_queries(tp):
    """GPT-3 (every query head its own K/V head): the context copy (T, q) read and written,
    autograd's alpha scaling of dQ and dK (T, q) each, the concatenation of dQ, dK, dV
    (T, q + 2 kv); the query reshape is a view and nothing is repeated: no bytes, no time."""
    e = ops("gpt3-13b", tp)
    T, q = 2048, 5120 // tp
    assert e["fwd.attn.contiguous"].bytes == 2 * B * T * q
    assert e["bwd.attn.scale.dq"].bytes == e["bwd.attn.scale.dk"].bytes == 2 * B * T * q
    assert e["bwd.attn.cat"].bytes == 2 * B * T * 3 * q
    for name in ("fwd.attn.query", "fwd.attn.repeat_kv.k", "bwd.attn.repeat_kv.v"):
        assert e[name].bytes == 0 and e[name].time_s == 0


@settings(max_examples=10, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), seq=st.sampled_from([512, 1024, 4096]),
       mb=st.sampled_from([1, 2]))
def test_copies_with_grouped_queries(tp, seq, mb):
    """Llama-3 8B (32 query heads, 8 K/V heads): the query copy 2 T q B unless a rank holds one
    K/V head of one sequence (tp 8, micro-batch 1: the reshapes are views); K and V each
    repeated (read kv, write q) forward and summed back backward; dK scaled after the
    repeat, on q columns."""
    e = ops("llama3-8b", tp, seq, micro_batch=mb)
    T, q, kv = seq * mb, 4096 // tp, 1024 // tp
    assert e["fwd.attn.query"].bytes == (2 * B * T * q if tp < 8 or mb > 1 else 0)
    assert total(e, "fwd.attn.repeat_kv") == 2 * B * T * (q + kv) == total(e, "bwd.attn.repeat_kv")
    assert e["bwd.attn.scale.dk"].bytes == 2 * B * T * q
    assert e["bwd.attn.cat"].bytes == 2 * B * T * (q + 2 * kv)
    assert all(e[n].time_s > 0 for n in ("fwd.attn.contiguous", "bwd.attn.cat"))


def test_fused_attention_has_no_layout_copies():
    """Flash attention reads q, k, v in place and writes dQ, dK, dV into one buffer."""
    e = {o.name: o for o in predict("gpt3-13b", "dgx-h100", tp=2, dp=1).ops}
    assert not any(n.startswith(("fwd.attn.", "bwd.attn.")) for n in e)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_the_core_keeps_the_repeated_keys_and_values(tp):
    """Grouped queries (toy: 8 query heads, 2 K/V heads): baddbmm keeps Q and the repeated K,
    (T, q) each, bmm the repeated V, (T, q), so the core keeps 2 T (q - kv) B more than with
    its k and v at kv columns; Megatron's selective checkpoint keeps q, k, v before the repeat:
    T (q + 2 kv) B, the same as without grouped queries at the same q and kv."""
    from tpsim.base.schema import from_mapping
    from tpsim.layer.graph import layer_graph
    from tpsim.spec.model import ModelConfig

    S, mb, H = 128, 2, 256

    def graph(kv_heads, recompute):
        m = from_mapping(ModelConfig, {"name": "toy", "layers": 2, "hidden": H, "heads": 8,
                                       "kv_heads": kv_heads, "vocab": 1000, "seq_len": S},
                         "<test>")
        g = layer_graph(m, tp, mb, S, "bf16", attention="unfused", recompute=recompute)
        return {n: a["saved_bytes"] for n, a in g.nodes(data=True)}

    T, q, kv = S * mb, H // tp, max(1, 2 // tp) * H // 8   # a K/V head replicated past tp 2
    none, sel = graph(2, "none"), graph(2, "selective")
    assert none["fwd.attn.scores"] == 2 * T * q * B and none["fwd.attn.av"] == T * q * B
    assert sel["fwd.attn.scores"] + sel["fwd.attn.av"] == T * (q + 2 * kv) * B
    plain = graph(8, "none")                        # every query head its own K/V head
    assert plain["fwd.attn.scores"] + plain["fwd.attn.av"] == 3 * T * q * B
    assert sum(none.values()) - sum(sel.values()) > 2 * T * (q - kv) * B


@pytest.mark.parametrize("mb, fused", [(1, False), (2, False), (4, True)])
@pytest.mark.parametrize("scaling", [False, True])
def test_softmax_falls_back_where_megatrons_kernel_does_not_apply(mb, fused, scaling):
    """GPT-3 13B at TP 8: 5 heads a rank, so b x 5 scores of 2048 keys are a multiple of the
    kernel's 4 per block only at micro-batch 4. Elsewhere PyTorch's kernels: in 16-bit
    masked_fill_ and softmax, 4 B an element forward and 5 B backward; with the query-key
    layer scaling in fp32 (cast, scale, mask, softmax, cast back) 2 B + 28 and 2 B + 36, the
    fp32 output kept; the calls past the first each add a launch to the host's issue."""
    e = ops("gpt3-13b", 8, micro_batch=mb, query_key_layer_scaling=scaling)
    scores = mb * 5 * 2048 * 2048
    fwd, bwd = ((2 * B, 3 * B) if fused else (2 * B + 28, 2 * B + 36) if scaling
                else (4 * B, 5 * B))
    assert e["fwd.attn.softmax"].bytes == fwd * scores
    assert e["bwd.attn.softmax"].bytes == bwd * scores


@pytest.mark.parametrize("seq, fused", [(16, False), (32, True), (4096, True), (4100, False),
                                        (8192, False)])
def test_fused_softmax_needs_its_key_lengths(seq, fused):
    """``is_kernel_available``: 16 < keys <= 4096, a multiple of 4, in 16-bit; up to 128 keys
    a block holds 8 sequences of scores, past them 4 (here b heads = 40)."""
    dims = Dims(b=2, s=seq, h=5120, tp=2, dtype="bf16", heads=20, kv_heads=20, d=128,
                f=10240, sp=False)
    assert fused_softmax(dims) is fused
    assert fused_softmax(dataclasses.replace(dims, b=1, heads=4, s=64)) is False  # 4 % 8
    assert fused_softmax(dataclasses.replace(dims, dtype="fp32")) is False


def test_megatron_deepspeed_scales_query_key_by_layer():
    """Megatron-DeepSpeed and Megatron-LM of 2021 ran with --no-query-key-layer-scaling unset;
    Megatron-core's default is off."""
    assert FRAMEWORKS["megatron-deepspeed"]["query_key_layer_scaling"] is True
    assert FRAMEWORKS["megatron-lm-2021"]["query_key_layer_scaling"] is True
    assert Layout().query_key_layer_scaling is False
