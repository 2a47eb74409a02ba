"""The copies that pad each local expert's rows for a quantized grouped GEMM: Transformer
Engine's ``Fp8Padding`` and ``Fp8Unpadding`` as Megatron-core's TEGroupedMLP runs them.

Under FP8 (and MXFP8, NVFP4) a grouped GEMM needs each expert's rows a multiple of the
quantizer's alignment (16 for fp8, 32 for MXFP8, 128 for NVFP4: ``get_align_size_for_
quantization``, transformer_engine/pytorch/quantization.py). TEGroupedMLP.forward
(megatron/core/transformer/moe/experts.py, Megatron-LM commits 15e07a2d of April 2026 and
d98e8a64 of August 2026) pads the permuted tokens and their probabilities with
``Fp8Padding`` before fc1 and unpads fc2's output with ``Fp8Unpadding``, unless the rows
arrive padded already (``moe_router_padding_for_quantization``, which the Qwen3 recipes set
False, ``recipes/qwen/h100/qwen3_moe.py``; or HybridEP, which pads inside its dispatch,
``hybrid_ep_dispatch(..., pad_multiple=...)``, so its counts come aligned). Transformer
Engine's ``Fp8Padding.forward`` (pytorch/module/fp8_padding.py) returns its input only when
every count is aligned already; a force-balanced router's counts are random (aligned with
probability 1/16 each), so it copies: ``tex.fused_multi_row_padding`` writes the R x h
tokens into a new padded buffer (read R h, write R h, 16-bit), and its backward
(``fused_multi_row_unpadding``) copies the gradient back; ``Fp8Unpadding`` does the same the
other way round. Four R x h copies a layer and micro-batch (forward: pad the tokens, unpad
fc2's output; backward: pad fc2's output gradient, unpad fc1's input gradient), and the
probabilities' pad and its backward (R values, fp32):

    pad     read and write R x h (16-bit) + R x 4 (the probabilities): 2 kernels
    unpad   read and write R x h (16-bit)

The padding rows themselves (under 16 an expert) are not counted. Their Python calls are
counted with the sort and unsort (:data:`tpsim.layer.moe_host.FP8_PADDING`).
"""
from __future__ import annotations

from .moe import routed_rows
from .template import Builder

PROBS_BYTES = 4      # the permuted probabilities, fp32 (moe_router_dtype fp32 or upcast)


def pads(B: Builder, dispatcher: str | None) -> bool:
    """Whether the experts' rows are copied to pad them: a quantized GEMM dtype, rows not
    padded by the dispatcher (all but HybridEP's)."""
    return bool(B.fp8) and dispatcher != "hybridep"


def _pad_size(d):
    r = routed_rows(d)
    return r, d.h, 2 * r * (d.h * d.bpe + PROBS_BYTES)


def _unpad_size(d):
    r = routed_rows(d)
    return r, d.h, 2 * r * d.h * d.bpe


def pad_fwd(B: Builder, y, dispatcher: str | None) -> str:
    """Fp8Padding of the sorted tokens and their probabilities (module docstring)."""
    if not pads(B, dispatcher):
        return y
    return B.eltwise("fwd.experts.pad", _pad_size, (y,), host_ops=0, kernels=lambda d: 2)


def unpad_fwd(B: Builder, y, dispatcher: str | None) -> str:
    """Fp8Unpadding of fc2's output."""
    if not pads(B, dispatcher):
        return y
    return B.eltwise("fwd.experts.unpad", _unpad_size, (y,), host_ops=0)


def unpad_bwd(B: Builder, y, dispatcher: str | None) -> str:
    """Fp8Unpadding's backward: fc2's output gradient padded."""
    if not pads(B, dispatcher):
        return y
    return B.eltwise("bwd.experts.unpad", _unpad_size, (y,), host_ops=0,
                     forward_of="fwd.experts.unpad")


def pad_bwd(B: Builder, y, dispatcher: str | None) -> str:
    """Fp8Padding's backward: fc1's input gradient and the probabilities' unpadded."""
    if not pads(B, dispatcher):
        return y
    return B.eltwise("bwd.experts.pad", _pad_size, (y,), host_ops=0, kernels=lambda d: 2,
                     forward_of="fwd.experts.pad")
