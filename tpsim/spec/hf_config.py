"""A Hugging Face ``config.json`` as a :class:`~tpsim.spec.model.ModelConfig`: ``--model path/config.json``
(or the directory that holds it).

Five dense families, by ``model_type``: ``llama``, ``mistral``, ``qwen2`` and ``qwen3`` (a gated MLP,
RMSNorm, grouped-query attention; qwen3 with its q_norm and k_norm) and ``gpt2`` (GeLU MLP, LayerNorm, biases everywhere); and five
mixture-of-experts families read as the gated ones plus their expert keys (table below). The keys read,
named as transformers' configuration classes name them, and their defaults where a published
config may leave them out (transformers' own defaults):

============== ========================================== ===================================
tpsim          llama / mistral / qwen2 / qwen3            gpt2
============== ========================================== ===================================
layers         num_hidden_layers                          n_layer
hidden         hidden_size                                n_embd
heads          num_attention_heads                        n_head
kv_heads       num_key_value_heads (default: heads)       = heads
head_dim       head_dim (default: hidden / heads)         hidden / heads
ffn_hidden     intermediate_size                          n_inner (null: 4 * n_embd)
vocab          vocab_size                                 vocab_size
seq_len        max_position_embeddings                    n_positions
activation     hidden_act (default silu) -> swiglu        activation_function gelu* -> gelu
norm           rmsnorm (the family's RMSNorm,             layernorm
               rms_norm_eps)
dropout        attention_dropout (default 0)              resid_pdrop (default 0.1)
tie_embeddings tie_word_embeddings (default false)        tie_word_embeddings (default true)
bias           llama: attention_bias and mlp_bias;        true
               mistral, qwen2, qwen3: false
============== ========================================== ===================================

``bias`` in tpsim means every linear layer has a bias. Qwen2 has biases on the q, k and v
projections only (not on the output projection or the MLP): it loads with ``bias: false``, the
closer of the two (the three missing bias vectors are ~3e-5 of a 7B layer's parameters and add
no GEMM). A Llama config with ``attention_bias`` but not ``mlp_bias`` loads the same way, as does
a Qwen3 one with ``attention_bias`` (false in Qwen3's published configs, which drop Qwen2's q, k,
v biases for a per-head RMSNorm on q and k).

Mixture-of-experts families (every key of the gated column, and):

================= ===================== ============================== ===========================
tpsim             mixtral, gpt_oss      qwen2_moe, qwen3_moe           deepseek_v3
================= ===================== ============================== ===========================
experts           num_local_experts     num_experts                    n_routed_experts
experts_per_token num_experts_per_tok   num_experts_per_tok            num_experts_per_tok
expert_ffn_hidden = intermediate_size   moe_intermediate_size          moe_intermediate_size
shared_experts    0                     1 if shared_expert_            n_shared_experts
                                        intermediate_size (qwen2_moe)
first_dense_layers 0                    0                              first_k_dense_replace
moe_layer_freq    1                     decoder_sparse_step (must be   moe_layer_freq
                                        1, no mlp_only_layers)
router            softmax               softmax                        scoring_func
qk_norm           false                 qwen3_moe: true (its q_norm    false
                                        and k_norm on each head)
MLA widths        -                     -                              q_lora_rank, kv_lora_rank,
                                                                       qk_rope_head_dim,
                                                                       qk_nope_head_dim,
                                                                       v_head_dim (= head_dim)
================= ===================== ============================== ===========================

gpt_oss has biases (``attention_bias``, default true; its experts and router too); its banded
attention (``sliding_window`` on the ``layer_types`` marked sliding_attention) and its experts'
clamp (``swiglu_limit``, ``activation_clamp``) are read, its attention sinks are not,
nor is DeepSeek's group-limited routing (``n_group``, ``topk_group``; its multi-token
prediction depth ``num_nextn_predict_layers`` is read, as ``mtp_layers``, and trained),
or Qwen2-MoE's shared-expert gate (h weights
a layer). These load; pricing them refuses until their expert layers are priced
(:meth:`~tpsim.spec.model.ModelConfig.check_priced`). A config of any family carrying an expert
or latent-attention key its family does not read (a Mixtral config relabelled ``llama``) is
refused, never priced as the dense model it is not.

``seq_len`` is the context the model was built for (max_position_embeddings, 131072 for
Llama 3.1): pass ``--seq`` for the length you train or serve at (without it, ``tpsim predict``
and ``search`` say on stderr which length they took and from which key). Not read: RoPE settings
but YaRN's attention factor (``rope_scaling``, :func:`_yarn`), Mistral's sliding window (tpsim prices full causal attention), ``torch_dtype`` (``--dtype``).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..base.errors import ConfigError
from ..base.schema import load_json

GATED = ("llama", "mistral", "qwen2", "qwen3")
MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v3")
FAMILIES = (*GATED, "gpt2", *MOE)

# tpsim key -> the config.json key it comes from, per family
_GATED_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size",
               "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
               "head_dim": "head_dim", "ffn_hidden": "intermediate_size", "vocab": "vocab_size",
               "seq_len": "max_position_embeddings", "dropout": "attention_dropout",
               "tie_embeddings": "tie_word_embeddings", "activation": "hidden_act"}
_GPT2_KEYS = {"layers": "n_layer", "hidden": "n_embd", "heads": "n_head", "ffn_hidden": "n_inner",
              "vocab": "vocab_size", "seq_len": "n_positions", "dropout": "resid_pdrop",
              "tie_embeddings": "tie_word_embeddings", "activation": "activation_function"}
_LOCAL = {"experts": "num_local_experts", "experts_per_token": "num_experts_per_tok"}
_QWEN = {"experts": "num_experts", "experts_per_token": "num_experts_per_tok",
         "expert_ffn_hidden": "moe_intermediate_size"}
_MLA = {"q_lora_rank": "q_lora_rank", "kv_lora_rank": "kv_lora_rank",
        "qk_rope_head_dim": "qk_rope_head_dim", "qk_nope_head_dim": "qk_nope_head_dim",
        "v_head_dim": "v_head_dim", "head_dim": "v_head_dim"}
_MOE_KEYS = {"mixtral": _LOCAL, "gpt_oss": _LOCAL, "qwen3_moe": _QWEN,
             "qwen2_moe": {**_QWEN, "shared_expert_ffn_hidden": "shared_expert_intermediate_size"},
             "deepseek_v3": {**_QWEN, "experts": "n_routed_experts",
                             "shared_experts": "n_shared_experts",
                             "first_dense_layers": "first_k_dense_replace",
                             "moe_layer_freq": "moe_layer_freq", "router": "scoring_func",
                             "mtp_layers": "num_nextn_predict_layers", **_MLA}}
_GATED_REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads",
                   "intermediate_size", "vocab_size", "max_position_embeddings")
_REQUIRED = {"gated": _GATED_REQUIRED,
             "gpt2": ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions"),
             **{f: (*_GATED_REQUIRED, *dict.fromkeys(k for t, k in keys.items() if t != "router"))
                for f, keys in _MOE_KEYS.items()}}
_DEFAULTS = {"gated": {"tie_word_embeddings": False, "attention_dropout": 0.0, "hidden_act": "silu"},
             "gpt2": {"tie_word_embeddings": True, "resid_pdrop": 0.1,
                      "activation_function": "gelu_new"}}
# keys that give a model experts or latent attention: a family that does not read one must
# not be handed it, or the model would be priced as the dense model it is not
_UNREAD_STRUCTURE = ("num_local_experts", "num_experts", "n_routed_experts",
                     "num_experts_per_tok", "moe_intermediate_size", "n_shared_experts",
                     "shared_expert_intermediate_size", "kv_lora_rank", "q_lora_rank")


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
    flags = {"llama": ("attention_bias", "mlp_bias"), "gpt_oss": ("attention_bias",)}
    if family not in flags:
        return False
    default = family == "gpt_oss"        # transformers' GptOssConfig: attention_bias=True
    values = [cfg.get(k, default) for k in flags[family]]
    for k, v in zip(flags[family], values):
        if not isinstance(v, bool):
            raise ConfigError(source, k, "true or false", v)
    return all(values)


def _check_structure(family: str, cfg: dict, source: str) -> None:
    """Refuse what this family's reading would drop and so misprice: expert or latent-attention
    keys a family does not read, a Qwen MoE model with dense layers between its MoE ones."""
    read = set(_MOE_KEYS.get(family, {}).values())
    for k in _UNREAD_STRUCTURE:
        if k not in read and cfg.get(k) not in (None, 0, False):
            raise ConfigError(source, k, f"no {k} in a {family} config.json (tpsim reads experts "
                              f"only from {', '.join(MOE)} configs and will not price this model "
                              "as a dense one)", cfg[k])
    if family in ("qwen2_moe", "qwen3_moe"):
        if cfg.get("decoder_sparse_step", 1) != 1:
            raise ConfigError(source, "decoder_sparse_step", "1 (tpsim places a Qwen MoE "
                              "model's experts on every layer)", cfg["decoder_sparse_step"])
        if cfg.get("mlp_only_layers"):
            raise ConfigError(source, "mlp_only_layers", "none (tpsim places a Qwen MoE "
                              "model's experts on every layer)", cfg["mlp_only_layers"])


def _moe(family: str, values: dict, out: dict) -> None:
    """The MoE fields of ``out`` from the family's keys: a Qwen2-MoE shared expert (its
    shared_expert_intermediate_size) counts as one, a softmax router unless the config says."""
    for ours, theirs in _MOE_KEYS[family].items():
        if values.get(theirs) is not None:
            out[ours] = values[theirs]
    if family == "qwen2_moe" and out.get("shared_expert_ffn_hidden"):
        out["shared_experts"] = 1
    out.setdefault("router", "softmax")


def _banded(cfg: dict, source: str, out: dict, keys: dict) -> None:
    """gpt-oss's ``sliding_window`` on the layers ``layer_types`` names sliding_attention,
    which must be every n-th layer from layer 0 (``sliding_window_freq`` n)."""
    types, window = cfg.get("layer_types"), cfg.get("sliding_window")
    if not window or not isinstance(types, list):
        return
    banded = [i for i, t in enumerate(types) if t == "sliding_attention"]
    freq = banded[1] - banded[0] if len(banded) > 1 else max(1, len(types))
    if banded != list(range(0, len(types), freq)):
        raise ConfigError(source, "layer_types", "sliding_attention on every n-th layer from "
                          "layer 0 (tpsim's sliding_window_freq)", types[:8])
    out["sliding_window"], out["sliding_window_freq"] = window, freq
    keys.update(sliding_window="sliding_window", sliding_window_freq="layer_types")


def _yarn(cfg: dict, source: str, out: dict, keys: dict) -> None:
    """YaRN's attention factor (``rope_attention_factor``) of a ``rope_scaling`` of rope_type
    yarn: its ``attention_factor``, else m(mscale) / m(mscale_all_dim) when both are given, else
    m(1), with m(s) = 0.1 s ln(factor) + 1 for factor > 1, else 1 (transformers'
    ``_compute_yarn_parameters``, Megatron-core's ``_yarn_get_concentration_factor``)."""
    rs = cfg.get("rope_scaling")
    if not isinstance(rs, dict) or rs.get("rope_type", rs.get("type")) != "yarn":
        return
    f = rs.get("factor", 1.0)
    if isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0:
        raise ConfigError(source, "rope_scaling.factor", "a positive number", f)
    m = lambda s: 0.1 * s * math.log(f) + 1.0 if f > 1 else 1.0   # noqa: E731
    ms, msa = rs.get("mscale"), rs.get("mscale_all_dim")
    out["rope_attention_factor"] = rs.get("attention_factor") or (
        m(ms) / m(msa) if ms and msa else m(1.0))
    keys["rope_attention_factor"] = "rope_scaling"


def hf_mapping(cfg: dict, source: str, name: str) -> tuple[dict, dict]:
    """The tpsim model mapping (named ``name``) of a parsed config.json, and tpsim key ->
    config.json key."""
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise ConfigError(source, "model_type", f"one of {', '.join(FAMILIES)}", family)
    kind = "gpt2" if family == "gpt2" else "gated"
    keys = _GPT2_KEYS if kind == "gpt2" else {**_GATED_KEYS, **_MOE_KEYS.get(family, {})}
    for k in _REQUIRED.get(family, _REQUIRED[kind]):
        if k not in cfg:
            raise ConfigError(source, k, f"this key (a {family} config.json has it)")
    _check_structure(family, cfg, source)
    values = {**_DEFAULTS[kind], **cfg}
    base = _GPT2_KEYS if kind == "gpt2" else _GATED_KEYS
    out = {ours: values[theirs] for ours, theirs in base.items() if values.get(theirs) is not None}
    if family in MOE:
        _moe(family, values, out)
    if family == "gpt_oss":
        _banded(cfg, source, out, keys)
        if cfg.get("swiglu_limit") is not None:     # the experts' clamp (layer.moe_clamp)
            out["activation_clamp"] = cfg["swiglu_limit"]
            keys["activation_clamp"] = "swiglu_limit"
    _yarn(cfg, source, out, keys)
    out["activation"] = _activation(family, out.get("activation"), source, keys["activation"])
    out["norm"] = "layernorm" if kind == "gpt2" else "rmsnorm"
    out["bias"] = _bias(family, cfg, source)
    out["qk_norm"] = family in ("qwen3", "qwen3_moe")   # Qwen3Attention's q_norm and k_norm
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
