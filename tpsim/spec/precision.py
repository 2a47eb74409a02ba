"""What one training precision stores per parameter, in bytes (Megatron-LM's mixed precision).

| dtype | weights | main gradients | optimizer state | distributed optimizer all-gathers |
| --- | --- | --- | --- | --- |
| bf16 | 2 | 4 (fp32: Megatron accumulates and reduces bf16 gradients in fp32) | 12 (fp32 master, Adam m, v) | 2 |
| fp16 | 2 | 2 (the param dtype) | 16 (fp32 master, fp32 gradient copy, m, v) | 2 |
| fp32 | 4 | 4 | 8 (m, v: the weights are the master) | 4 |
| fp8 | 4 (bf16 + FP8 row-wise and transposed copies, Hopper) | 4 | 12 | 2 |

Megatron-LM docs/user-guide/features/dist_optimizer.md gives the totals 18 (bf16), 20 (fp16) and
16 (fp32) bytes per parameter, and 6 + 12/d, 4 + 16/d, 8 + 8/d with the distributed optimizer
(arguments.py: ``accumulate_allreduce_grads_in_fp32`` for bf16). FP8 training keeps the
parameters in bf16 (FP8 is a compute dtype: Transformer Engine casts each weight per GEMM) and
the same fp32 main gradients, master weights and moments as bf16; on top, Transformer Engine
caches each weight's FP8 cast across the micro-batches of a step, row-wise and (Hopper's FP8
GEMMs take only TN layouts) transposed: +2 bytes (Megatron-core passes ``is_first_microbatch``
unless ``--disable-parameter-transpose-cache``, megatron/core/extensions/transformer_engine.py).
Counted here for every parameter, though the embedding, output layer and norms stay bf16 (a
few hundred MB at most). ``--fp8-param-gather`` (1-byte parameters) and NeMo's
``grad_reduce_in_fp32=False`` (bf16 main gradients) are not modelled.
"""
from __future__ import annotations

from ..base.record import record
from ..base.errors import ConfigError


@record
class Precision:
    """Bytes per parameter (table in the module docstring); ``gathered``: what the distributed
    optimizer all-gathers per parameter after its step (the 16-bit model weights)."""
    weights: int
    grads: int
    optimizer: int
    gathered: int


PRECISION = {"bf16": Precision(2, 4, 12, 2), "fp16": Precision(2, 2, 16, 2),
             "fp32": Precision(4, 4, 8, 4), "fp8": Precision(4, 4, 12, 2)}


def precision(dtype: str) -> Precision:
    if dtype not in PRECISION:
        raise ConfigError("--dtype", "", f"one of {', '.join(PRECISION)}", dtype)
    return PRECISION[dtype]
