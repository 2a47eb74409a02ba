"""Selective recomputation by module, as Megatron-core's ``--recompute-modules`` runs it
(``megatron/core/transformer/transformer_config.py`` ``recompute_modules``; the checkpoints in
``transformer_layer.py``, ``attention.py``, ``multi_latent_attention.py``, ``mlp.py``,
``moe/moe_layer.py``, ``moe/experts.py``).

Each module is a region of forward ops that the backward runs again (``rcp.`` copies, as
:mod:`tpsim.layer.recompute` makes them) and the saved tensors that disappear:

==============  ==================================================================  ==========
module          re-run in the backward                                              no longer saved
==============  ==================================================================  ==========
core_attn       the unfused attention core (:mod:`tpsim.layer.recompute`'s           its s^2 tensors
                ``selective``; fused attention saves no s^2 term: nothing)
mlp             a dense layer's norm and MLP (Transformer Engine's LayerNormMLP:     the MLP's
                the norm inside), its TP collectives included; the norm's input      inputs
                stays as the checkpoint
moe             the whole MoE slot (router, dispatch, experts, combine, shared       all but the
                experts) from the norm's output, the router's saved input            router's input
shared_experts  the shared experts (their all-gather and reduction included)        theirs
moe_act         the experts' activation (and fc2's fp8 cast): its output             fc2's input
                discarded, re-made before fc2's weight gradient
layernorm       the norms Megatron-core runs as their own module: the input norm    their outputs
                before MLA and the pre-MLP norm before an MoE slot; their outputs
                discarded (the linears keep no copy), re-made before the first
                weight gradient that reads them. The norms Transformer Engine fuses
                into the next linear (LayerNormLinear: dense attention's QKV, a
                dense MLP's fc1) are no module of their own (IdentityOp)
mla_up_proj     MLA's up projections: q and k/v discarded, re-made before the        q, k, v
                attention's backward
==============  ==================================================================  ==========

``core_attn``, ``mlp``, ``moe`` and ``shared_experts`` are Megatron's normal checkpoints (the
region re-runs once the gradient of its output exists); the others discard their output
(``CheckpointWithoutOutput``) and re-run it before its first reader. A layer applies the
modules it has: ``mlp`` a dense layer, ``moe``, ``moe_act`` and ``shared_experts`` a
mixture-of-experts one (``moe`` covers the other two). :func:`check_modules` refuses a module
the model has in none of its layers.
"""
from __future__ import annotations

from dataclasses import replace

from ..base.errors import ConfigError
from .moe_clamp import NAMES as CLAMP

SLOT_OPS = ("fwd.router", "fwd.moe.", "fwd.experts.", "fwd.shared.")   # the MoE slot's ops
SHARED_OPS = ("fwd.shared.fc1.cast", "fwd.shared.fc1", "fwd.shared.act", "fwd.shared.fc2.cast",
              "fwd.shared.fc2", "fwd.shared.all-gather",
              "fwd.shared.reduce-scatter", "fwd.shared.all-reduce")
MLA_UP = ("fwd.q_up", "fwd.kv_up")


def check_modules(model, modules: tuple[str, ...]) -> None:
    """A ConfigError naming --recompute-modules for a module ``model`` lacks in every layer
    (Megatron-core refuses mla_up_proj without MLA and moe_act without grouped experts)."""
    dense = model.layers - _moe_layers(model)
    lacks = {"moe_act": not model.moe, "moe": not model.moe,
             "shared_experts": not model.shared_experts, "mla_up_proj": not model.mla,
             "mlp": dense == 0, "layernorm": not (model.mla or model.moe)}
    why = {"moe_act": "experts", "moe": "experts", "shared_experts": "shared experts",
           "mla_up_proj": "multi-head latent attention", "mlp": "a dense MLP layer",
           "layernorm": "a norm of its own (MLA's input norm or an MoE layer's pre-MLP norm; "
                        "the others are fused into Transformer Engine's LayerNormLinear)"}
    for name in modules:
        if lacks[name]:
            raise ConfigError("--recompute-modules", "", f"modules {model.name} has ({name} "
                              f"needs {why[name]})", name)


def _moe_layers(model) -> int:
    from ..spec.model_params import moe_layers
    return moe_layers(model)


def apply_modules(B, modules: tuple[str, ...], recompute) -> None:
    """Rewrite builder ``B`` for each module of ``modules`` its layer has (module docstring);
    ``recompute(B, region, readers=...)`` copies a region
    (:func:`tpsim.layer.recompute.copy_region`)."""
    names = [n.name for n in B.nodes if n.phase == "forward"]
    slot = any(n.startswith(SLOT_OPS) for n in names)
    for module in modules:
        if module == "mlp" and not slot:
            region = [n.name for n in B.nodes if n.phase == "forward" and n.block == "mlp"
                      and not n.name.startswith("fwd.bias_dropout_add")]
            _checkpoint(B, region, keep=("fwd.norm2",), recompute=recompute)
        elif module == "moe" and slot:
            region = [n for n in names if n.startswith(SLOT_OPS)]
            _checkpoint(B, region, keep=("fwd.router",), recompute=recompute)
        elif module == "shared_experts" and slot and "moe" not in modules:
            _checkpoint(B, [n for n in names if n in SHARED_OPS], (), recompute)
        elif module == "moe_act" and slot and "moe" not in modules:
            region = [n for n in (*CLAMP, "fwd.experts.act", "fwd.experts.fc2.cast") if n in names]
            _discard(B, region, ("fwd.experts.fc2",), ("bwd.experts.fc2.wgrad",), recompute)
        elif module == "mla_up_proj" and "fwd.kv_up" in names:
            _discard(B, [n for n in MLA_UP if n in names], ("fwd.attn",), ("bwd.attn",),
                     recompute)
        elif module == "layernorm":
            _layernorms(B, names, slot, recompute)


def _layernorms(B, names: list[str], slot: bool, recompute) -> None:
    """The input norm before MLA (read by the down projections, or q_proj), the pre-MLP
    norm before an MoE slot (read by the router): outputs discarded, re-run."""
    if "fwd.kv_down" in names:
        readers = [n for n in ("fwd.kv_down", "fwd.q_proj") if n in names]
        _discard(B, ["fwd.norm1"], readers, [f"bwd.{r[4:]}.wgrad" for r in readers], recompute)
    if slot and "fwd.norm2" in names:
        _discard(B, ["fwd.norm2"], ("fwd.router",), _router_readers(B), recompute)


def _router_readers(B) -> tuple[str, ...]:
    """The backward ops that read the pre-MLP norm's output: the router's weight gradient, or
    its recomputed copy when the whole slot is recomputed."""
    have = {n.name for n in B.nodes}
    return tuple(n for n in ("rcp.router", "bwd.router.wgrad") if n in have)[:1]


def _checkpoint(B, region: list[str], keep: tuple[str, ...], recompute) -> None:
    """A normal checkpoint: the region's saved tensors dropped but those of ``keep`` (its
    input), the region re-run once the gradient reaches it."""
    if not region:
        return
    inside = set(region) - set(keep)
    B.nodes = [replace(n, saved=None) if n.name in inside else n for n in B.nodes]
    recompute(B, region)


def _discard(B, region: list[str], holders, readers, recompute) -> None:
    """An output-discarding checkpoint: what ``holders`` keep of the region's output is
    dropped, the region re-run before its first backward reader (``readers``, which then
    read the copies)."""
    if not region:
        return
    B.nodes = [replace(n, saved=None) if n.name in holders else n for n in B.nodes]
    have = {n.name for n in B.nodes}
    recompute(B, region, readers=tuple(r for r in readers if r in have))
