"""The mixture-of-experts MLP slot of a layer, as Megatron-core's MoELayer runs it with every
expert local (expert parallelism 1) and the experts split over the TP group (expert TP = tp).

Megatron-core (``megatron/core/transformer/moe``: ``router.py``, ``token_dispatcher.py``
``MoEAllGatherTokenDispatcher``, ``experts.py`` ``GroupedMLP``, ``shared_experts.py``) requires
sequence parallelism with TP, so the slot's input is the norm's output on Tn = T/tp tokens:

forward::

    router      GEMM  Tn x E x h                       logits of every expert (its own tokens)
    top-k       memory-bound: read Tn E logits, write Tn E fp32 scores and Tn k probs + indices
    all-gather  the T x h tokens over TP (SP)           every rank serves every token
    permute     memory-bound: read and write R x h      each token copied once per chosen expert
    fc1         grouped GEMM, E_l groups of m_e x (n_in f_e / tp) x h (FP8: its R x h input
                cast first), one cuBLAS GEMM per expert over 4 streams (Transformer Engine)
    act         memory-bound, as the dense MLP's, on R x f_e / tp
    fc2         grouped GEMM, E_l groups of m_e x h x (f_e / tp) (FP8: R x f_e / tp cast)
    unpermute   memory-bound: read R x h and the probs, write T x h (weighted sum per token)
    shared      (S shared experts) column GEMM T x (n_in S f_s / tp) x h, act, row GEMM
                T x h x (S f_s / tp), their output added to the routed one (read 2, write 1)
    reduce-scatter  the T x h partial sums over TP (SP; all-reduce without SP)

with E_l = E local experts, k = top-k, m_e = ceil(T k / E) tokens per expert and R = m_e E_l
routed rows: a balanced router (the auxiliary load-balancing loss's aim; the worst expert sets
the pace of a real grouped GEMM, which this does not model). The routing map and probabilities
gathered beside the tokens (T x E bits and T x k floats) are left out; the router's auxiliary
loss is host work and a TP all-reduce (:mod:`tpsim.layer.moe_host`). Backward mirrors each op: the grouped GEMMs' dgrad (m_e x (f or h) per group)
and wgrad (accumulated into fp32 main gradients), permute and unpermute as memory-bound
scatter/gather, the router's dgrad and wgrad, the input gradient's reduce-scatter, and the sum
of the router's and the experts' input gradients. The experts' biases (gpt-oss):
:mod:`tpsim.layer.moe_bias`.

Saved for backward: the router's input (Tn h), its fp32 scores (Tn E 4), the permuted tokens
(R h, fc1's weight gradient), fc1's output and the R probabilities (act's backward: Megatron-core
scales the activation's output by them), fc2's input (R f_e/tp), the GEMMs' inputs in their
dtype (:func:`fc1_input_saved`); the unpermutation keeps nothing; the shared experts' inputs
are re-gathered in backward as Megatron-core does for any column-parallel linear under SP.
"""
from __future__ import annotations

import math

from ..base.errors import ConfigError
from ..spec.precision import LOW_PRECISION
from .dims import Dims, sp_reduce_op
from .linears import fp8_cast, gathered_input
from .moe_bias import bias_bwd, bias_fwd, bias_grad_accumulate
from .moe_host import aux_all_reduce, aux_bwd, aux_fwd_ops
from .moe_loops import local_experts, wgrad_loop_ops
from .moe_router import topk_bwd, topk_fwd
from .ops import act_arith
from .router_dtype import gating_bwd_casts, gating_fwd, router_gemm_dtype
from .template import Builder


def routed_per_expert(d: Dims) -> int:
    """m_e = ceil(T k / E): tokens each expert receives from a balanced router; with the
    all-to-all dispatcher (:mod:`tpsim.layer.moe_ep`) ceil(T_n k etp ep load / E), the tokens
    of the etp ep ranks whose experts it serves, at the busiest expert's load."""
    if d.etp:
        return max(1, math.ceil(d.Tn * d.topk * d.etp * d.ep * d.load / d.experts))
    return max(1, math.ceil(d.T * d.topk / d.experts))


def routed_rows(d: Dims) -> int:
    """R = m_e E_l: rows of the permuted tokens the local experts work on."""
    return routed_per_expert(d) * local_experts(d)


# What the experts keep for the backward, as Megatron-core's memory-efficient token
# permutation runs them (Megatron-LM !2668, April 2025: the router's probabilities multiply the
# activation's output, ``activation_func_with_probs``, and the unpermutation is a plain sum
# that keeps nothing); each grouped GEMM keeps its input in its GEMM's dtype, as a linear does
# (:func:`tpsim.layer.linears.row_input_saved`: under FP8 Transformer Engine's GroupedLinear
# keeps the fp8 cast).
def fc1_input_saved(d: Dims) -> float:
    """The permuted tokens R x h, in fc1's GEMM dtype."""
    return routed_rows(d) * d.h * d.gemm_bpe


def act_saved(n_in: int):
    """The activation's input (fc1's output, R x n_in f_e, 16-bit) and the R probabilities
    it scales its output by (fp32)."""
    return lambda d: routed_rows(d) * (n_in * d.fe * d.bpe + 4)


def fc2_input_saved(d: Dims) -> float:
    """The activation's output R x f_e, in fc2's GEMM dtype."""
    return routed_rows(d) * d.fe * d.gemm_bpe


# Transformer Engine's grouped GEMM (GroupedLinear, which Megatron-core's TEGroupedMLP runs)
# is a loop of one cuBLAS GEMM per expert over 4 compute streams
# (transformer_engine/common/gemm/cublaslt_gemm.cu nvte_multi_stream_cublas_gemm;
# common/util/multi_stream.cpp): :func:`tpsim.cost.compute.grouped_gemm_time`.
GROUPED_GEMM_STREAMS = 4


def grouped(B: Builder, name: str, size, deps, saved=None, forward_of=None) -> str:
    """A grouped GEMM of the local experts, ``size(d)`` -> (m, n, k) per expert: E_l GEMMs of
    equal size over :data:`GROUPED_GEMM_STREAMS` streams. Under FP8 its input is cast first
    (:func:`tpsim.layer.linears.fp8_cast`: Transformer Engine's GroupedLinear quantizes each
    expert's rows; the permuted tokens and Megatron-core's activation output are 16-bit).
    Each is one op the host dispatches that launches E_l kernels from C++ (one cuBLAS GEMM per
    expert; the quantize's by its quantizer, :func:`tpsim.spec.precision.quantize_launches`:
    ``launches``, :mod:`tpsim.sim.launches`)."""
    x = fp8_cast(B, f"{name}.cast", lambda d: (size(d)[0] * local_experts(d), size(d)[2]),
                 deps[0], splits=local_experts)
    x = B.gemm(name, lambda d: (*size(d), local_experts(d), False, 0, GROUPED_GEMM_STREAMS),
               (x, *deps[1:]), saved=saved, forward_of=forward_of, linear=True,
               launches=local_experts)
    return bias_fwd(B, name, x, routed_rows) if B.expert_bias and size is fc2_size else x


def grouped_bwd(B: Builder, name: str, size, grad) -> str:
    """dgrad (m x n) @ (n x k) and wgrad (k x m) @ (m x n), per expert, the weight gradients
    accumulated into fp32 (as :func:`tpsim.layer.linears.linear_backward`); returns dgrad.
    The cast, dgrad and wgrad each launch E_l kernels from C++ (as :func:`grouped`); after the
    wgrad, Transformer Engine's Python loops over the experts (:mod:`tpsim.layer.moe_loops`)."""
    fwd = f"fwd.{name}"
    if B.expert_bias and size is fc2_size:
        grad = bias_bwd(B, name, grad, routed_rows)
    grad = fp8_cast(B, f"bwd.{name}.cast", lambda d: (size(d)[0] * local_experts(d),
                                                      size(d)[1]), grad, splits=local_experts,
                    grad=True)
    dgrad = B.gemm(f"bwd.{name}.dgrad", lambda d: (size(d)[0], size(d)[2], size(d)[1],
                                                    local_experts(d), False, 0,
                                                    GROUPED_GEMM_STREAMS), (grad,),
                   forward_of=fwd, linear=True, launches=local_experts)
    wgrad = B.gemm(f"bwd.{name}.wgrad", lambda d: (size(d)[2], size(d)[1], size(d)[0],
                                                   local_experts(d), True, 0,
                                                   GROUPED_GEMM_STREAMS), (grad,),
                   forward_of=fwd, linear=True, launches=local_experts,
                   loop_ops=wgrad_loop_ops(B.expert_bias and size is not fc2_size))
    if B.expert_bias and size is not fc2_size:
        bias_grad_accumulate(B, lambda d: size(d)[1], wgrad)
    return dgrad


def fc1_size(n_in: int):
    return lambda d: (routed_per_expert(d), n_in * d.fe, d.h)


def fc2_size(d: Dims):
    return routed_per_expert(d), d.h, d.fe


def gathered_tokens(d: Dims):
    """The gathered T x h tokens, in the activations' dtype."""
    return d.T * d.h * d.bpe, (d.T, d.h), d.dtype


def router_fwd(B: Builder, x) -> tuple[str, str]:
    """The gating GEMM (in the router's dtype: :mod:`tpsim.layer.router_dtype`) and the fused
    top-k, with the auxiliary loss's host ops and TP all-reduce (:mod:`tpsim.layer.moe_host`);
    PyTorch's without ``B.router_fusion`` (:mod:`tpsim.layer.moe_router`)."""
    router = gating_fwd(B, x)
    topk = B.eltwise("fwd.router.topk", lambda d: (d.Tn, d.experts, d.Tn * d.experts * (d.bpe + 4)
                                                   + d.Tn * d.topk * 12), (router,),
                     saved=lambda d: d.Tn * d.experts * 4, host_ops=1 + aux_fwd_ops(B)) \
        if B.router_fusion else topk_fwd(B, router)
    aux_all_reduce(B, topk)
    return router, topk


def shared_fwd(B: Builder, tokens, n_in: int) -> str:
    """The shared experts' MLP on the (gathered) tokens; under FP8 each of its two linears
    (Transformer Engine's Linear, not fused with a norm or an activation) casts its 16-bit
    input first (:func:`tpsim.layer.linears.fp8_cast`)."""
    x = fp8_cast(B, "fwd.shared.fc1.cast", lambda d: (d.T, d.h), tokens)
    x = B.gemm("fwd.shared.fc1", lambda d: (d.T, n_in * d.fs, d.h), (x,), linear=True)
    x = B.eltwise("fwd.shared.act", lambda d: (d.T, d.fs, (n_in + 1) * d.T * d.fs * d.bpe), (x,),
                  saved=lambda d: n_in * d.T * d.fs * d.bpe)
    x = fp8_cast(B, "fwd.shared.fc2.cast", lambda d: (d.T, d.fs), x)
    return B.gemm("fwd.shared.fc2", lambda d: (d.T, d.h, d.fs), (x,),
                  saved=lambda d: d.T * d.fs * d.gemm_bpe, linear=True)


def moe_fwd(B: Builder, x, swiglu: bool, shared: bool) -> str:
    """The slot's forward from the norm's output ``x``; see the module docstring."""
    n_in = 2 if swiglu else 1
    _, topk = router_fwd(B, x)
    tokens = B.collective("fwd.moe.all-gather", "all-gather", (x,), size=gathered_tokens) if B.sp else x
    x = B.eltwise("fwd.moe.permute", lambda d: (routed_rows(d), d.h, 2 * routed_rows(d) * d.h
                                                * d.bpe), (tokens, topk), saved=fc1_input_saved)
    x = grouped(B, "fwd.experts.fc1", fc1_size(n_in), (x,))
    x = B.eltwise("fwd.experts.act", lambda d: (routed_rows(d), d.fe, (n_in + 1) * routed_rows(d)
                                                * d.fe * d.bpe), (x,), saved=act_saved(n_in),
                  arith=act_arith(n_in))
    x = grouped(B, "fwd.experts.fc2", fc2_size, (x,), saved=fc2_input_saved)
    x = B.eltwise("fwd.moe.unpermute", lambda d: (d.T, d.h, (routed_rows(d) + d.T) * d.h * d.bpe
                                                  + d.T * d.topk * 4), (x, topk))
    if shared:
        s = shared_fwd(B, tokens, n_in)
        x = B.eltwise("fwd.shared.add", lambda d: (d.T, d.h, 3 * d.T * d.h * d.bpe), (x, s))
    op = sp_reduce_op(B.sp)
    return B.collective(f"fwd.moe.{op}", op, (x,), size=gathered_tokens)


def _shared_bwd(B: Builder, grad, n_in: int) -> str:
    x = dense_bwd(B, "shared.fc2", lambda d: (d.T, d.h, d.fs), grad)
    x = B.eltwise("bwd.shared.act", lambda d: (d.T, d.fs, (1 + 2 * n_in) * d.T * d.fs * d.bpe),
                  (x,), forward_of="fwd.shared.act")
    inputs = (B.collective("bwd.shared.all-gather", "all-gather", (grad,),
                           forward_of="fwd.moe.all-gather", size=gathered_input),) if B.sp else ()
    return dense_bwd(B, "shared.fc1", lambda d: (d.T, n_in * d.fs, d.h), x, inputs)


def dense_bwd(B: Builder, name: str, size, grad, wgrad_deps=(), linear=True,
              dtype=None) -> str:
    """dgrad and wgrad of one (not grouped) GEMM of the slot; returns dgrad. ``linear=False``:
    in the activations' dtype or ``dtype`` (the router's), no fp8 cast (the router)."""
    fwd = f"fwd.{name}"
    if linear:
        grad = fp8_cast(B, f"bwd.{name}.cast", lambda d: size(d)[:2], grad, grad=True)
    dgrad = B.gemm(f"bwd.{name}.dgrad", lambda d: (size(d)[0], size(d)[2], size(d)[1]), (grad,),
                   forward_of=fwd, linear=linear, dtype=dtype)
    B.gemm(f"bwd.{name}.wgrad", lambda d: (size(d)[2], size(d)[1], size(d)[0], 1, True),
           (grad, *wgrad_deps), forward_of=fwd, linear=linear, dtype=dtype)
    return dgrad


def moe_bwd(B: Builder, grad, swiglu: bool, shared: bool) -> str:
    """The slot's backward from the gradient of its output (Tn x h); returns the gradient of
    its input (the norm's output), the experts' and the router's summed."""
    n_in = 2 if swiglu else 1
    op = sp_reduce_op(B.sp)
    if B.sp:
        grad = B.collective("bwd.moe.all-gather", "all-gather", (grad,),
                            forward_of=f"fwd.moe.{op}", size=gathered_tokens)
    x = B.eltwise("bwd.moe.unpermute", lambda d: (routed_rows(d), d.h, d.T * d.h * d.bpe
                                                  + 2 * routed_rows(d) * d.h * d.bpe), (grad,),
                  forward_of="fwd.moe.unpermute")
    probs = x
    x = grouped_bwd(B, "experts.fc2", fc2_size, x)
    x = B.eltwise("bwd.experts.act", lambda d: (routed_rows(d), d.fe, (1 + 2 * n_in)
                                                * routed_rows(d) * d.fe * d.bpe), (x,),
                  forward_of="fwd.experts.act", arith=act_arith(n_in, True))
    x = grouped_bwd(B, "experts.fc1", fc1_size(n_in), x)
    x = B.eltwise("bwd.moe.permute", lambda d: (d.T, d.h, (routed_rows(d) + d.T) * d.h * d.bpe),
                  (x,), forward_of="fwd.moe.permute")
    if shared:
        s = _shared_bwd(B, grad, n_in)
        x = B.eltwise("bwd.shared.add", lambda d: (d.T, d.h, 3 * d.T * d.h * d.bpe), (x, s),
                      forward_of="fwd.shared.add")
    if B.sp:
        x = B.collective("bwd.moe.reduce-scatter", "reduce-scatter", (x,), size=gathered_tokens,
                         forward_of="fwd.moe.all-gather")
    else:
        x = B.collective("bwd.moe.all-reduce", "all-reduce", (x,), size=gathered_tokens)
    return router_bwd(B, probs, x)


def router_bwd(B: Builder, probs, x) -> str:
    """The router's backward from the probabilities' gradient ``probs`` (top-k, dgrad, wgrad,
    in the router's dtype with its casts: :mod:`tpsim.layer.router_dtype`) and the sum of its
    input gradient with the experts' ``x``."""
    ops, launches = aux_bwd(B)
    r = B.eltwise("bwd.router.topk", lambda d: (d.Tn, d.experts, 3 * d.Tn * d.experts * 4),
                  (probs,), forward_of="fwd.router.topk", host_ops=1 + ops,
                  launches=(lambda d: launches) if launches else None) \
        if B.router_fusion else topk_bwd(B, probs)
    r = dense_bwd(B, "router", lambda d: (d.Tn, d.experts, d.h), r, linear=False,
                  dtype=router_gemm_dtype(B))
    r = gating_bwd_casts(B, r)
    return B.eltwise("bwd.router.add", lambda d: (d.Tn, d.h, 3 * d.Tn * d.h * d.bpe), (x, r),
                     forward_of="fwd.router")


def moe_dims(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
             sequence_parallel: bool) -> Dims:
    """Per-rank sizes of a layer of ``model``'s MoE slot, all experts local (EP 1), each
    expert's width split over ``tp``: f_e / tp and S f_s / tp. TP > 1 needs sequence
    parallelism (Megatron-core refuses MoE with TP and without SP); the widths must divide."""
    if tp > 1 and not sequence_parallel:
        raise ConfigError("--sequence-parallel", "", "on with an MoE model and tp > 1 (as "
                          "Megatron-core requires)", False)
    shared = model.shared_experts * (model.shared_expert_ffn_hidden or 0)
    for key, width in (("expert_ffn_hidden", model.expert_ffn_hidden), ("shared experts", shared)):
        if width % tp:
            raise ConfigError("--tp", "", f"a divisor of {model.name}'s {key} ({width})", tp)
    heads_ok = model.heads % tp == 0 and seq_len % tp == 0
    if not heads_ok:
        raise ConfigError("--tp", "", f"a divisor of {model.name}'s heads ({model.heads}) and "
                          f"of the sequence ({seq_len})", tp)
    linear = dtype if dtype in LOW_PRECISION else ""
    act = "bf16" if linear else dtype
    return Dims(b=micro_batch, s=seq_len, h=model.hidden, tp=tp, dtype=act, linear_dtype=linear,
                heads=model.heads // tp, kv_heads=model.kv_heads_per_rank(tp), d=model.head_dim,
                f=model.ffn_hidden // tp, sp=sequence_parallel,
                vocab=model.padded_vocab(tp) // tp, experts=model.experts,
                topk=model.experts_per_token, fe=model.expert_ffn_hidden // tp, fs=shared // tp)
