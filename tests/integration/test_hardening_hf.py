"""Hugging Face config.json as --model: four published configs (tests/data/hf, sources in its
README) load to the sizes their model cards state, and a bad config.json is one ConfigError
naming the config.json key."""
from __future__ import annotations

import dataclasses
import json

import pytest

from tpsim.cli import main
from tpsim.base.errors import ConfigError
from tpsim.spec.model import load_model
from tpsim.training.predict import predict

from tests.conftest import HF, hf_config_file



def test_llama3_8b_is_the_shipped_preset():
    """meta-llama/Meta-Llama-3-8B: the same sizes as tpsim's own llama3-8b preset (Llama 3
    paper, Table 3), and the Hub's 8,030,261,248 parameters exactly:
    32 x [2*4096^2 + 3*4096*14336 + 2*(8*128)*4096 + 2*4096] + 2*128256*4096 + 4096."""
    hf, ours = load_model(HF / "Meta-Llama-3-8B" / "config.json"), load_model("llama3-8b")
    fields = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab",
              "seq_len", "activation", "norm", "dropout", "tie_embeddings", "bias")
    assert {f: getattr(hf, f) for f in fields} == {f: getattr(ours, f) for f in fields}
    assert hf.name == "Meta-Llama-3-8B" and hf.params() == 8_030_261_248


def test_mistral_7b():
    """mistralai/Mistral-7B-v0.1: the Llama 3 8B layer with a 32000-token vocabulary:
    32 x 218,112,000 + 2*32000*4096 + 4096 = 7,241,732,096, the Hub's count."""
    m = load_model(HF / "Mistral-7B-v0.1")          # the directory: its config.json
    assert (m.kv_heads, m.activation, m.norm, m.bias, m.seq_len) == (8, "swiglu", "rmsnorm",
                                                                      False, 32768)
    assert m.params() == 7_241_732_096


def test_qwen2_7b_loads_without_its_qkv_biases():
    """Qwen/Qwen2-7B-Instruct: 28 layers of hidden 3584, 28 heads of 128, 4 KV heads, MLP 18944.
    Qwen2 has biases on q, k, v only; tpsim's ``bias`` means every linear, so it loads with
    bias false and counts 28 * (3584 + 2*512) = 129,024 parameters fewer than the Hub's
    7,615,616,512."""
    m = load_model(HF / "Qwen2-7B-Instruct" / "config.json")
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.ffn_hidden) == \
        (28, 3584, 28, 4, 128, 18944)
    assert m.bias is False and not m.tie_embeddings
    assert m.params() + 28 * (3584 + 2 * 512) == 7_615_616_512


def test_qwen3_4b_loads_with_its_qk_norm():
    """Qwen/Qwen3-4B-Instruct-2507 (model_type qwen3): 36 layers of hidden 2560, 32 heads of 128
    (4096 wide, not hidden / heads), 8 KV heads, MLP 9728, tied embeddings, no biases, q_norm
    and k_norm. 36 x 100,930,560 + 151936*2560 + 2560 = 4,022,458,880: the Hub's
    4,022,468,096 less the q_norm and k_norm weights (36 x 2 x 128), which tpsim does not count."""
    m = load_model(HF / "Qwen3-4B-Instruct-2507" / "config.json")
    assert (m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.ffn_hidden) == \
        (36, 2560, 32, 8, 128, 9728)
    assert m.qk_norm and m.bias is False and m.tie_embeddings
    assert m.params() + 36 * 2 * 128 == 4_022_468_096


def test_gpt2_is_the_shipped_preset():
    """openai-community/gpt2: n_embd/n_layer/n_head/n_positions; n_inner absent -> 4 * n_embd;
    tie_word_embeddings absent -> true (transformers' default). The Hub's 124,439,808 less the
    learned position embeddings tpsim does not model (1024 * 768)."""
    hf, ours = load_model(HF / "gpt2" / "config.json"), load_model("gpt2")
    for f in ("layers", "hidden", "heads", "ffn_hidden", "vocab", "seq_len", "activation",
              "norm", "dropout", "tie_embeddings", "bias"):
        assert getattr(hf, f) == getattr(ours, f), f
    assert hf.params() == 124_439_808 - 1024 * 768


def test_cli_predicts_from_a_config_json(capsys):
    assert main(["predict", "--model", str(HF / "Mistral-7B-v0.1" / "config.json"), "--tp", "8",
                 "--seq", "4096", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"]["model"] == "Mistral-7B-v0.1" and out["inputs"]["seq_len"] == 4096
    assert out["inputs"]["kv_heads_per_rank"] == 1



@pytest.mark.parametrize("base, changes, key, expected", [
    ("Meta-Llama-3-8B", {"model_type": "falcon"}, "model_type", "llama, mistral, qwen2, qwen3, gpt2, mixtral"),
    ("Meta-Llama-3-8B", {"model_type": "mixtral"}, "num_local_experts", "this key"),
    ("Meta-Llama-3-8B", {"hidden_size": ...}, "hidden_size", "this key"),
    ("Meta-Llama-3-8B", {"hidden_act": "gelu"}, "hidden_act", "silu"),
    ("Meta-Llama-3-8B", {"num_hidden_layers": 32.5}, "num_hidden_layers", "an integer"),
    ("Meta-Llama-3-8B", {"num_key_value_heads": 5}, "num_key_value_heads", "divisor"),
    ("Meta-Llama-3-8B", {"vocab_size": 10**400}, "vocab_size", "at most"),
    ("Meta-Llama-3-8B", {"attention_bias": "no"}, "attention_bias", "true or false"),
    ("gpt2", {"activation_function": "relu"}, "activation_function", "GeLU"),
    ("gpt2", {"n_embd": -768}, "n_embd", "> 0"),
])
def test_bad_config_names_the_hf_key(tmp_path, base, changes, key, expected):
    with pytest.raises(ConfigError) as e:
        load_model(hf_config_file(tmp_path, base, **changes))
    assert e.value.key == key and expected in str(e.value)


def test_duplicate_key_and_non_object(tmp_path):
    p = tmp_path / "dup.json"
    p.write_text('{"model_type": "llama", "model_type": "gpt2"}')
    with pytest.raises(ConfigError, match="model_type.*each key once"):
        load_model(p)
    p.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a JSON object"):
        load_model(p)


def test_a_config_json_predicts(tmp_path):
    """The whole path: config.json -> ModelConfig -> predict, GQA with TP above kv_heads."""
    pred = predict(HF / "Qwen2-7B-Instruct" / "config.json", "dgx-h100", tp=4, seq_len=2048)
    assert pred.inputs.kv_heads_per_rank == 1 and 0 < pred.model.mfu <= 1


@pytest.mark.parametrize("base", ["Meta-Llama-3-8B", "Mistral-7B-v0.1", "Qwen2-7B-Instruct",
                                  "Mixtral-8x7B-v0.1", "DeepSeek-V3"])
def test_a_config_without_hidden_act_takes_transformers_default_silu(tmp_path, base):
    """A trimmed config.json without ``hidden_act`` loads as transformers loads it (every gated
    family's configuration class defaults it to "silu"), not as a refusal naming silu."""
    full = load_model(HF / base / "config.json")
    trimmed = load_model(hf_config_file(tmp_path, base, hidden_act=...))
    assert trimmed.activation == "swiglu"
    assert dataclasses.replace(trimmed, name=full.name, description=full.description) == full
