"""Multi-head latent attention in the training layer graph: FLOPs, collectives and parameters
per rank against closed forms (DeepSeek-V3's widths: h 7168, 128 heads, r_q 1536, r_kv 512,
d_n 128, d_r 64, d_v 128)."""
from __future__ import annotations

import dataclasses

from tpsim.layer.dims import layer_dims
from tpsim.layer.graph import layer_template
from tpsim.spec.model import load_model
from tpsim.spec.model_params import attention_params, mla_duplicated_params, mla_params

V3 = load_model("deepseek-v3")


def _forward(model, tp, sp, s=4096):
    d = layer_dims(model, tp, 1, s, "bf16", sp, training=True)
    tpl = layer_template(tp > 1, sp, blocks=("attention",), dropout=False,
                         swiglu=True, mla=2 if model.q_lora_rank else 1)
    return d, tpl, list(zip(tpl.nodes, tpl.ops(d)))


def test_attention_block_forward_flops():
    """TP 8 with SP, s 4096: Tn 512 tokens into the duplicated down projections, T 4096 into
    the up projections, 16 heads per rank; causal pairs 4096 x 4097 / 2, head widths 192 and
    128 (q/k, v)."""
    _, _, ops = _forward(V3, 8, True)
    flops = sum(op.flops for n, op in ops if n.phase == "forward")
    T, Tn = 4096, 512
    expected = (2 * Tn * 7168 * 1536 + 2 * T * 1536 * 16 * 192 + 2 * Tn * 7168 * 576
                + 2 * T * 512 * 16 * 256 + 2 * 16 * (T * (T + 1) // 2) * (192 + 128)
                + 2 * T * 2048 * 7168)
    assert flops == expected
    attn = {n.name: op for n, op in ops}
    assert attn["bwd.attn"].flops == 2 * attn["fwd.attn"].flops


def test_collectives_with_sequence_parallelism():
    """SP: the compressed queries (T x 1536) and latents (T x 576) are gathered forward and
    their gradients reduce-scattered backward; the output projection as Megatron's."""
    _, _, ops = _forward(V3, 8, True)
    coll = [(n.name, op.op, op.nbytes) for n, op in ops if n.stream == "comm"]
    T = 4096
    assert coll == [("fwd.q_down.all-gather", "all-gather", T * 1536 * 2),
                    ("fwd.kv_down.all-gather", "all-gather", T * 576 * 2),
                    ("fwd.proj.reduce-scatter", "reduce-scatter", T * 7168 * 2),
                    ("bwd.proj.all-gather", "all-gather", T * 7168 * 2),
                    ("bwd.kv_up.reduce-scatter", "reduce-scatter", T * 576 * 2),
                    ("bwd.q_up.reduce-scatter", "reduce-scatter", T * 1536 * 2)]


def test_without_sequence_parallelism_the_latent_gradients_are_all_reduced():
    """A dense MLA model (no query compression) at TP 2, no SP: the column-parallel q_proj's
    input gradient (T x h) and the latent's (T x (r_kv + d_r)) are all-reduced backward."""
    m = dataclasses.replace(V3, experts=0, experts_per_token=0, shared_experts=0,
                            first_dense_layers=0, q_lora_rank=None, name="mla-dense")
    _, _, ops = _forward(m, 2, False, s=256)
    coll = [(n.name, op.nbytes) for n, op in ops if n.stream == "comm"]
    assert coll == [("fwd.proj.all-reduce", 256 * 7168 * 2),
                    ("bwd.kv_up.all-reduce", 256 * 576 * 2),
                    ("bwd.q_proj.all-reduce", 256 * 7168 * 2)]


def test_parameters_per_rank():
    """Duplicated: 1536 x 7168 + 1536 + 7168 x 576 + 512 = 15,140,864; split over TP:
    1536 x 128 x 192 + 512 x 128 x 256 + 128 x 128 x 7168 = 171,966,464 (21,495,808 at TP 8)."""
    assert mla_duplicated_params(V3) == 15_140_864
    assert attention_params(V3) == mla_params(V3) == 15_140_864 + 171_966_464
    assert mla_params(V3, 8) == 15_140_864 + 21_495_808
    dense_mlp = 3 * 7168 * 18432 // 8
    assert V3.layer_params(8) == mla_params(V3, 8) + dense_mlp + 2 * 7168
    plain = dataclasses.replace(V3, kv_lora_rank=None, name="gqa")
    assert V3.sp_sync_params(2, False) - plain.sp_sync_params(2, False) == 2 * 15_140_864


def test_fp8_casts_each_down_projections_input_and_the_norms_apart_under_current_scaling():
    """FP8: each down projection (its own TELinear) casts the Tn x h input, read 2 and write
    1 + 1 bytes, current scaling reading it once more for its amax (a kernel of its own); the up projections' fused
    norms write fp8 under delayed scaling, and under current scaling cast their Tn x r
    outputs apart (the amax found by the norm)."""
    tn, h = 512, 7168
    casts = {}
    for recipe in ("delayed", "tensorwise"):
        d = dataclasses.replace(layer_dims(V3, 8, 1, 4096, "fp8", True, training=True),
                                fp8_recipe=recipe)
        tpl = layer_template(True, True, blocks=("attention",), dropout=False, swiglu=True,
                             mla=2, fp8=d.quantizer)
        casts[recipe] = {n: op.nbytes for n, op in zip(tpl.names, tpl.ops(d))
                         if n.startswith("fwd.") and (n.endswith(".cast") or n.endswith(".amax"))}
    for name in ("fwd.q_down.cast", "fwd.kv_down.cast"):
        assert casts["delayed"][name] == casts["tensorwise"][name] == tn * h * (2 + 2)
        assert casts["tensorwise"][f"{name}.amax"] == tn * h * 2
        assert f"{name}.amax" not in casts["delayed"]
    assert "fwd.q_up.cast" not in casts["delayed"]
    assert casts["tensorwise"]["fwd.q_up.cast"] == tn * 1536 * (2 + 2)
    assert casts["tensorwise"]["fwd.kv_up.cast"] == tn * 512 * (2 + 2)
