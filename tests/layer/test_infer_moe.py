"""The serving MoE slot: the distinct-experts formula's limits and the ops it makes."""
from __future__ import annotations

import math

from hypothesis import given, strategies as st

from tpsim.layer.infer_graph import serving_dims, serving_layer_template
from tpsim.layer.infer_moe import expected_distinct_experts, experts_hit, rows_per_expert
from tpsim.spec.model import load_model


@given(st.integers(1, 512), st.data())
def test_distinct_experts_limits(experts, data):
    """D(1) = k; D(0) = 0; D -> E as B grows; D increasing in B and at most min(E, k B)."""
    k = data.draw(st.integers(1, experts))
    b = data.draw(st.integers(1, 4096))
    assert math.isclose(expected_distinct_experts(experts, k, 1), k)
    assert expected_distinct_experts(experts, k, 0) == 0
    d = expected_distinct_experts(experts, k, b)
    assert d <= min(experts, k * b) * (1 + 1e-12)
    assert expected_distinct_experts(experts, k, b + 1) >= d
    assert math.isclose(expected_distinct_experts(experts, k, 10 ** 6), experts, rel_tol=1e-9) \
        or k / experts < 1e-4


def test_distinct_experts_closed_form():
    """E 8, k 2, B 2: each expert missed by both tokens with probability (3/4)^2 = 9/16, so
    D = 8 x 7/16 = 3.5."""
    assert math.isclose(expected_distinct_experts(8, 2, 2), 3.5)


def _ops(phase, b, s, ep=1, tp=8):
    m = load_model("deepseek-v3")
    d = serving_dims(m, tp, ep, b, s, "bf16", "bf16", "bf16", s + 1)
    tpl = serving_layer_template(phase, tp > 1, True, 2, ep > 1, 2)
    return d, {n.name: op for n, op in zip(tpl.nodes, tpl.ops(d))}


def test_decode_batch_one_reads_k_experts_prefill_reads_all():
    """DeepSeek-V3 (256 experts, top-8): decode at batch 1 runs 8 experts of one row each,
    reading 8/256 of the expert weights; a 4096-token prefill hits all 256."""
    d, ops = _ops("decode", 1, 1)
    fc1 = ops["fwd.experts.fc1"]
    assert (experts_hit(d), fc1.batch, fc1.m) == (8, 8, 1)
    weights = 3 * 7168 * 2048 // 8 * 2           # fc1 + fc2 of one expert, per rank, bf16
    read = ops["fwd.experts.fc1"].bytes + ops["fwd.experts.fc2"].bytes
    assert weights * 8 < read < weights * 8 * 1.01
    _, pre = _ops("prefill", 1, 4096)
    assert pre["fwd.experts.fc1"].batch == 256
    assert pre["fwd.experts.fc1"].m == math.ceil(4096 * 8 / 256)


def test_expert_parallel_dispatch_sizes():
    """EP 8 at TP 1: each rank holds 32 experts; dispatch and combine carry T k h bpe; the
    rows a rank's experts receive are T k (ep T tokens x k / ep); no TP all-reduce."""
    d, ops = _ops("decode", 4, 1, ep=8, tp=1)
    assert d.experts == 32
    assert ops["fwd.moe.dispatch"].nbytes == ops["fwd.moe.combine"].nbytes == 4 * 8 * 7168 * 2
    assert "fwd.moe.all-reduce" not in ops
    hit = expected_distinct_experts(256, 8, 32) / 8
    assert experts_hit(d) == round(hit) and rows_per_expert(d) == math.ceil(32 / round(hit))


def test_experts_activation_carries_the_dense_mlps_arithmetic():
    """The experts' activation is the dense MLP's kernel on R x f_e elements: it names the same
    arithmetic (swiglu for DeepSeek-V3), which a CPU device prices per element."""
    d, ops = _ops("prefill", 1, 512)
    act = ops["fwd.experts.act"]
    assert act.arith == "swiglu" and act.elements == d.T * d.topk * d.fe
