"""Transformer Engine's quantized weights, cast once per optimizer step.

Under FP8 (and MXFP8, NVFP4) Transformer Engine quantizes each linear's weight on the step's
first micro-batch and keeps the quantized copy for the others (Megatron-core passes
``is_first_microbatch`` to its linears unless ``--disable-parameter-transpose-cache``,
megatron/core/extensions/transformer_engine.py): one cast kernel per weight, as a linear's
input cast (:func:`tpsim.layer.ops.cast_op`: fp8's cast-transpose, priced by
:func:`tpsim.cost.compute.cast_transpose_time`), reading the 16-bit weight and writing what the
GEMMs read (:func:`tpsim.spec.precision.cast_write_bytes`: fp8's copy and its transpose), after
current scaling's amax kernel, a plain memory-bound read of the weight
(:func:`tpsim.spec.precision.amax_pass_bytes`). With
quantized parameters (``--fp8-param-gather``) the weight is quantized already: fp8 writes only
its transpose, 1 + 1 bytes; MXFP8 all-gathers both copies and casts nothing; NVFP4 builds the
column-wise copy from the row-wise one, reading one and writing the other (2 x QUANTIZED_BYTES;
:mod:`tpsim.spec.precision`). Where FP8 GEMMs take any layout (``+any-layout``: Blackwell) the
fp8 copy serves both directions: the cast writes one copy, and fp8 parameters need nothing.
Priced for every parameter the stage holds; the memory counts the cached copies of the
linears' weights only (:func:`stage_plain_params`: the embedding, output layer and norms stay
16-bit, :func:`tpsim.spec.precision.weights_bytes`).

    t = kernel_time(cast_op(q)(params x bytes_per_param))    (0 without quantized linears;
                                                              any layout: a plain cast)
        + kernel_time(MemoryBound(params x amax_pass_bytes))  (current scaling, no fp8 params)
"""
from __future__ import annotations

from ..layer.ops import MemoryBound, cast_op
from ..sim.price import kernel_time
from .pipeline import stage_totals
from ..spec.model_params import plain_params
from ..spec.precision import (ANY_LAYOUT, FP8_PARAMS, LOW_PRECISION, QUANTIZED_BYTES,
                              amax_pass_bytes, cast_write_bytes, key_quantizer)

WEIGHT_BYTES = 2        # the 16-bit weight read
# quantized parameters: bytes the per-step kernel moves per parameter (module docstring)
PARAM_CAST_BYTES = {"fp8": 2, "mxfp8": 0, "nvfp4": 2 * QUANTIZED_BYTES["nvfp4"]}


def weight_cast_s(params: float, key: str, device) -> float:
    """Seconds of the per-step weight casts of ``params`` under precision ``key`` (module
    docstring)."""
    dtype, *options = key.split("+")
    if dtype not in LOW_PRECISION:
        return 0.0
    per = PARAM_CAST_BYTES[dtype] if FP8_PARAMS in options else \
        WEIGHT_BYTES + cast_write_bytes(key_quantizer(key))
    op = cast_op(dtype)
    if ANY_LAYOUT in options:       # no transpose to write: a plain cast (module docstring)
        per -= QUANTIZED_BYTES[dtype] if FP8_PARAMS not in options else PARAM_CAST_BYTES[dtype]
        op = MemoryBound
    amax = 0.0 if FP8_PARAMS in options else amax_pass_bytes(key_quantizer(key))
    if not per:
        return 0.0
    return kernel_time(op(params * per, (int(params),)), device) + \
        (kernel_time(MemoryBound(params * amax, (int(params),)), device) if amax else 0.0)


def stage_plain_params(model, tp: int, layers, pp: int, v: int) -> tuple[int, ...]:
    """Per pipeline stage, its parameters no Transformer Engine linear holds
    (:func:`tpsim.spec.model_params.plain_params` of its layers over its ``v`` chunks, the
    embedding on the first stage, the output layer on the last)."""
    return tuple(plain_params(model, tp, n, r == 0, r == pp - 1)
                 for r, n in enumerate(stage_totals(layers, pp, v)))
