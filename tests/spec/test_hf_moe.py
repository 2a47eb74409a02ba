"""Mixture-of-experts Hugging Face configs (tests/data/hf, sources in its README): each family
reads into the MoE fields, loads as the preset of the same model, and pricing refuses it; a
config tpsim would misread is refused with one ConfigError naming the config.json key."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.model import load_model

from tests.conftest import HF, hf_config_file

SAME_AS_PRESET = [("Mixtral-8x7B-v0.1", "mixtral-8x7b"), ("Qwen3-30B-A3B", "qwen3-30b-a3b"),
                  ("gpt-oss-120b", "gpt-oss-120b"), ("DeepSeek-V3", "deepseek-v3")]


@pytest.mark.parametrize("directory, preset", SAME_AS_PRESET)
def test_config_loads_as_the_preset(directory, preset):
    """Every field but the name, description and context length (the config's longest
    context; the presets keep the pre-training length) and the router's auxiliary loss (a
    training recipe's, Megatron-Bridge's providers: a config loads with none)."""
    hf, ours = load_model(HF / directory / "config.json"), load_model(preset)
    differ = {f.name for f in dataclasses.fields(hf) if getattr(hf, f.name) != getattr(ours, f.name)}
    assert differ <= {"name", "description", "seq_len", "load_balancing"}
    assert hf.load_balancing == "none"
    assert hf.moe and hf.params() == ours.params()


def test_qwen2_moe_shared_expert_and_published_counts():
    """Qwen1.5-MoE-A2.7B (qwen2_moe): 60 experts of 1408, top-4, one shared expert of 5632.
    Published: 14.3B total, 2.7B activated (Qwen blog 2024-03-28, model card). By hand:
    attention 4 x 2048^2 = 16.8M, experts 60 x 3 x 2048 x 1408 = 519.0M, shared 34.6M, router
    0.12M: 570.5M a layer x 24 + 0.62B embeddings = 14.32B; active 24 x (16.8 + 4 x 8.65 +
    34.6 + 0.12)M + 0.62B = 2.69B."""
    m = load_model(HF / "Qwen1.5-MoE-A2.7B" / "config.json")
    assert (m.experts, m.experts_per_token, m.expert_ffn_hidden) == (60, 4, 1408)
    assert (m.shared_experts, m.shared_expert_ffn_hidden) == (1, 5632)
    assert m.params() == pytest.approx(14.3e9, rel=0.02)
    assert m.active_params() == pytest.approx(2.7e9, rel=0.02)


def test_deepseek_mla_and_router_fields():
    m = load_model(HF / "DeepSeek-V3" / "config.json")
    assert (m.first_dense_layers, m.shared_experts, m.router) == (3, 1, "sigmoid")
    assert (m.q_lora_rank, m.kv_lora_rank, m.qk_rope_head_dim, m.head_dim) == (1536, 512, 64, 128)


@pytest.mark.parametrize("directory, refused", [
    ("Mixtral-8x7B-v0.1", None), ("Qwen3-30B-A3B", None), ("Qwen1.5-MoE-A2.7B", None),
    ("gpt-oss-120b", None), ("DeepSeek-V3", None), ("gpt-oss-120b", "sliding-window")])
def test_predict_prices_or_refuses_the_config_in_one_line(directory, refused, capsys):
    """The training step prices MoE layers at EP 1, biased experts and sliding windows
    (gpt-oss) and multi-head latent attention; a window beside unfused attention is refused
    in one line, never priced as full attention."""
    unfused = ["--attention", "unfused"] if refused else []
    rc = main(["predict", "--model", str(HF / directory / "config.json"), "--tp", "4",
               "--seq", "4096", "--sequence-parallel", *unfused])
    err = capsys.readouterr().err
    if refused is None:
        assert rc == 0 and err == ""
    else:
        assert rc == 2 and refused in err and "--attention" in err and err.count("\n") == 1


@pytest.mark.parametrize("directory", ["Mixtral-8x7B-v0.1", "Qwen3-30B-A3B"])
def test_serving_prices_experts(directory, capsys):
    assert main(["infer", "--model", str(HF / directory / "config.json"), "--tp", "4",
                 "--prompt", "128", "--gen", "4"]) == 0
    assert "fwd.experts.fc1" in capsys.readouterr().out


def test_serving_prices_biased_experts(capsys):
    assert main(["infer", "--model", str(HF / "gpt-oss-120b" / "config.json"), "--tp", "4",
                 "--prompt", "128", "--gen", "4"]) == 0
    assert "fwd.experts.fc1" in capsys.readouterr().out



@pytest.mark.parametrize("base, changes, key, expected", [
    # relabelled as a dense family: the experts would be dropped, so refused
    ("Mixtral-8x7B-v0.1", {"model_type": "mistral"}, "num_local_experts", "no num_local_experts"),
    ("Mixtral-8x7B-v0.1", {"model_type": "llama"}, "num_local_experts", "as a dense one"),
    ("Qwen3-30B-A3B", {"model_type": "qwen2"}, "num_experts", "no num_experts"),
    ("DeepSeek-V3", {"model_type": "llama"}, "n_routed_experts", "no n_routed_experts"),
    ("Meta-Llama-3-8B", {"kv_lora_rank": 512}, "kv_lora_rank", "no kv_lora_rank"),
    ("Qwen3-30B-A3B", {"model_type": "mixtral"}, "num_local_experts", "this key"),
    # the family's own keys: missing, or a layout tpsim does not read
    ("Mixtral-8x7B-v0.1", {"num_experts_per_tok": ...}, "num_experts_per_tok", "this key"),
    ("Qwen3-30B-A3B", {"decoder_sparse_step": 2}, "decoder_sparse_step", "every layer"),
    ("Qwen3-30B-A3B", {"mlp_only_layers": [0, 1]}, "mlp_only_layers", "every layer"),
    ("Mixtral-8x7B-v0.1", {"num_experts_per_tok": 9}, "num_experts_per_tok", "1 to experts"),
    ("DeepSeek-V3", {"scoring_func": "argmax"}, "scoring_func", "softmax, sigmoid"),
    ("DeepSeek-V3", {"qk_rope_head_dim": None}, "qk_rope_head_dim", "a positive width"),
    ("DeepSeek-V3", {"first_k_dense_replace": 61}, "first_k_dense_replace", "fewer than"),
    ("gpt-oss-120b", {"attention_bias": "yes"}, "attention_bias", "true or false"),
])
def test_misread_config_is_one_error_naming_the_hf_key(tmp_path, base, changes, key, expected):
    with pytest.raises(ConfigError) as e:
        load_model(hf_config_file(tmp_path, base, **changes))
    assert e.value.key == key and expected in str(e.value)
    assert main(["predict", "--model", str(hf_config_file(tmp_path, base, **changes))]) == 2


def test_dense_config_with_zero_or_null_expert_keys_still_loads(tmp_path):
    """Some dense configs carry the keys empty (num_experts 0, null): nothing to drop."""
    m = load_model(hf_config_file(tmp_path, "Qwen2-7B-Instruct", num_experts=0, moe_intermediate_size=None))
    assert not m.moe and m.params() == load_model(HF / "Qwen2-7B-Instruct" / "config.json").params()
