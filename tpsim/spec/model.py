"""A transformer model as data: one frozen :class:`ModelConfig`, loaded from YAML and validated once.

Presets live in ``tpsim/spec/models/*.yaml`` (inside the package, so a wheel carries them); every
number there cites its source. ``--model`` takes a preset name or a path to a YAML file with the
same keys. Command-line overrides go through :func:`with_overrides`, which checks them as the
loader checks a file.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..base.record import record
from ..base.errors import ConfigError, TpsimError
from .hf_config import read_hf_config
from .tp_split import check_tp
from .model_params import mla_duplicated_params, mla_params, model_params, moe_layer_params
from ..base.memo import Memo, value_hash
from ..base.schema import (MAX_INT, check_built, deferred, from_mapping, load_yaml, shipped_files,
                           shipped_or_path, spec)

ACTIVATIONS = ("gelu", "swiglu")
NORMS, ATTENTIONS = ("layernorm", "rmsnorm"), ("fused", "unfused")
ROUTERS, LOAD_BALANCING = ("softmax", "sigmoid"), ("none", "aux_loss", "seq_aux_loss")
ATTENTION_KERNELS = ("flash2", "flash3", "triton")   # fused kernels a run may name (a device lists its own)
OVERRIDABLE = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn_hidden", "vocab",
               "seq_len", "activation", "norm", "dropout", "attention")


@record
class ModelConfig:
    """One decoder-only transformer. ``kv_heads``, ``head_dim``, ``ffn_hidden`` are resolved at init.

    Attention projects ``hidden`` to ``heads * head_dim`` queries and ``kv_heads * head_dim``
    keys and values each (grouped-query attention when kv_heads < heads); the MLP maps
    ``hidden -> ffn_hidden -> hidden`` (SwiGLU: gate and up projections, 2 * ffn_hidden wide).
    With ``experts`` > 0 the MLP of each MoE layer is a router and ``experts`` such MLPs of
    ``expert_ffn_hidden``, ``experts_per_token`` of them per token, plus ``shared_experts``
    every token uses; with ``kv_lora_rank`` attention is multi-head latent attention.
    Learned position embeddings are not modelled (under 0.1% of the parameters of every preset).
    """
    name: str = spec(doc="short name, used by --model")
    layers: int = spec(gt=0, doc="transformer layers")
    hidden: int = spec(gt=0, doc="model (residual stream) width")
    heads: int = spec(gt=0, doc="attention (query) heads")
    vocab: int = spec(gt=0, doc="vocabulary size (before Megatron's padding)")
    seq_len: int = spec(gt=0, doc="training sequence length, tokens")
    kv_heads: int | None = spec(gt=0, default=None, doc="key/value heads (GQA); default: heads")
    head_dim: int | None = spec(gt=0, default=None,
                                doc="width of one head (Megatron's kv_channels); default hidden/heads")
    ffn_hidden: int | None = spec(gt=0, default=None, doc="MLP inner width; default 4 * hidden")
    activation: str = spec(default="gelu", doc="gelu or swiglu")
    norm: str = spec(default="layernorm", doc="layernorm or rmsnorm")
    dropout: float = spec(ge=0, default=0.0, doc="dropout probability; 0 = no dropout ops")
    attention: str = spec(default="fused", doc="fused (flash attention) or unfused (Megatron's "
                                               "QK^T, softmax, dropout, AV as separate kernels)")
    tie_embeddings: bool = spec(default=False, doc="the output layer reuses the token embedding")
    bias: bool = spec(default=False, doc="the linear layers have biases (GPT-2/3: true; Llama: false)")
    qk_norm: bool = spec(default=False, doc="an RMSNorm on each head's query and key (Qwen3)")
    experts: int = spec(ge=0, default=0, doc="routed experts per MoE layer; 0: a dense model")
    experts_per_token: int = spec(ge=0, default=0, doc="routed experts each token goes to (top-k)")
    expert_ffn_hidden: int | None = spec(gt=0, default=None, doc="inner width of one expert "
                                         "(moe_intermediate_size); default ffn_hidden")
    shared_experts: int = spec(ge=0, default=0, doc="experts every token goes to, per MoE layer")
    shared_expert_ffn_hidden: int | None = spec(gt=0, default=None,
                                                doc="inner width of one shared expert; default "
                                                    "expert_ffn_hidden")
    first_dense_layers: int = spec(ge=0, default=0, doc="leading layers with a dense MLP "
                                                        "(DeepSeek's first_k_dense_replace)")
    moe_layer_freq: int = spec(gt=0, default=1, doc="after those, every n-th layer (i % n == 0) "
                                                    "carries experts, the others a dense MLP")
    router: str = spec(default="softmax", doc="router scoring: softmax or sigmoid (DeepSeek-V3)")
    load_balancing: str = spec(default="none", doc="router's auxiliary loss, none, aux_loss or "
                               "seq_aux_loss (Megatron's moe_router_load_balancing_type; layer.moe_host)")
    q_lora_rank: int | None = spec(gt=0, default=None, doc="MLA: query compression rank")
    kv_lora_rank: int | None = spec(gt=0, default=None,
                                    doc="multi-head latent attention: key/value compression "
                                        "rank; set = MLA (parameters counted, not priced yet)")
    qk_rope_head_dim: int | None = spec(gt=0, default=None, doc="MLA: rotary width per head")
    qk_nope_head_dim: int | None = spec(gt=0, default=None,
                                        doc="MLA: query/key width per head without rotary")
    v_head_dim: int | None = spec(gt=0, default=None, doc="MLA: value width per head")
    sliding_window: int | None = spec(gt=0, default=None, doc="sliding-window attention: the "
                                      "keys a query sees (serving prices it; gpt-oss: 128)")
    sliding_window_freq: int = spec(gt=0, default=1, doc="layers i % n == 0 use the window")
    mtp_layers: int = spec(ge=0, default=0, doc="multi-token-prediction modules (DeepSeek-V3: 1), "
                           "not in params(); trained by default (--mtp-layers, training.mtp)")
    activation_clamp: float | None = spec(gt=0, default=None, doc="the experts' GLU inputs clamped "
                                          "to this (gpt-oss: 7; Megatron-core eager, layer.moe_clamp)")
    rope_attention_factor: float = spec(gt=0, default=1.0, doc="YaRN's factor on RoPE's cos and "
                                        "sin (gpt-oss: 1.347); not 1: RoPE unfused (layer.rope)")
    description: str = spec(default="-", doc="one line shown by `tpsim models`")

    __hash__ = value_hash      # by value, computed once: models key every memo of a search

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.head_dim is None and self.hidden % self.heads == 0:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)
        if self.ffn_hidden is None:
            object.__setattr__(self, "ffn_hidden", 4 * self.hidden)
        if self.expert_ffn_hidden is None and self.experts:
            object.__setattr__(self, "expert_ffn_hidden", self.ffn_hidden)
        if self.shared_expert_ffn_hidden is None and self.shared_experts:
            object.__setattr__(self, "shared_expert_ffn_hidden", self.expert_ffn_hidden)
        check_built(self)        # built in code: checked as the loader checks a file

    def validate(self, source: str, path: str = "") -> None:
        def bad(key, expected, got):
            raise ConfigError(source, f"{path}.{key}" if path else key, expected, got)
        if self.activation not in ACTIVATIONS:
            bad("activation", f"one of {', '.join(ACTIVATIONS)}", self.activation)
        if self.norm not in NORMS:
            bad("norm", f"one of {', '.join(NORMS)}", self.norm)
        if self.attention not in ATTENTIONS:
            bad("attention", f"one of {', '.join(ATTENTIONS)}", self.attention)
        if not self.dropout < 1:
            bad("dropout", "a probability in [0, 1)", self.dropout)
        if self.head_dim is None:
            bad("heads", f"a divisor of hidden ({self.hidden}), or an explicit head_dim", self.heads)
        if self.heads % self.kv_heads:
            bad("kv_heads", f"a divisor of heads ({self.heads})", self.kv_heads)
        self._validate_moe(bad)

    def _validate_moe(self, bad) -> None:
        for key, allowed in (("router", ROUTERS), ("load_balancing", LOAD_BALANCING)):
            if getattr(self, key) not in allowed:
                bad(key, f"one of {', '.join(allowed)}", getattr(self, key))
        if not self.experts and (self.experts_per_token or self.shared_experts):
            bad("experts", "a positive count with experts_per_token or shared_experts", 0)
        if self.experts and not 1 <= self.experts_per_token <= self.experts:
            bad("experts_per_token", f"1 to experts ({self.experts})", self.experts_per_token)
        if self.experts and self.first_dense_layers >= self.layers:
            bad("first_dense_layers", f"fewer than layers ({self.layers})",
                self.first_dense_layers)
        mla = ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
        for key in mla if self.kv_lora_rank is not None else ():
            if getattr(self, key) is None:
                bad(key, "a positive width (kv_lora_rank is set: multi-head latent attention)",
                    None)

    @property
    def moe(self) -> bool:
        """The model has routed experts (a mixture of experts)."""
        return self.experts > 0

    mla = property(lambda self: self.kv_lora_rank is not None, doc="kv_lora_rank set: MLA attention.")

    def check_priced(self, training: bool = False, serving: bool = False) -> None:
        """Raise TpsimError when the model has layers tpsim cannot price yet: one line saying
        what, never a dense price in their place. ``training`` (``tpsim predict`` and
        ``search``) and ``serving`` (``tpsim infer``, ``serve``,
        ``serve-search``) price mixture-of-experts layers and multi-head latent attention;
        a check asking for neither prices neither."""
        if self.mla and not (serving or training):
            raise TpsimError(f"{self.name}: multi-head latent attention is not priced yet "
                             f"outside training and serving (kv_lora_rank {self.kv_lora_rank});"
                             " tpsim predict, search, infer, serve and serve-search price it")
        if self.moe and not (serving or training):
            shared = f" + {self.shared_experts} shared" if self.shared_experts else ""
            raise TpsimError(f"{self.name}: mixture-of-experts layers ({self.experts} routed "
                             f"experts{shared}, top-{self.experts_per_token}) are not priced "
                             "outside training and serving (tpsim predict, search, infer, serve "
                             "and serve-search price them); tpsim will not price this model as "
                             "a dense one")

    def kv_heads_per_rank(self, tp: int) -> int:
        """kv_heads / tp, or one (replicated, as Megatron does) when tp exceeds kv_heads."""
        return max(1, self.kv_heads // tp)

    # ---- derived sizes (full model, before tensor parallelism)
    @property
    def q_width(self) -> int:
        """Width of the attention's query (and output) projection: heads * head_dim."""
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of each of the key and value projections: kv_heads * head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def mlp_in_gemms(self) -> int:
        """Input GEMMs of the MLP: 1 for GeLU, 2 (gate and up) for SwiGLU."""
        return 2 if self.activation == "swiglu" else 1

    @property
    def norm_params(self) -> int:
        """Parameters of one norm: weight and bias (LayerNorm) or weight only (RMSNorm)."""
        return 2 * self.hidden if self.norm == "layernorm" else self.hidden

    def layer_params(self, tp: int = 1) -> int:
        """Parameters of one layer with a dense MLP on one of ``tp`` ranks (an MoE layer's:
        :func:`~tpsim.spec.model_params.moe_layer_params`):

            [2 q h + (n_in + 1) h f] / tp  +  2 kv_r d h  +  2 norms  (+ biases)

        the query, output and MLP weights split by tp; the key and value weights of
        kv_r = kv_heads_per_rank(tp) heads (replicated when tp > kv_heads); norms whole on every
        rank; biases: column-parallel ones split (q + 2 kv_r d, n_in f / tp), row-parallel ones
        whole (2 h). With multi-head latent attention, the attention's part is
        :func:`~tpsim.spec.model_params.mla_params` (biases: the MLP's only)."""
        h, f, n_in = self.hidden, self.ffn_hidden, self.mlp_in_gemms
        if self.mla:
            mlp_bias = (n_in * f // tp + h) if self.bias else 0
            return (mla_params(self, tp) + (n_in + 1) * h * f // tp + 2 * self.norm_params
                    + mlp_bias)
        kv = self.kv_heads_per_rank(tp) * self.head_dim
        split = 2 * self.q_width * h + (n_in + 1) * h * f
        params = split // tp + 2 * kv * h + 2 * self.norm_params
        if self.bias:
            params += (self.q_width + n_in * f) // tp + 2 * kv + 2 * h
        return params

    def vocab_params(self, vocab: int) -> int:
        """The token embedding and (unless tied) the output layer over ``vocab`` rows."""
        return vocab * self.hidden * (1 if self.tie_embeddings else 2)

    def params(self) -> int:
        """All parameters of the model (vocabulary as published, unpadded): layers (every
        expert counted), token embedding, output layer (unless tied), final norm
        (:mod:`tpsim.spec.model_params`)."""
        return model_params(self)

    def active_params(self, embedding: bool = True) -> int:
        """Parameters one token meets: :meth:`params` with only ``experts_per_token`` of each
        MoE layer's routed experts; the token embedding left out with ``embedding=False``
        (:mod:`tpsim.spec.model_params`). A dense model's are all of them."""
        return model_params(self, active=True, embedding=embedding)

    def params_per_rank(self, tp: int) -> int:
        """Parameters one of ``tp`` ranks holds: layers (linears / tp, norms whole), padded
        vocabulary / tp of the embedding and output layer, the final norm."""
        return self.stage_params(tp, self.layers)

    def embedding_params(self, tp: int) -> int:
        """The token embedding's rows on one of ``tp`` ranks: padded_vocab / tp x hidden."""
        return self.padded_vocab(tp) // tp * self.hidden

    def stage_params(self, tp: int, layers: int, first: bool = True, last: bool = True,
                     moe: int = 0) -> int:
        """Parameters one of ``tp`` ranks of a pipeline stage holds:

            (layers - moe) x layer_params(tp) + moe x moe_layer_params(tp)
              +  (first) embedding  +  (last) final norm + output layer

        ``moe``: how many of its layers carry experts. The output layer is the embedding's size
        (padded vocab / tp rows); with tied embeddings
        the first stage's embedding serves as the output layer when the first stage is also the
        last, and the last stage otherwise keeps a copy (Megatron all-reduces the two copies'
        gradients each step)."""
        n = (layers - moe) * self.layer_params(tp) + (self.embedding_params(tp) if first else 0)
        if moe:
            n += moe * moe_layer_params(self, tp)
        if last:
            n += self.output_params(tp, first)
        return n

    def output_params(self, tp: int, with_embedding: bool) -> int:
        """The final norm and the output layer on one of ``tp`` ranks of the last stage
        (:meth:`stage_params`): with tied embeddings, a stage that also holds the embedding
        (``with_embedding``, pp = 1) uses it as the output layer."""
        tied = self.tie_embeddings and with_embedding
        return self.norm_params + (0 if tied else self.embedding_params(tp))

    def sp_sync_params(self, layers: int, last: bool, moe: int = 0) -> int:
        """The gradients Megatron all-reduces over TP under sequence parallelism on a stage of
        ``layers`` layers: each layer's two norms and row-parallel biases (2 h; with multi-head
        latent attention also its duplicated down projections and their norms,
        :func:`~tpsim.spec.model_params.mla_duplicated_params`), each of its
        ``moe`` MoE layers' router (h E, replicated, fed the rank's own tokens: Megatron-core
        marks it ``sequence_parallel``), and on the ``last`` stage the final norm (replicated
        on every TP rank, their gradients partial)."""
        per_layer = 2 * self.norm_params + (2 * self.hidden if self.bias else 0)
        if self.mla:    # the duplicated down projections and their norms see the rank's tokens
            per_layer += mla_duplicated_params(self)
        return (layers * per_layer + moe * self.hidden * (self.experts or 0)
                + (self.norm_params if last else 0))

    def padded_vocab(self, tp: int) -> int:
        """Vocabulary padded as Megatron pads it: a multiple of 128 * tp (--make-vocab-size-divisible-by)."""
        unit = 128 * tp
        return math.ceil(self.vocab / unit) * unit

    def check_tp(self, tp: int, seq_len: int | None = None, sequence_parallel: bool = False,
                 training: bool = False, serving: bool = False) -> None:
        """Raise ConfigError unless every sharded dimension divides by ``tp`` (and TpsimError,
        first, for a model tpsim cannot price: :meth:`check_priced`, ``training`` and
        ``serving`` passed on): :func:`tpsim.spec.tp_split.check_tp`."""
        self.check_priced(training, serving)
        check_tp(self, tp, seq_len, sequence_parallel)


_HERE = Path(__file__).resolve().parent


def shipped_dir() -> Path:
    return _HERE / "models"


def shipped_models() -> dict[str, Path]:
    """Preset name -> YAML path, sorted by name."""
    return shipped_files(shipped_dir())


def list_models() -> list[ModelConfig]:
    """Every shipped preset, loaded."""
    return [load_model(p) for p in shipped_models().values()]


_FILES = Memo("model files", 64, lru=True)


def load_model(name_or_path: str | Path | ModelConfig) -> ModelConfig:
    """A shipped preset by name, any model YAML by path, or a Hugging Face config.json (or its
    directory; :mod:`tpsim.spec.hf_config`). A ModelConfig passes through. Each file is read
    once per version (:meth:`tpsim.base.memo.Memo.load`): the same frozen object after that."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    path = shipped_or_path(name_or_path, shipped_models(), "--model", "model",
                           "a path to a YAML file or a Hugging Face config.json")
    return _FILES.load(path, _read)


def _read(path: Path) -> ModelConfig:
    if path.suffix == ".json":
        return load_hf_config(path)
    return from_mapping(ModelConfig, load_yaml(path), str(path))


def hf_seq_key(name_or_path: str | Path | ModelConfig) -> str | None:
    """The config.json key a Hugging Face config's ``seq_len`` was read from
    (max_position_embeddings, n_positions: the context it was built for, which a run without
    ``--seq`` takes); None for a preset, a YAML file or a ModelConfig."""
    if isinstance(name_or_path, ModelConfig):
        return None
    path = shipped_or_path(name_or_path, shipped_models(), "--model", "model",
                           "a path to a YAML file or a Hugging Face config.json")
    return read_hf_config(path)[1].get("seq_len") if path.suffix == ".json" else None


def load_hf_config(path: str | Path) -> ModelConfig:
    """A Hugging Face config.json as a ModelConfig (:mod:`tpsim.spec.hf_config` reads it);
    errors name the config.json key, not tpsim's."""
    mapping, keys = read_hf_config(path)
    try:
        return from_mapping(ModelConfig, mapping, str(path))
    except ConfigError as e:
        theirs = keys.get(e.key.split(".")[0], e.key)
        raise ConfigError(str(path), theirs, e.expected, e.got) from None


def _check_override(key: str, value) -> None:
    flag = "--" + {"seq_len": "seq"}.get(key, key).replace("_", "-")
    if key in ("activation", "norm", "attention"):
        if not isinstance(value, str):
            raise ConfigError(flag, "", "a name", value)
    elif key == "dropout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(flag, "", "a probability in [0, 1)", value)
    elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
        raise ConfigError(flag, "", f"a positive integer (at most {MAX_INT})", value)


def with_overrides(model: ModelConfig, **overrides) -> ModelConfig:
    """``model`` with some fields replaced (None values are ignored), validated again.

    Dependent sizes follow when they were at their defaults: kv_heads follows heads for a
    multi-head model (kv_heads == heads), head_dim follows hidden/heads when it was
    hidden/heads, ffn_hidden follows hidden when it was 4 * hidden.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key not in OVERRIDABLE:
            raise ConfigError("override", key, f"one of {', '.join(OVERRIDABLE)}")
        _check_override(key, value)
    if not given:
        return model
    if "heads" in given and "kv_heads" not in given and model.kv_heads == model.heads:
        given["kv_heads"] = given["heads"]
    if ({"hidden", "heads"} & given.keys() and "head_dim" not in given
            and model.head_dim * model.heads == model.hidden):
        given["head_dim"] = None
    if "hidden" in given and "ffn_hidden" not in given and model.ffn_hidden == 4 * model.hidden:
        given["ffn_hidden"] = None
    shown = ", ".join(f"{k}={v}" for k, v in overrides.items() if v is not None)
    with deferred():         # checked below, naming the flags
        new = dataclasses.replace(model, name=f"{model.name} ({shown})", **given)
    new.validate(f"{model.name} with command-line overrides")
    return new
