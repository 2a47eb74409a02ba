"""The routed experts' biases (gpt-oss) in the MoE slot: fc2's eager bias add and its backward
against their closed forms, fc1's bias riding its GEMMs, and the per-rank parameter counts."""
from __future__ import annotations

import pytest

from tpsim.base.schema import from_mapping
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import moe_dims, routed_rows
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.spec.model import ModelConfig, load_model
from tpsim.spec.model_params import expert_params, moe_layer_params

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 8,
       "experts_per_token": 2, "expert_ffn_hidden": 128}


def toy(**kw) -> ModelConfig:
    return from_mapping(ModelConfig, {**TOY, **kw}, "<test>")


def ops_of(bias: bool, ep: int = 1):
    """The slot's ops at b 2, s 128 (T = 256 tokens), EP 1 (all-gather) or ``ep``."""
    m = toy(bias=bias)
    if ep == 1:
        d, moe = moe_dims(m, 1, 2, 128, "bf16", False), 1
    else:
        d, moe = alltoall_dims(m, 1, ep, 1, 2, 128, "bf16", False, 1.0), Alltoall(False, True, False)
    tpl = layer_template(False, blocks=("mlp",), dropout=False, swiglu=True, moe=moe, bias=bias)
    return d, tpl, dict(zip(tpl.names, tpl.ops(d)))


@pytest.mark.parametrize("ep", [1, 2])
def test_fc2_bias_add_and_gradient_closed_form(ep):
    """R routed rows of h = 256 in bf16 (B = 2): forward (24 + 2B) R h bytes, backward
    (36 + 2B) R h, the repeated fp32 bias kept (4 R h); fc1's bias costs no op."""
    d, tpl, ops = ops_of(True, ep)
    r, h = routed_rows(d), 256
    assert ops["fwd.experts.fc2.bias"].bytes == 28 * r * h
    assert ops["bwd.experts.fc2.bias"].bytes == 40 * r * h
    assert not any("fc1.bias" in n for n in ops)
    plain = ops_of(False, ep)[1]
    assert tpl.saved_bytes(d) - plain.saved_bytes(d) == 4 * r * h
    assert set(ops) - set(dict(zip(plain.names, plain.ops(d)))) == {
        "fwd.experts.fc2.bias", "bwd.experts.fc2.bias", "bwd.experts.bias.grad_accumulate"}


def test_biases_add_no_flops():
    d, _, ops = ops_of(True)
    _, _, plain = ops_of(False)
    assert sum(op.flops for op in ops.values()) == sum(op.flops for op in plain.values())


def test_moe_layer_params_with_biases_closed_form():
    """Biases add the attention's q + 2 kv + h (256 + 512 + 256), E (n_in f_e / etp + h) / ep
    for the experts (n_in 2, f_e 128, h 256, E 8) and the router's E, and no dense MLP's."""
    m, plain = toy(bias=True), toy()
    assert moe_layer_params(m, 1) - moe_layer_params(plain, 1) == 1024 + 8 * (2 * 128 + 256) + 8
    assert expert_params(m, 2, 2) - expert_params(plain, 2, 2) == 4 * (2 * 64 + 256)


def test_gpt_oss_layers_sum_to_its_published_size():
    """36 MoE layers at TP 1 (biases included), both vocabularies and the final norm: the
    whole model, 116.83B (model card Table 1)."""
    m = load_model("gpt-oss-120b")
    total = 36 * moe_layer_params(m, 1) + m.vocab_params(m.vocab) + m.norm_params
    assert total == m.params() == pytest.approx(116.83e9, rel=1e-3)
    assert moe_layer_params(m, 1, 8, 1) == moe_layer_params(m, 1) - 7 * expert_params(m, 8, 1)


@pytest.mark.parametrize("dropout", [False, True])
def test_biased_experts_unfuse_the_attention_bias_dropout_add(dropout):
    """A layer with biased experts adds the attention's bias in a pass of its own (read and
    write T h, B = 2; with dropout its pass too: 4 T h B); a bare call, no Python-level op; the
    fused op unchanged; none without biases or experts."""
    m = toy(bias=True)
    d = moe_dims(m, 1, 2, 128, "bf16", False)
    tpls = {(bias, moe): layer_template(False, dropout=dropout, swiglu=True, moe=moe, bias=bias)
            for bias in (False, True) for moe in (0, 1)}
    ops = {k: dict(zip(t.names, t.ops(d))) for k, t in tpls.items()}
    extra = "fwd.bias_dropout_add1.bias"
    assert ops[True, 1][extra].bytes == (4 if dropout else 2) * 256 * 256 * 2
    assert tpls[True, 1].nodes[tpls[True, 1].names.index(extra)].host_ops == 0
    assert ops[True, 1]["fwd.bias_dropout_add1"] == ops[False, 1]["fwd.bias_dropout_add1"]
    assert all(extra not in o for k, o in ops.items() if k != (True, 1))


@pytest.mark.parametrize("ep", [1, 2])
def test_bias_kernels_and_main_gradient_adds(ep):
    """E_l = 8 / ep: the bias add runs 2 E_l + 2 kernels, its backward 6 E_l + 3, each with its
    launch; the DDP hook adds the 2 E_l bias gradients (fc1's 2 f_e = 256 and fc2's h = 256
    elements each) into the main gradient in 2 E_l kernels, B + 8 bytes an element."""
    d, tpl, ops = ops_of(True, ep)
    el = 8 // ep
    assert ops["fwd.experts.fc2.bias"].kernels == 2 * el + 2
    assert ops["bwd.experts.fc2.bias"].kernels == 6 * el + 3
    add = ops["bwd.experts.bias.grad_accumulate"]
    assert (add.kernels, add.bytes) == (2 * el, el * (256 + 256) * (2 + 8))
    assert "bwd.experts.bias.grad_accumulate" not in ops_of(False, ep)[1].names
