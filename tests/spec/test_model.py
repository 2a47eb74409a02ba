"""Model presets and ModelConfig: every preset loads and cites its source, sizes match the papers,
overrides follow their defaults, bad files and bad sizes fail with one ConfigError."""
from __future__ import annotations

import re

import pytest

from tpsim.base.errors import ConfigError
from tpsim.spec.model import load_model, shipped_dir, shipped_models, with_overrides

REQUIRED = {"gpt3", "gpt3-125m", "gpt3-1.3b", "gpt3-6.7b", "gpt3-13b", "gpt2", "gpt2-xl",
            "llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b"}

SMALL = {"name": "small", "layers": 2, "hidden": 64, "heads": 4, "vocab": 1000, "seq_len": 32}


def test_shipped_presets_inside_the_package():
    assert REQUIRED <= set(shipped_models())
    assert shipped_dir().parents[1].name == "tpsim"  # package data: the wheel carries them


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_every_preset_loads_and_cites_sources(name):
    m = load_model(name)
    assert m.name == name and m.kv_heads and m.head_dim and m.ffn_hidden
    lines = (shipped_dir() / f"{name}.yaml").read_text().splitlines()
    assert lines[0].startswith("#") and re.search(r"(19|20)\d\d", lines[0] + lines[1])
    for i, line in enumerate(lines):
        value = line.split("#")[0].split(":", 1)[-1].strip()
        if re.fullmatch(r"[0-9.]+", value) and value not in ("0.0",):
            assert "#" in line, f"{name}.yaml:{i + 1}: a number without its source"


def test_gpt3_is_table_2_1():
    """Brown et al. 2020 Table 2.1: 96 layers, d_model 12288, 96 heads of 128; n_ctx 2048."""
    m = load_model("gpt3")
    assert (m.layers, m.hidden, m.heads, m.head_dim, m.seq_len, m.vocab) == \
        (96, 12288, 96, 128, 2048, 50257)
    assert (m.ffn_hidden, m.kv_heads, m.activation, m.dropout) == (4 * 12288, 96, "gelu", 0.1)


@pytest.mark.parametrize("name, billions, tol", [
    ("gpt3", 175.0, 0.01), ("gpt3-13b", 13.0, 0.02), ("gpt3-1.3b", 1.3, 0.02),
    ("llama2-7b", 6.74, 0.005), ("llama2-70b", 68.98, 0.005),     # HF model cards
    ("llama3-8b", 8.03, 0.005), ("llama3-405b", 405.8, 0.005)])    # Llama 3 paper / HF
def test_parameter_counts_match_published(name, billions, tol):
    assert load_model(name).params() == pytest.approx(billions * 1e9, rel=tol)


def test_params_by_hand_small():
    """hidden 64, 4 heads of 16, ffn 256, LayerNorm, 1000 words, untied, 2 layers:
    layer = 64*192 + 64*64 + 2*64*256 + 2*128 = 12288 + 4096 + 32768 + 256 = 49408;
    model = 2*49408 + 2*1000*64 + 128 = 98816 + 128000 + 128 = 226944."""
    m = load_model_from(SMALL)
    assert m.layer_params() == 49408
    assert m.params() == 226944


def test_gqa_and_swiglu_params():
    """Llama 3 8B layer: h(q + 2kv) + qh = 4096*(4096+2048) + 4096^2 = 41,943,040;
    SwiGLU 3*4096*14336 = 176,160,768; 2 RMSNorms 8192: 218,112,000."""
    assert load_model("llama3-8b").layer_params() == 218_112_000


def load_model_from(data):
    from tpsim.spec.model import ModelConfig
    from tpsim.base.schema import from_mapping
    return from_mapping(ModelConfig, dict(data), "<test>")


def test_overrides_follow_defaults():
    m = load_model("gpt3")
    o = with_overrides(m, hidden=4096, heads=32)
    assert (o.hidden, o.heads, o.kv_heads, o.head_dim, o.ffn_hidden) == (4096, 32, 32, 128, 16384)
    llama = with_overrides(load_model("llama3-8b"), hidden=2048)
    assert llama.ffn_hidden == 14336 and llama.kv_heads == 8   # explicit sizes stay


def test_chapter_exercise_needs_a_head_dim():
    """12 heads do not divide 4096: tpsim says so, and takes Megatron's kv_channels instead."""
    with pytest.raises(ConfigError, match="heads: expected a divisor of hidden"):
        with_overrides(load_model("gpt3"), hidden=4096, heads=12)
    m = with_overrides(load_model("gpt3"), hidden=4096, heads=12, head_dim=256)
    assert m.q_width == 3072 and m.ffn_hidden == 16384


@pytest.mark.parametrize("key, value, flag", [
    ("hidden", 0, "--hidden"), ("heads", -4, "--heads"), ("layers", 2.5, "--layers"),
    ("dropout", 1.0, "--dropout"), ("seq_len", 0, "--seq")])
def test_bad_overrides(key, value, flag):
    with pytest.raises(ConfigError, match=re.escape(flag)):
        with_overrides(load_model("gpt3"), **{key: value})


@pytest.mark.parametrize("change, key", [
    ({"hidden": None}, "hidden"),                       # missing
    ({"hiden": 64}, "hiden"),                           # mistyped key
    ({"heads": "four"}, "heads"),                       # wrong type
    ({"layers": 0}, "layers"),                          # non-positive
    ({"activation": "relu"}, "activation"),
    ({"kv_heads": 3}, "kv_heads"),                      # does not divide heads
])
def test_bad_model_yaml(write_yaml, change, key):
    data = {k: v for k, v in {**SMALL, **change}.items() if v is not None}
    path = write_yaml(data, "model.yaml")
    with pytest.raises(ConfigError) as e:
        load_model(str(path))
    assert e.value.key == key and str(path) in str(e.value)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="gpt3.*llama3-8b"):
        load_model("gpt5")


@pytest.mark.parametrize("name, tp, what", [
    ("llama2-13b", 16, "heads"),         # 40 heads
    ("llama3-70b", 12, "kv_heads"),      # overridden to 48 heads: 12 is no divisor or multiple of 8
    ("gpt2-xl", 5, "ffn_hidden"),        # 25 heads divide by 5; ffn overridden to 6401 does not
])
def test_tp_must_divide(name, tp, what):
    m = load_model(name)
    if what == "ffn_hidden":
        m = with_overrides(m, ffn_hidden=6401)
    if what == "kv_heads":
        m = with_overrides(m, heads=48, head_dim=128, ffn_hidden=24576)
    with pytest.raises(ConfigError, match=f"{what}"):
        m.check_tp(tp)


def test_kv_heads_replicate_when_tp_exceeds_them():
    """Llama 3 70B (64 heads, 8 kv heads, d 128) at TP 16: 4 query heads and one key/value head
    per rank, the latter held by 2 ranks each (Megatron replicates them); the layer's key and
    value weights on a rank are 2 * 128 * 8192, not 1/16 of 2 * 1024 * 8192."""
    m = load_model("llama3-70b")
    m.check_tp(16)
    assert m.kv_heads_per_rank(16) == 1 and m.kv_heads_per_rank(4) == 2
    h, f = 8192, 28672
    assert m.layer_params(16) == (2 * 8192 * h + 3 * h * f) // 16 + 2 * 128 * h + 2 * h
