"""PyTorch's deterministic fill of new tensors (Megatron-LM's ``--deterministic-mode``).

``--deterministic-mode`` calls ``torch.use_deterministic_algorithms(True)``
(megatron/training/arguments.py), and with it PyTorch's ``fill_uninitialized_memory`` (on by
default since 2.1: ``torch.utils.deterministic.fill_uninitialized_memory``) makes
``at::native::empty_cuda`` (aten/src/ATen/native/cuda/TensorFactories.cu) fill every tensor
it allocates with NaN: one more write of each output Transformer Engine allocates with
``torch.empty`` / ``at::empty``, a kernel of its own before the op that fills it:

    t_op += elementwise_time(output bytes)        (one kernel: launch + bytes / bandwidth)

The outputs, in the activations' dtype (bpe bytes an element; fp8 GEMMs write it too):

* a GEMM that writes a new output, m x n x batch elements: each linear's forward output,
  dgrad and, without gradient accumulation fusion, 16-bit wgrad (one accumulating into the
  main gradient writes none);
* fused attention: its output forward, b seq_q heads head_dim; backward dQ, dK, dV,
  b (seq_q heads + 2 seq_kv kv_heads) head_dim;
* the LayerNorms (``norm1``, ``norm2``, recomputed copies too): their output and input
  gradient, the op's elements.

Torch's own structured kernels (``mm``, GeLU, bias-dropout-add: ``at::detail::empty_cuda``)
allocate without the fill: not priced, nor the extra launches' host time.
"""
from __future__ import annotations

import math

from ..cost.compute import elementwise_time
from ..layer.ops import Attention, Gemm, MemoryBound

NORMS = ("norm1", "norm2")   # the LayerNorms' ops: fwd., bwd. and rcp. (recomputed) names


def fill_bytes(name: str, op, bpe: int) -> float:
    """Bytes the fill writes before op ``name`` (module docstring); 0 for an op that does not
    allocate through ``torch.empty``."""
    kind = type(op)
    if kind is Gemm:
        return 0.0 if op.accumulate else op.m * op.n * op.batch * bpe
    if kind is Attention:
        tokens = op.seq_q * op.heads + (2 * op.seq_kv * op.kv_heads if op.backward else 0)
        return op.b * tokens * op.head_dim * bpe
    if kind is MemoryBound and name.split(".", 1)[-1] in NORMS:
        return math.prod(op.dims) * bpe
    return 0.0


def filled_times(names, ops, times: list[float], bpe: int, device) -> list[float]:
    """``times`` with each op's fill added (module docstring)."""
    return [t + elementwise_time(fill_bytes(n, op, bpe), device)
            for n, op, t in zip(names, ops, times)]


__all__ = ["NORMS", "fill_bytes", "filled_times"]
