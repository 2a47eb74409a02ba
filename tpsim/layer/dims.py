"""The sizes one op graph is made at: per-rank :class:`Dims` of a layer, from a model and a run.

A layer's structure is fixed by a few switches (:mod:`tpsim.layer.graph`); its ops are made for the
:class:`Dims` of a run: micro-batch, sequence, widths per tensor-parallel rank, dtypes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from ..cluster.topology import BYTES_PER_ELEMENT
from ..spec.model_params import layer_kinds
from ..spec.precision import LOW_PRECISION, quantizer


@dataclass(frozen=True)
class Dims:
    """Per-rank sizes of one layer (widths already divided by tp), and its dtypes.

    ``dtype`` is the activations' (between kernels, in the collectives and the attention core);
    ``linear_dtype`` the linear layers' GEMMs' when it differs (fp8 under Transformer Engine:
    ``gemm_dtype``). ``vocab`` is the padded vocabulary one rank holds.
    """
    b: int
    s: int
    h: int
    tp: int
    dtype: str
    heads: int      # query heads per rank
    kv_heads: int   # key/value heads per rank
    d: int          # head_dim
    f: int          # ffn_hidden / tp
    sp: bool
    vocab: int = 0
    linear_dtype: str = ""
    experts: int = 0    # routed experts on this rank (the MoE slot, :mod:`tpsim.layer.moe`)
    topk: int = 0       # routed experts per token
    fe: int = 0         # expert_ffn_hidden / tp
    fs: int = 0         # shared_experts x shared_expert_ffn_hidden / tp
    cp: int = 1         # context-parallel degree: s is the rank's seq_len / cp tokens
    r_q: int = 0        # multi-head latent attention (:mod:`tpsim.layer.mla`): query rank
    r_kv: int = 0       # key/value rank
    dn: int = 0         # query/key width per head without rotary
    dr: int = 0         # rotary width per head
    dv: int = 0         # value width per head
    ep: int = 1         # expert-parallel degree: experts / ep of them on this rank
    etp: int = 0        # expert TP with the all-to-all dispatcher (tpsim.layer.moe_ep); 0: none
    load: float = 1.0   # tokens of the busiest expert over the mean, after any capacity drop
    window: int = 0     # sliding-window attention's keys (0: full causal attention) ...
    windowed: float = 1.0   # ... on this share of the layers the simulated one stands for
    grad_adds: float = 1.0  # share of micro-batches adding their weight gradients into the
    #                         step's earlier ones' (m - 1)/m, where the adds are kernels apart
    main_grad_add: bool = False  # the adds go into the fp32 main gradient (Megatron-core's DDP)
    fill: bool = False  # PyTorch's deterministic NaN fill of new outputs (tpsim.sim.fill)
    fp8_recipe: str = "delayed"     # fp8's scaling (tpsim.spec.precision.FP8_RECIPES)
    layer_scaling: bool = False  # Megatron's query-key layer scaling: the unfused core's softmax,
    #                              where it falls back to PyTorch, in fp32 (tpsim.layer.unfused)

    @property
    def bpe(self) -> int:
        """Bytes per element of ``dtype``."""
        return BYTES_PER_ELEMENT[self.dtype]

    @property
    def gemm_dtype(self) -> str:
        """The dtype the linear layers' GEMMs run in."""
        return self.linear_dtype or self.dtype

    @property
    def quantizer(self) -> str:
        """The linears' quantizer (:func:`tpsim.spec.precision.quantizer`; "" for 16-bit)."""
        return quantizer(self.linear_dtype, self.fp8_recipe)

    @property
    def gemm_bpe(self) -> int:
        """Bytes per element of ``gemm_dtype``: what a linear keeps of its input (under FP8,
        Transformer Engine keeps the fp8 cast for the weight gradient, not the 16-bit input)."""
        return BYTES_PER_ELEMENT[self.gemm_dtype]

    @property
    def T(self) -> int:
        """Tokens of the micro-batch: b * s."""
        return self.b * self.s

    @property
    def Tn(self) -> int:
        """Tokens a norm, dropout or residual sees: b*s, or b*s/tp with sequence parallelism."""
        return self.T // self.tp if self.sp else self.T

    @property
    def q(self) -> int:
        return self.heads * self.d

    @property
    def kv(self) -> int:
        return self.kv_heads * self.d


def sp_reduce_op(sp: bool) -> str:
    """The collective that sums partial activations or gradients over the TP group: all-reduce,
    or reduce-scatter along the sequence with sequence parallelism. It follows every
    row-parallel linear forward and precedes every column-parallel linear backward."""
    return "reduce-scatter" if sp else "all-reduce"


FP8_ACTIVATIONS = "bf16"   # Transformer Engine's FP8 training keeps activations in bf16


def layer_dims(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
               sequence_parallel: bool = False, training: bool = False, cp: int = 1,
               serving: bool = False) -> Dims:
    """Per-rank sizes, after checking that every sharded dimension divides by ``tp``; ``dtype``
    fp8 (mxfp8, nvfp4) means linear GEMMs in that dtype with bf16 activations; ``training``,
    ``serving``: the training step's or serving's pricing
    (:meth:`~tpsim.spec.model.ModelConfig.check_priced`); ``cp``: context parallelism, each rank
    holding seq_len / cp tokens of every sequence (:mod:`tpsim.layer.context_parallel`)."""
    seq_len //= cp
    model.check_tp(tp, seq_len, sequence_parallel, training, serving)
    linear = ""
    if dtype in LOW_PRECISION:
        dtype, linear = FP8_ACTIVATIONS, dtype
    return Dims(b=micro_batch, s=seq_len, h=model.hidden, tp=tp, dtype=dtype, linear_dtype=linear,
                heads=model.heads // tp, kv_heads=model.kv_heads_per_rank(tp), d=model.head_dim,
                f=model.ffn_hidden // tp, sp=sequence_parallel, vocab=model.padded_vocab(tp) // tp,
                cp=cp, **mla_widths(model))


def recipe_field(dims: Dims, fp8_recipe: str) -> dict:
    """The Dims field of fp8's scaling recipe: none at the default (delayed) or without fp8."""
    return {"fp8_recipe": fp8_recipe} if dims.linear_dtype == "fp8" and \
        fp8_recipe != Dims.fp8_recipe else {}


def run_fields(dims: Dims, adds: tuple[float, bool], layer_scaling: bool,
               fp8_recipe: str, fill: bool = False) -> dict:
    """The Dims fields a training run's layout sets away from their defaults: ``adds``
    (``grad_adds``, ``main_grad_add``), ``layer_scaling``, fp8's recipe
    (:func:`recipe_field`) and ``fill``."""
    grad_adds, main = adds
    return ({"grad_adds": grad_adds} if grad_adds != 1 else {}) | \
        ({"main_grad_add": True} if main else {}) | ({"fill": True} if fill else {}) | \
        ({"layer_scaling": True} if layer_scaling else {}) | recipe_field(dims, fp8_recipe)


def mla_widths(model) -> dict:
    """The Dims fields of multi-head latent attention (none without it)."""
    if not model.mla:
        return {}
    return dict(r_q=model.q_lora_rank or 0, r_kv=model.kv_lora_rank, dn=model.qk_nope_head_dim,
                dr=model.qk_rope_head_dim, dv=model.v_head_dim)


def window_fields(model, moe: bool, attention: str, cp: int) -> dict:
    """The Dims fields of a training layer that stands for the model's dense (or MoE) layers:
    the ``sliding_window`` W and the share of those layers that use it
    (:func:`~tpsim.spec.model_params.layer_kinds`); none without a window. The flash kernel
    prices the band (:attr:`~tpsim.layer.ops.Attention.keys`); unfused attention and context
    parallelism beside a window are refused."""
    w = model.sliding_window or 0
    kinds = [(n, win) for n, sparse, win in layer_kinds(model) if sparse == moe]
    banded = sum(n for n, win in kinds if win)
    if not banded:
        return {}
    if attention == "unfused" or cp > 1:
        flag, got = ("--attention", attention) if attention == "unfused" else ("--cp", cp)
        raise ConfigError(flag, "", f"fused attention without context parallelism: "
                          f"{model.name}'s sliding-window attention ({w} keys) is priced so", got)
    return {"window": w, "windowed": banded / sum(n for n, _ in kinds)}
