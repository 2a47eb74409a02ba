"""A Hugging Face ``config.json`` as a :class:`~tpsim.spec.model.ModelConfig`: ``--model path/config.json``
(or the directory that holds it).

Four families, by ``model_type``: ``llama``, ``mistral`` and ``qwen2`` (a gated MLP, RMSNorm,
grouped-query attention) and ``gpt2`` (GeLU MLP, LayerNorm, biases everywhere). The keys read,
named as transformers' configuration classes name them, and their defaults where a published
config may leave them out (transformers' own defaults):

============== ========================================== ===================================
tpsim          llama / mistral / qwen2                    gpt2
============== ========================================== ===================================
layers         num_hidden_layers                          n_layer
hidden         hidden_size                                n_embd
heads          num_attention_heads                        n_head
kv_heads       num_key_value_heads (default: heads)       = heads
head_dim       head_dim (default: hidden / heads)         hidden / heads
ffn_hidden     intermediate_size                          n_inner (null: 4 * n_embd)
vocab          vocab_size                                 vocab_size
seq_len        max_position_embeddings                    n_positions
activation     hidden_act silu -> swiglu (gate and up)    activation_function gelu* -> gelu
norm           rmsnorm (the family's RMSNorm,             layernorm
               rms_norm_eps)
dropout        attention_dropout (default 0)              resid_pdrop (default 0.1)
tie_embeddings tie_word_embeddings (default false)        tie_word_embeddings (default true)
bias           llama: attention_bias and mlp_bias;        true
               mistral, qwen2: false
============== ========================================== ===================================

``bias`` in tpsim means every linear layer has a bias. Qwen2 has biases on the q, k and v
projections only (not on the output projection or the MLP): it loads with ``bias: false``, the
closer of the two (the three missing bias vectors are ~3e-5 of a 7B layer's parameters and add
no GEMM). A Llama config with ``attention_bias`` but not ``mlp_bias`` loads the same way.

``seq_len`` is the context the model was built for (max_position_embeddings, 131072 for
Llama 3.1): pass ``--seq`` for the length you train or serve at. Not read: RoPE settings,
Mistral's sliding window (tpsim prices full causal attention), ``torch_dtype`` (``--dtype``).
"""
from __future__ import annotations

from pathlib import Path

from ..base.errors import ConfigError
from ..base.schema import load_json

GATED = ("llama", "mistral", "qwen2")
FAMILIES = (*GATED, "gpt2")

# tpsim key -> the config.json key it comes from, per family
_GATED_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size",
               "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
               "head_dim": "head_dim", "ffn_hidden": "intermediate_size", "vocab": "vocab_size",
               "seq_len": "max_position_embeddings", "dropout": "attention_dropout",
               "tie_embeddings": "tie_word_embeddings", "activation": "hidden_act"}
_GPT2_KEYS = {"layers": "n_layer", "hidden": "n_embd", "heads": "n_head", "ffn_hidden": "n_inner",
              "vocab": "vocab_size", "seq_len": "n_positions", "dropout": "resid_pdrop",
              "tie_embeddings": "tie_word_embeddings", "activation": "activation_function"}
_REQUIRED = {"gated": ("num_hidden_layers", "hidden_size", "num_attention_heads",
                       "intermediate_size", "vocab_size", "max_position_embeddings"),
             "gpt2": ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions")}
_DEFAULTS = {"gated": {"tie_word_embeddings": False, "attention_dropout": 0.0},
             "gpt2": {"tie_word_embeddings": True, "resid_pdrop": 0.1,
                      "activation_function": "gelu_new"}}


def _name(path: Path) -> str:
    """The model's directory name for a file called config.json (Meta-Llama-3-8B/config.json),
    else the file's stem."""
    parent = path.resolve().parent.name
    return parent if path.name == "config.json" and parent else path.stem


def _activation(family: str, value, source: str, key: str) -> str:
    if family == "gpt2":
        if isinstance(value, str) and value.startswith("gelu"):
            return "gelu"      # gelu, gelu_new, gelu_fast, gelu_pytorch_tanh: one elementwise op
        raise ConfigError(source, key, "a GeLU variant (gelu, gelu_new, ...)", value)
    if value in ("silu", "swish"):
        return "swiglu"        # SiLU on the gate projection times the up projection
    raise ConfigError(source, key, f"silu (tpsim models the {family} MLP as SwiGLU)", value)


def _bias(family: str, cfg: dict, source: str) -> bool:
    if family == "gpt2":
        return True
    if family != "llama":
        return False
    flags = [cfg.get(k, False) for k in ("attention_bias", "mlp_bias")]
    for k, v in zip(("attention_bias", "mlp_bias"), flags):
        if not isinstance(v, bool):
            raise ConfigError(source, k, "true or false", v)
    return all(flags)


def hf_mapping(cfg: dict, source: str, name: str) -> tuple[dict, dict]:
    """The tpsim model mapping (named ``name``) of a parsed config.json, and tpsim key ->
    config.json key."""
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ConfigError(source, "model_type", f"one of {', '.join(FAMILIES)}", family)
    kind = "gpt2" if family == "gpt2" else "gated"
    keys = _GPT2_KEYS if kind == "gpt2" else _GATED_KEYS
    for k in _REQUIRED[kind]:
        if k not in cfg:
            raise ConfigError(source, k, f"this key (a {family} config.json has it)")
    values = {**_DEFAULTS[kind], **cfg}
    out = {ours: values[theirs] for ours, theirs in keys.items()
           if values.get(theirs) is not None}
    out["activation"] = _activation(family, out.get("activation"), source, keys["activation"])
    out["norm"] = "layernorm" if kind == "gpt2" else "rmsnorm"
    out["bias"] = _bias(family, cfg, source)
    out["name"] = name
    arch = cfg.get("architectures")
    what = arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else family
    out["description"] = f"{what[:80]} (Hugging Face config.json)"
    return out, keys


def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """A Hugging Face config.json read as tpsim's model mapping and tpsim key -> config.json
    key (:func:`tpsim.spec.model.load_model` builds the ModelConfig and names their key in
    errors)."""
    p = Path(path)
    cfg = load_json(p, "a readable Hugging Face config.json")
    if not isinstance(cfg, dict):
        raise ConfigError(str(p), "", "a JSON object (a config.json)", type(cfg).__name__)
    return hf_mapping(cfg, str(p), _name(p))
