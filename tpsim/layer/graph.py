"""One transformer layer on one tensor-parallel rank: its ops, forward and backward, as a graph.

Megatron-LM's split (Shoeybi et al. 2019): the QKV and MLP-in linears are column-parallel
(``Y = XA, A = [A_1 ... A_t]``, heads/tp and kv_heads/tp per rank), the attention output and
MLP-out linears row-parallel (``Y = sum_i X_i B_i``, then an all-reduce); the linears and their
collectives are :mod:`tpsim.layer.linears`. With sequence parallelism (Korthikanti et al. 2022)
norms, dropout and residuals work on seq/tp tokens, each forward all-reduce becomes a
reduce-scatter after the row-parallel GEMM plus an all-gather before the next column-parallel
one, and backward mirrors them; Megatron-core keeps only the local shard of a column-parallel
input and re-gathers it in the backward. The kernels are Megatron-core's: fused
bias-dropout-add, fused activations (one fc1 GEMM of width 2f for SwiGLU), fused or unfused
attention, bias gradients as reductions of their own.

Each op is written as a function of the per-rank sizes (:class:`Dims`) into a
:class:`~tpsim.layer.template.Builder`: :func:`layer_template` builds a layer's structure once per set
of switches, and the typed ops (:mod:`tpsim.layer.ops`: GEMMs 2mnk FLOPs, attention cores, memory-bound
kernels priced by their bytes, TP collectives of nccl-tests' size) are made for any sizes.
:func:`layer_graph` returns the ``networkx.DiGraph`` of one layer (one node per op, attribute
``op``; edges ``dep="data"``). The node order is Megatron's issue order: each stream runs its
ops in that order (:mod:`tpsim.sim.schedule`). Construction only: pricing is :mod:`tpsim.sim.price`.
"""
from __future__ import annotations

from dataclasses import replace

from ..base.memo import Memo
from .dims import Dims, layer_dims, recipe_field  # noqa: F401 - Dims, layer_dims re-exported
from . import eager, unfused
from .context_parallel import cp_attention_bwd, cp_attention_fwd, group_sizes
from .linears import (column_linear_fwd, column_parallel_bwd, input_saved, row_input_saved,
                      row_linear_fwd, row_parallel_bwd)
from .mla import mla_bwd, mla_fwd
from .qk_norm import qk_norm_bwd, qk_norm_fwd
from .moe_flex import slot, slot_groups
from .ops import Attention, act_arith
from .recompute import DEFAULT_MODULES, apply_recompute
from .rope import unfused_bwd as rope_bwd, unfused_fwd as rope_fwd
from .template import BARE_CALL, Builder, Template

BLOCKS = ("attention", "mlp")


# --------------------------------------------------------------------------- forward

def _norm_fwd(B: Builder, name: str, dep) -> str:
    """Layer/RMS norm on Tn tokens: read x, write y (fp32 statistics, 8 bytes a token, left
    out); keeps its input. Eager: :func:`tpsim.layer.eager.norm_fwd`."""
    saved = lambda d: d.Tn * d.h * d.bpe   # noqa: E731
    if B.eager:
        return eager.norm_fwd(B, name, dep, saved)
    return B.eltwise(name, lambda d: (d.Tn, d.h, 2 * d.Tn * d.h * d.bpe), (dep,), saved=saved)


def _bias_dropout_add_fwd(B: Builder, i: int, dep, skip, dropout: bool) -> str:
    """Megatron's fused bias-dropout-add (``bias_dropout_add_fused_train``): one kernel reads the
    block output and the residual and writes their sum, plus a 1-byte dropout mask it keeps
    (a layer with biased experts: the attention's bias added first, :func:`_bias_add_fwd`)."""
    if i == 1 and B.expert_bias and not B.eager:
        dep = _bias_add_fwd(B, dep, dropout)
    mask = 1 if dropout else 0
    return B.eltwise(f"fwd.bias_dropout_add{i}",
                     lambda d: (d.Tn, d.h, d.Tn * d.h * (3 * d.bpe + mask)), (dep, skip),
                     saved=(lambda d: d.Tn * d.h) if dropout else None)


def _bias_add_fwd(B: Builder, dep, dropout: bool) -> str:
    """The unfused bias-dropout-add's passes beyond the fused kernel's. Megatron-core's
    TEGroupedMLP refuses ``bias_dropout_fusion`` with ``add_bias_linear`` (core_v0.17.1
    ``transformer/moe/experts.py``; Megatron-Bridge's gpt-oss provider turns it off,
    ``models/gpt_oss/gpt_oss_bridge.py``), so the layer runs ``_bias_dropout_add_func``
    (``fusions/fused_bias_dropout.py``) eagerly: ``x + bias`` on the attention's output
    (``linear_proj`` returns its bias, ``skip_bias_add``), read and written, 2B per element of
    the T x h rows (B the activations' bytes); with dropout its own pass, 2B more (at p = 0
    ``dropout`` returns its input: no kernel); then ``residual + out``, the fused op's bytes.
    The MoE block returns no bias (TEGroupedMLP adds fc2's, :mod:`tpsim.layer.moe_bias`):
    its add is the fused op's. The backward is the fused one's (the bias's gradient:
    ``bwd.proj.bias_grad``). A bare torch call: a launch on the host. Left out: a biased MoE
    model's dense layers, also unfused in Megatron-core (one config)."""
    passes = 4 if dropout else 2
    return B.eltwise("fwd.bias_dropout_add1.bias",
                     lambda d: (d.Tn, d.h, passes * d.Tn * d.h * d.bpe), (dep,), **BARE_CALL)


def _attention(kernel: str | None, backward: bool, dropout: bool = False):
    """The fused attention op of a layer: causal self-attention over the micro-batch's s tokens
    (over the last ``window`` keys on the ``windowed`` share of the layers it stands for), with
    attention dropout inside the kernel when the model has dropout."""
    return lambda d: Attention(d.b, d.heads, d.kv_heads, d.s, d.s, d.d, d.dtype, True, backward,
                               kernel, d.window, d.windowed, dropout)


def _attention_core_fwd(B: Builder, qkv: str, kernel: str | None, dropout: bool) -> str:
    """Causal attention on heads/tp heads (QK^T, softmax, AV): one fused kernel (``kernel``:
    "fused" for the device's default, or a name of its attention_kernels), or "unfused":
    Megatron's separate batched GEMMs and softmax, which compute the masked half too, and their
    layout copies (:mod:`tpsim.layer.unfused`)."""
    if kernel == "unfused":
        return unfused.core_fwd(B, qkv, dropout)
    # read q, k, v; write o; keeps q, k, v
    return B.add("fwd.attn", _attention(_kernel_name(kernel), False, dropout), "compute", (qkv,),
                 saved=lambda d: d.T * (d.q + 2 * d.kv) * d.bpe)


def _proj_saved(kernel: str | None):
    """What the attention output costs to keep: the projection's input (in its GEMM's dtype,
    :func:`row_input_saved`), and a fused kernel keeps the 16-bit output for its own backward
    besides when the projection keeps an fp8 cast (the same tensor otherwise: counted once)."""
    own = row_input_saved(lambda d: d.q)
    if kernel == "unfused":
        return own
    return lambda d: own(d) + (d.T * d.q * d.bpe if d.linear_dtype else 0)


def _kernel_name(attention: str) -> str | None:
    """``fused`` runs the device's default attention kernel (None); other names pick one."""
    return None if attention == "fused" else attention


def _attention_fwd(B: Builder, x, bare: bool, kernel: str, dropout: bool,
                   cp: tuple = (1, "", 1), mla: int = 0) -> str:
    """``cp``: (degree, exchange, a2a ranks) of context parallelism
    (:mod:`tpsim.layer.context_parallel`); ``mla``: multi-head latent attention
    (:mod:`tpsim.layer.mla`; 2: queries compressed)."""
    B.block = "attention"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm1", x)
    if mla:
        x = mla_fwd(B, x, mla == 2, _kernel_name(kernel))
        return x if bare else _bias_dropout_add_fwd(B, 1, x, skip, dropout)
    x = column_linear_fwd(B, "qkv", x, lambda d: (d.T, d.q + 2 * d.kv, d.h), input_saved)
    x = qk_norm_fwd(B, x) if B.qk_norm else x
    x = eager.rope_fwd(B, x) if B.eager else rope_fwd(B, x) if B.rope else x
    x = cp_attention_fwd(B, x, _kernel_name(kernel), *cp) if cp[0] > 1 else \
        _attention_core_fwd(B, x, kernel, dropout)
    x = eager.contiguous(B, x) if B.eager and kernel != "unfused" else x
    x = row_linear_fwd(B, "proj", x, lambda d: (d.T, d.h, d.q), _proj_saved(kernel))
    return x if bare else _bias_dropout_add_fwd(B, 1, x, skip, dropout)


def _mlp_fwd(B: Builder, x, bare: bool, swiglu: bool, dropout: bool, moe: int = 0) -> str:
    """MLP: column-parallel fc1 (SwiGLU: gate and up in one GEMM of width 2f, as Megatron-core's
    linear_fc1), the fused activation, row-parallel fc2; ``moe``: the mixture-of-experts slot
    instead (:mod:`tpsim.layer.moe`; 2: with shared experts; an
    :class:`~tpsim.layer.moe_ep.Alltoall`: the all-to-all dispatcher; the others:
    :mod:`tpsim.layer.moe_flex`)."""
    B.block = "mlp"
    skip = x
    if not bare:
        x = _norm_fwd(B, "fwd.norm2", x)
    if moe:
        x = slot(B, x, swiglu, moe)
        return x if bare else _bias_dropout_add_fwd(B, 2, x, skip, dropout)
    n_in = 2 if swiglu else 1
    x = column_linear_fwd(B, "mlp_in", x, lambda d: (d.T, n_in * d.f, d.h), input_saved)
    # gelu: read 1, write 1, keeps its input; swiglu: read gate|up (2f), write f, keeps them
    saved = lambda d: n_in * d.T * d.f * d.bpe   # noqa: E731
    x = eager.swiglu_fwd(B, x, saved) if B.eager and swiglu else \
        B.eltwise("fwd.act", lambda d: (d.T, d.f, (n_in + 1) * d.T * d.f * d.bpe), (x,),
                  saved=saved, arith=act_arith(n_in))
    x = row_linear_fwd(B, "mlp_out", x, lambda d: (d.T, d.h, d.f), row_input_saved(lambda d: d.f))
    return x if bare else _bias_dropout_add_fwd(B, 2, x, skip, dropout)


# --------------------------------------------------------------------------- backward

def _norm_residual_bwd(B: Builder, i: int, grad, skip_grad) -> str:
    """Norm backward (read x and dy, write dx in one pass; the weight gradients' partial sums
    ride along), then the sum of the two gradients of the layer input (the residual branch and
    the norm's): read 2, write 1."""
    size = lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe)   # noqa: E731
    x = eager.norm_bwd(B, f"bwd.norm{i}", grad, f"fwd.norm{i}") if B.eager else \
        B.eltwise(f"bwd.norm{i}", size, (grad,), forward_of=f"fwd.norm{i}")
    return B.eltwise(f"bwd.residual{i}", size, (x, skip_grad),
                     forward_of=f"fwd.bias_dropout_add{i}")


def _bias_dropout_add_bwd(B: Builder, i: int, grad, dropout: bool) -> str:
    """The residual's gradient passes through; the block output's is g * mask / (1 - p): one
    kernel reading g and the mask, writing the result (none without dropout)."""
    if not dropout:
        return grad
    return B.eltwise(f"bwd.dropout{i}", lambda d: (d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1)),
                     (grad,), forward_of=f"fwd.bias_dropout_add{i}")


def _attention_core_bwd(B: Builder, grad, kernel: str, dropout: bool) -> tuple:
    """Backward of the attention core: twice the forward's model FLOPs (unfused:
    :func:`tpsim.layer.unfused.core_bwd`)."""
    if kernel == "unfused":
        return (unfused.core_bwd(B, grad, dropout),)
    # read q, k, v, o, do; write dq, dk, dv
    return (B.add("bwd.attn", _attention(_kernel_name(kernel), True, dropout), "compute", (grad,),
                  forward_of="fwd.attn"),)


def _attention_bwd(B: Builder, grad, bare: bool, kernel: str, dropout: bool, bias: bool,
                   cp: tuple = (1, "", 1), mla: int = 0) -> str:
    B.block = "attention"
    out_grad = grad
    if not bare:
        grad = _bias_dropout_add_bwd(B, 1, grad, dropout)
    if mla:
        x = mla_bwd(B, grad, mla == 2, _kernel_name(kernel))
        return x if bare else _norm_residual_bwd(B, 1, x, out_grad)
    dgrad, _ = row_parallel_bwd(B, "proj", lambda d: (d.T, d.h, d.q), grad, bias)
    core = cp_attention_bwd(B, dgrad, _kernel_name(kernel), *cp) if cp[0] > 1 else \
        _attention_core_bwd(B, dgrad, kernel, dropout)
    core = (eager.rope_bwd(B, core),) if B.eager else (rope_bwd(B, core),) if B.rope \
        else core
    core = qk_norm_bwd(B, core) if B.qk_norm else core
    x, _ = column_parallel_bwd(B, "qkv", lambda d: (d.T, d.q + 2 * d.kv, d.h), core, bias)
    return x if bare else _norm_residual_bwd(B, 1, x, out_grad)


def _mlp_bwd(B: Builder, grad, bare: bool, swiglu: bool, dropout: bool, bias: bool,
             moe: int = 0) -> str:
    B.block = "mlp"
    out_grad = grad
    if not bare:
        grad = _bias_dropout_add_bwd(B, 2, grad, dropout)
    if moe:
        x = slot(B, grad, swiglu, moe, backward=True)
        return x if bare else _norm_residual_bwd(B, 2, x, out_grad)
    dgrad, _ = row_parallel_bwd(B, "mlp_out", lambda d: (d.T, d.h, d.f), grad, bias)
    n_in = 2 if swiglu else 1   # swiglu: read dy, gate|up; write dgate|dup.  gelu: read dy, x; write dx
    x = eager.swiglu_bwd(B, dgrad) if B.eager and swiglu else \
        B.eltwise("bwd.act", lambda d: (d.T, d.f, (1 + 2 * n_in) * d.T * d.f * d.bpe),
                  (dgrad,), forward_of="fwd.act", arith=act_arith(n_in, True))
    x, _ = column_parallel_bwd(B, "mlp_in", lambda d: (d.T, n_in * d.f, d.h), (x,), bias)
    return x if bare else _norm_residual_bwd(B, 2, x, out_grad)


# --------------------------------------------------------------------------- public

# Built once per switch set and kept: other memos key on a template's identity.
_TEMPLATES = Memo("layer templates", 1024, lru=True)


def layer_template(tp_group: bool, sequence_parallel: bool = False,
                   blocks: tuple[str, ...] = BLOCKS, bare: bool = False, dropout: bool = True,
                   attention: str = "fused", swiglu: bool = False, recompute: str = "none",
                   bias: bool = False, fp8: str = "", tp_overlap: int = 0,
                   moe: int = 0, cp: int = 1, cp_comm: str = "p2p",
                   cp_a2a: int = 1, mla: int = 0, eager: bool = False,
                   modules: tuple[str, ...] | None = None, qk_norm: bool = False,
                   rope: bool = False, clamp: bool = False, mla_eager: bool = False,
                   backward: tuple[bool, bool] = (True, True), router=None) -> Template:
    """The structure of one layer for these switches, built once and kept.

    ``tp_group``: the TP group has more than one rank (else no collectives); ``blocks`` picks
    the attention and/or MLP sub-blocks; ``bare`` leaves out norms, dropout, residuals and
    biases (what a lone ParallelMLP / ParallelAttention runs); ``attention``: fused (the
    device's default flash kernel), a kernel name (flash2, flash3, triton) or unfused; ``bias``: the
    linears have biases (their gradients are reductions of their own); ``fp8``: the linears'
    GEMMs run quantized with Transformer Engine's casts by this quantizer (the dims'
    ``quantizer``, :func:`tpsim.spec.precision.quantizer`; "": 16-bit GEMMs);
    ``tp_overlap``: the TP degree when Transformer Engine's TP communication overlap is on
    (with SP: the all-gathers interleaved with the GEMMs, the reduce-scatters pipelined;
    :mod:`tpsim.layer.linears`), else 0. Backward starts after the forward's last op: the
    output gradient exists only once the output does. ``recompute`` (none|selective|full) adds
    the recomputed ``rcp.`` ops to the backward (:mod:`tpsim.layer.recompute`; ``modules``:
    what selective re-runs, None: core_attn, :mod:`tpsim.layer.recompute_modules`). ``moe``: the
    MLP is the mixture-of-experts slot (1; 2 with shared experts), no TP overlap; with ``bias``
    its experts have biases too (:mod:`tpsim.layer.moe_bias`).
    ``cp`` > 1: the attention core split over that many context-parallel ranks by ``cp_comm``
    (:mod:`tpsim.layer.context_parallel`; ``cp_a2a``: a2a+p2p's all-to-all ranks).
    ``mla``: multi-head latent attention (:mod:`tpsim.layer.mla`; 2: queries compressed too),
    fused attention, no biases, no TP overlap, no context parallelism. ``eager``: PyTorch
    eager's elementwise kernels (:mod:`tpsim.layer.eager`), as torchtitan without compile.
    ``backward``: (the TP all-reduce of the input gradient beside the wgrad GEMM, the wgrad
    GEMMs accumulating into the main gradient); (False, False) is Megatron-LM of 2021
    (:mod:`tpsim.layer.linears`).
    ``qk_norm``: an RMSNorm over each head's query and key (:mod:`tpsim.layer.qk_norm`).
    ``rope``: Megatron-core's unfused RoPE (YaRN's attention factor, :mod:`tpsim.layer.rope`);
    ``clamp``: the experts' GLU inputs clamped in eager PyTorch (:mod:`tpsim.layer.moe_clamp`);
    ``mla_eager``: MLA's rope and q/k concatenations in eager PyTorch (:mod:`tpsim.layer.mla_eager`).
    ``router``: the MoE router's own dtype (:func:`tpsim.layer.router_dtype.router_switch`).
    """
    if not blocks or any(b not in BLOCKS for b in blocks):
        raise ValueError(f"blocks must be a non-empty subset of {BLOCKS}, not {blocks!r}")
    drop, bias = dropout and not bare, bias and not bare
    if moe and tp_overlap:
        raise ValueError("the mixture-of-experts slot has no TP overlap")
    if mla and (bias or tp_overlap or attention == "unfused" or cp > 1):
        raise ValueError("multi-head latent attention runs fused, without biases, TP overlap or "
                         "context parallelism")
    key = (tp_group, sequence_parallel, tuple(blocks), bare, drop, attention, swiglu, recompute,
           bias, fp8, tp_overlap, moe) + (((cp, cp_comm, cp_a2a),) if cp > 1 or mla else ()) + \
        ((mla,) if mla else ())
    modules = modules if recompute == "selective" and modules != DEFAULT_MODULES else None
    rope = rope and not eager and not bare and not mla and "attention" in blocks
    clamp = clamp and bool(moe) and "mlp" in blocks
    flags = (qk_norm, rope, clamp, mla_eager and bool(mla), router if moe else None)
    extra = (("eager",) if eager else ()) + ((modules,) if modules else ()) + \
        tuple(n for n, on in zip(("qk_norm", "rope", "clamp", "mla_eager"), flags) if on) + \
        ((backward,) if backward != (True, True) else ()) + ((flags[4],) if flags[4] else ())
    return _TEMPLATES.get(key + extra, _build, key, eager, modules, flags, backward)


def _build(key: tuple, eager: bool, modules: tuple[str, ...] | None, flags: tuple,
           backward) -> Template:
    qk_norm, rope, clamp, mla_eager, router = flags
    return _layer_template(*key, eager=eager, modules=modules, qk_norm=qk_norm, rope=rope,
                           clamp=clamp, mla_eager=mla_eager, backward=backward, router=router)


def _layer_template(tp_group, sequence_parallel, blocks, bare, drop, attention, swiglu,
                    recompute, bias, fp8, tp_overlap, moe, cp=(1, "", 1), mla=0,
                    eager=False, modules=None, qk_norm=False, rope=False, clamp=False,
                    mla_eager=False, backward=(True, True), router=None) -> Template:
    B = Builder(sequence_parallel, fp8, tp_overlap)
    B.eager, B.expert_bias, B.qk_norm = eager, bool(moe and bias), qk_norm
    B.rope, B.clamp, B.mla_eager = rope, clamp, mla_eager
    B.async_dgrad, B.grad_fusion = backward
    B.load_balancing = getattr(moe, "load_balancing", "none")
    B.permute_fusion = getattr(moe, "permute_fusion", True)
    B.permute_into = getattr(moe, "permute_into", False)
    B.router_fusion = getattr(moe, "router_fusion", True)
    B.router_dtype = router
    x = None
    if "attention" in blocks:
        x = _attention_fwd(B, x, bare, attention, drop, cp, mla)
    if "mlp" in blocks:
        x = _mlp_fwd(B, x, bare, swiglu, drop, moe)
    B.phase = "backward"
    if "mlp" in blocks:
        x = _mlp_bwd(B, x, bare, swiglu, drop, bias, moe)
    if "attention" in blocks:
        x = _attention_bwd(B, x, bare, attention, drop, bias, cp, mla)
    apply_recompute(B, recompute, modules or DEFAULT_MODULES)
    groups = {"tp": 2 if tp_group else 1, **group_sizes(cp[0], cp[2]), **slot_groups(moe)}
    return B.compile(groups, blocks=blocks, bare=bare, attention=attention, recompute=recompute,
                     **({"moe": moe} if moe else {}),
                     **({"cp": cp[0], "cp_comm": cp[1], "cp_a2a": cp[2]} if cp[0] > 1 else {}))


def layer_graph(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
                sequence_parallel: bool = False, blocks: tuple[str, ...] = BLOCKS,
                bare: bool = False, dropout: float | None = None,
                attention: str | None = None, recompute: str = "none", cp: int = 1,
                cp_comm: str = "p2p", cp_a2a: int = 1, fp8_recipe: str = "delayed"):
    """One layer on one TP rank, forward then backward, as a ``networkx.DiGraph`` of unpriced ops
    (see :func:`layer_template`). ``dropout`` and ``attention`` override the model's; ``cp``:
    the rank's seq_len / cp tokens of a context-parallel layer; ``fp8_recipe``: fp8's scaling
    (:func:`tpsim.spec.precision.quantizer`)."""
    dims = layer_dims(model, tp, micro_batch, seq_len, dtype, sequence_parallel, cp=cp)
    dims = replace(dims, **recipe_field(dims, fp8_recipe))
    p = model.dropout if dropout is None else dropout
    tpl = layer_template(tp > 1, sequence_parallel, blocks, bare, p > 0,
                         attention or model.attention, model.activation == "swiglu", recompute,
                         model.bias, fp8=dims.quantizer, cp=cp, cp_comm=cp_comm,
                         cp_a2a=cp_a2a)
    return tpl.digraph(dims, tp=tp, dropout=p if p > 0 and not bare else 0.0)


def collectives_in(graph) -> list[tuple[str, str, int]]:
    """(phase, op, nbytes) of every collective, in issue order; nbytes as nccl-tests counts it."""
    return [(a["phase"], a["op"].op, int(a["op"].nbytes))
            for _, a in graph.nodes(data=True) if a["kind"] == "collective"]
