"""Mixture-of-experts and multi-head latent attention fields of ModelConfig: presets' total and
active parameter counts against the published figures, defaults that leave dense models as
they were, and one ConfigError for each inconsistent MoE file."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError, TpsimError
from tpsim.base.schema import from_mapping
from tpsim.spec.model import ModelConfig, load_model, shipped_models
from tpsim.spec.model_params import attention_params, is_moe_layer, moe_layers

SMALL = {"name": "small", "layers": 4, "hidden": 64, "heads": 4, "vocab": 1000, "seq_len": 32,
         "activation": "swiglu", "ffn_hidden": 128}


@pytest.mark.parametrize("name, total, active, embedding", [
    ("mixtral-8x7b", 46.7e9, 12.9e9, True),
    ("mixtral-8x22b", 141e9, 39e9, True),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9, True),
    ("qwen3-235b-a22b", 235e9, 22e9, True),
    ("gpt-oss-120b", 116.83e9, 5.13e9, False),
    ("deepseek-v3", 671e9, 37e9, True),
])
def test_total_and_active_parameters_match_published(name, total, active, embedding):
    """Published: Mixtral 8x7B 46.7B / 12.9B (Jiang et al. 2024); 8x22B 141B / 39B (Mistral AI);
    Qwen3 30.5B / 3.3B and 235B / 22B (Qwen3 report, Table 2 and model cards); gpt-oss-120b
    116.83B / 5.13B (model card Table 1); DeepSeek-V3 671B / 37B (report, section 4.2).

    Derivation, Mixtral 8x7B (h 4096, 32 layers, GQA 32/8 of 128, experts SwiGLU 14336):
    attention 2 h^2 + 2 h 1024 = 41.9M, one expert 3 h 14336 = 176.2M, router 32.8K, norms 8K:
    a layer 1451.5M, x 32 = 46.45B, + embedding and lm_head 2 x 32000 x 4096 = 0.26B: 46.70B.
    Active: 32 x (41.9M + 2 x 176.2M) + 0.26B = 12.88B.
    DeepSeek-V3: MLA 187.1M a layer (q 1536 (7168 + 128 x 192), kv 7168 x 576 + 512 x 128 x 256,
    o 128 x 128 x 7168); 3 dense layers of 3 x 7168 x 18432 = 396.4M; 58 MoE layers of 257
    experts x 44.04M + router 1.8M; embedding and lm_head 1.85B: 671.0B. Active: 3 dense
    layers 1.75B + 58 x (187.1M + 9 x 44.04M + 1.8M) + 1.85B = 37.55B.
    Conventions: active counts the token embedding as Mistral, Qwen and DeepSeek do; OpenAI's
    5.13B leaves it out (a lookup), so gpt-oss is compared with ``embedding=False``
    (0.96B attention + 4/128 of 114.71B MLP + 0.58B unembedding)."""
    m = load_model(name)
    assert m.params() == pytest.approx(total, rel=0.02)
    assert m.active_params(embedding=embedding) == pytest.approx(active, rel=0.02)
    assert m.moe and m.active_params() < m.params()


def test_dense_presets_are_unchanged_and_all_active():
    """Every dense preset: no experts, active = total, and params() the dense formula
    layers x layer_params() + vocabulary + final norm, as before experts existed."""
    for name in shipped_models():
        m = load_model(name)
        if m.moe:
            continue
        assert not m.mla
        m.check_priced()
        dense = m.layers * m.layer_params() + m.vocab_params(m.vocab) + m.norm_params
        assert m.params() == m.active_params() == dense
        assert m.active_params(embedding=False) == dense - m.vocab * m.hidden * (
            0 if m.tie_embeddings else 1)


def test_moe_layer_placement_and_widths_default():
    """first_dense_layers 1, moe_layer_freq 2 on 4 layers: layers 2 only (1 dense lead, then
    i % 2 == 0); expert width defaults to ffn_hidden, a shared expert's to the expert's."""
    m = from_mapping(ModelConfig, dict(SMALL, experts=4, experts_per_token=2, shared_experts=1,
                                       first_dense_layers=1, moe_layer_freq=2), "<t>")
    assert [is_moe_layer(m, i) for i in range(4)] == [False, False, True, False]
    assert moe_layers(m) == 1
    assert m.expert_ffn_hidden == m.shared_expert_ffn_hidden == 128
    mlp = 3 * 64 * 128
    assert m.params() - m.active_params() == 2 * mlp        # 2 experts of 4 left out
    with pytest.raises(TpsimError, match=r"mixture-of-experts layers \(4 routed experts \+ 1 "
                       r"shared, top-2\) are not priced outside training and serving"):
        m.check_tp(1)
    m.check_tp(1, training=True)
    dataclasses.replace(m, bias=True).check_tp(1, training=True)     # gpt-oss: priced


def test_mla_attention_parameters_closed_form():
    """h 64, 4 heads, r_q 16, r_kv 8, d_n 8, d_r 4, d_v 8:
    q 16 (64 + 4 x 12) + 16 = 1808; kv 64 x 12 + 8 + 8 x 4 x 16 = 1288; o 4 x 8 x 64 = 2048."""
    m = from_mapping(ModelConfig, dict(SMALL, q_lora_rank=16, kv_lora_rank=8, qk_nope_head_dim=8,
                                       qk_rope_head_dim=4, v_head_dim=8), "<t>")
    assert attention_params(m) == 1808 + 1288 + 2048
    with pytest.raises(TpsimError, match="multi-head latent attention is not priced yet"):
        m.check_priced()
    no_q = from_mapping(ModelConfig, dict(SMALL, kv_lora_rank=8, qk_nope_head_dim=8,
                                          qk_rope_head_dim=4, v_head_dim=8), "<t>")
    assert attention_params(no_q) == 64 * 4 * 12 + 1288 + 2048


@pytest.mark.parametrize("extra, key", [
    ({"experts": 4}, "experts_per_token"),
    ({"experts": 4, "experts_per_token": 5}, "experts_per_token"),
    ({"experts_per_token": 2}, "experts"),
    ({"shared_experts": 1}, "experts"),
    ({"experts": 4, "experts_per_token": 1, "first_dense_layers": 4}, "first_dense_layers"),
    ({"router": "argmax"}, "router"),
    ({"kv_lora_rank": 8}, "qk_rope_head_dim"),
    ({"experts": -1}, "experts"),
])
def test_inconsistent_moe_fields_are_one_config_error(extra, key):
    with pytest.raises(ConfigError) as e:
        from_mapping(ModelConfig, dict(SMALL, **extra), "moe.yaml")
    assert e.value.key == key


def test_moe_layer_count_is_closed_form():
    """moe_layers counts without a loop (2^31 - 1 layers load); it agrees with is_moe_layer
    layer by layer on every small case."""
    import itertools
    from types import SimpleNamespace
    for layers, lead, freq in itertools.product(range(1, 12), range(6), range(1, 5)):
        m = SimpleNamespace(experts=4, layers=layers, first_dense_layers=lead, moe_layer_freq=freq)
        assert moe_layers(m) == sum(is_moe_layer(m, i) for i in range(layers))
    big = from_mapping(ModelConfig, dict(SMALL, layers=2**31 - 1, experts=4, experts_per_token=1,
                                         moe_layer_freq=2), "<t>")
    assert moe_layers(big) == 2**30


def test_deepseek_v3_multi_token_prediction_module():
    """DeepSeek-V3's released checkpoint holds 685B: 671B of the main model and 14B of the MTP
    module (deepseek-ai/DeepSeek-V3 README), which stores its own embedding and head: one
    MoE layer (11.51B) + 2 h^2 projection + norms + embedding and head (1.85B) = 13.46B."""
    from tpsim.spec.model_params import mtp_params
    m = load_model("deepseek-v3")
    assert m.mtp_layers == 1
    assert mtp_params(m) == pytest.approx(14e9, rel=0.05)
    assert m.params() + mtp_params(m) == pytest.approx(685e9, rel=0.002)
    assert mtp_params(m) - mtp_params(m, own_vocab=False) == m.vocab_params(m.vocab)
