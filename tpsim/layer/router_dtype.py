"""The MoE router's gating GEMM in a dtype of its own: Megatron-core's ``--moe-router-dtype``
fp32 or fp64 (Megatron-LM dab77238, 2025-03-06, "Promote routing precision to FP32/FP64 for
fine-grained MoE"; None, its default, keeps the activations' dtype: :mod:`tpsim.layer.moe`'s
``fwd.router`` and its dgrad and wgrad as they are).

Two implementations, by Megatron-core release (``layout.moe_router_gating_linear``):

* ``F.linear`` on cast operands, Megatron-core 0.12 (Megatron-LM dab77238 to 0f058666; at
  1e057005, 2025-05-24, ``megatron/core/transformer/moe/router.py`` ``Router.gating``:
  ``torch.nn.functional.linear(input.to(router_dtype), self.weight.to(router_dtype))``): the
  forward casts the T_n x h input and the E x h weight (two ``.to`` calls in Python), runs the
  GEMM in the router's dtype and autograd keeps the two cast copies; the backward is
  autograd's: dgrad and wgrad on R-byte operands, then each cast's ``ToCopyBackward`` (a C++
  node) casts the input's and the weight's gradients back to B bytes.
* ``RouterGatingLinearFunction``, Megatron-core 0.13 on (Megatron-LM 0f058666, 2025-06-14,
  "Using te_general_gemm to handle high precision router output dtype (bf16 in, fp32 out)";
  ``moe_utils.py``, the same at core_v0.14.0 and d98e8a64): for fp32 the forward is Transformer
  Engine's GEMM on the 16-bit input and weight with fp32 logits (no cast: priced as the 16-bit
  GEMM it is); its Python backward casts the weight and the saved input to fp32, runs dgrad
  and wgrad by ``te_general_gemm`` on fp32 operands (TF32: Transformer Engine's
  ``cublaslt_gemm.cu``, "Use TF32 only for pure FP32 GEMM") and casts both gradients back
  (``.to(ctx.input_dtype)``, ``.to(ctx.weight_dtype)``). fp64 has no Transformer Engine path:
  ``torch.mm`` on the cast input and weight forward, the same four casts around ``torch.mm``
  backward.

F.linear's fp32 GEMMs run TF32 as the NGC PyTorch containers run them
(``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1``); fp64's on the device's FP64 tensor cores
(``peak_tflops.fp64``; a device without it is refused). With T_n tokens, h, E experts, B the
activations' bytes and R the router's (fp32 4, fp64 8), per MoE layer and micro-batch::

    fwd.router.cast   F.linear, or fp64: (T_n + E) h (B + R) bytes, 2 kernels, 2 bare calls;
                      F.linear keeps the copies, (T_n + E) h R, where the GEMM kept T_n h B
    fwd.router        T_n x E x h: R's GEMM (TF32, fp64) where cast, else the 16-bit one
    bwd.router.dgrad  T_n x h x E at R's GEMM
    bwd.router.wgrad  h x E x T_n at R's GEMM
    bwd.router.cast   the Function: 2 (T_n + E) h (B + R) bytes, 4 kernels, 4 bare calls;
                      F.linear: (T_n + E) h (R + B) bytes, 2 kernels autograd launches

each cast a memory-bound op (:class:`~tpsim.layer.ops.MemoryBound`, ``kernels`` launches), each
bare call at the host's launch price (:mod:`tpsim.sim.launches`). Left out: the top-k reading
R-byte logits (T_n E (R - B) bytes more), the probabilities' dtype in the dispatch (T_n k
values), the weight gradient's fp32 output against the main gradient's add (E h).
A training dtype of R bytes or more (fp32) runs no cast: none of this applies.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from .template import Builder

ROUTER_BYTES = {"fp32": 4, "fp64": 8}           # R
ROUTER_GEMM = {"fp32": "tf32", "fp64": "fp64"}  # the GEMM's dtype on R-byte operands
FWD_CASTS = 2    # the input's and the weight's .to
BWD_CASTS = {True: 4, False: 2}   # the Function's four .to calls; autograd's two ToCopyBackward


def router_switch(router: tuple | None, d, device) -> tuple | None:
    """The template's switch for ``router``, (``--moe-router-dtype``, ``gating``: Megatron-core
    0.13's Function), at the layer's sizes ``d``: None where nothing changes (no router
    setting, none, or activations of R bytes or more), else ``router``; a ConfigError where
    ``device`` lists no peak for the GEMM's dtype."""
    if router is None or router[0] == "none" or d.bpe >= ROUTER_BYTES[router[0]]:
        return None
    if ROUTER_GEMM[router[0]] not in device.peak_flops:
        raise ConfigError("--moe-router-dtype", "", f"a dtype whose GEMM the device lists "
                          f"(its peak_tflops has no {ROUTER_GEMM[router[0]]})", router[0])
    return tuple(router)


def _cast_bytes(d, R: int) -> int:
    """(T_n + E) h (B + R): the input and the weight read at one size, written at the other."""
    return (d.Tn + d.experts) * d.h * (d.bpe + R)


def router_gemm_dtype(B: Builder) -> str | None:
    """The dtype of the router's dgrad and wgrad: R's GEMM, or None (the activations')."""
    return None if B.router_dtype is None else ROUTER_GEMM[B.router_dtype[0]]


def gating_fwd(B: Builder, x) -> str:
    """The gating GEMM ``fwd.router`` of the norm's output ``x`` (module docstring)."""
    size = lambda d: (d.Tn, d.experts, d.h)          # noqa: E731
    kept = lambda d: d.Tn * d.h * d.bpe              # noqa: E731 (the 16-bit input)
    if B.router_dtype is None:
        return B.gemm("fwd.router", size, (x,), saved=kept)
    dtype, gating = B.router_dtype
    R = ROUTER_BYTES[dtype]
    if gating and dtype == "fp32":                   # Transformer Engine's bf16 in, fp32 out
        return B.gemm("fwd.router", size, (x,), saved=kept)
    copies = None if gating else (lambda d: (d.Tn + d.experts) * d.h * R)
    x = B.eltwise("fwd.router.cast", lambda d: (d.Tn, d.h, _cast_bytes(d, R)),
                  (x,), saved=copies, kernels=lambda d: FWD_CASTS, host_ops=0,
                  loop_ops=lambda d: FWD_CASTS)
    return B.gemm("fwd.router", size, (x,), saved=kept if gating else None,
                  dtype=ROUTER_GEMM[dtype])


def gating_bwd_casts(B: Builder, dgrad: str) -> str:
    """The casts around the router's dgrad and wgrad (module docstring): ``dgrad`` where the
    router runs in the activations' dtype."""
    if B.router_dtype is None:
        return dgrad
    dtype, gating = B.router_dtype
    R, casts = ROUTER_BYTES[dtype], BWD_CASTS[gating]
    calls = {"host_ops": 0, "loop_ops" if gating else "launches": lambda d: casts}
    return B.eltwise("bwd.router.cast", lambda d: (d.Tn, d.h, casts // 2 * _cast_bytes(d, R)),
                     (dgrad, "bwd.router.wgrad"), forward_of="fwd.router",
                     kernels=lambda d: casts, **calls)


__all__ = ["ROUTER_BYTES", "ROUTER_GEMM", "router_switch", "router_gemm_dtype", "gating_fwd",
           "gating_bwd_casts"]
