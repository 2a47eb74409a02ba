"""What one training precision stores per parameter, in bytes (Megatron-LM's mixed precision).

| dtype | weights | main gradients | optimizer state | distributed optimizer all-gathers |
| --- | --- | --- | --- | --- |
| bf16 | 2 | 4 (fp32: Megatron accumulates and reduces bf16 gradients in fp32) | 12 (fp32 master, Adam m, v) | 2 |
| fp16 | 2 | 2 (the param dtype) | 16 (fp32 master, fp32 gradient copy, m, v) | 2 |
| fp32 | 4 | 4 | 8 (m, v: the weights are the master) | 4 |
| fp8 | 4 (bf16 + FP8 row-wise and transposed copies, Hopper) | 4 | 12 | 2 |

Megatron-LM docs/user-guide/features/dist_optimizer.md gives the totals 18 (bf16), 20 (fp16) and
16 (fp32) bytes per parameter, and 6 + 12/d, 4 + 16/d, 8 + 8/d with the distributed optimizer
(arguments.py: ``accumulate_allreduce_grads_in_fp32`` for bf16). FP8 keeps the bf16 weights and
Transformer Engine's cached FP8 copies (row-wise and, on Hopper, transposed: +2 bytes).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError


@dataclass(frozen=True)
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
