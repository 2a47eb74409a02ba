"""The attention backward under ``--deterministic-mode``: where the device's kernel lists a
``deterministic_tile`` (FlashAttention-2), its backward loops over key blocks in a few CTAs a
head (:mod:`tpsim.cost.key_loop`); where it lists ``deterministic_workspace_bytes`` (cuDNN's
fused attention on Hopper), dQ goes through a dP workspace (:mod:`tpsim.cost.dp_workspace`);
other kernels' deterministic backward is priced as the default one.

Transformer Engine passes ``deterministic=True`` to FlashAttention-2 when
``torch.are_deterministic_algorithms_enabled()`` or ``NVTE_ALLOW_NONDETERMINISTIC_ALGO=0``
(``transformer_engine/pytorch/attention/dot_product_attention/dot_product_attention.py``,
v2.8), and below compute capability 9.0 it drops cuDNN's fused attention for determinism
(``utils.get_attention_backend``), so FlashAttention-2 runs there; on Hopper it keeps cuDNN's
(sub-backend 1, F16_arbitrary_seqlen), with ``set_deterministic_algorithm(True)``.

With attention dropout (:mod:`tpsim.cost.attention_dropout`) the key loop's CTAs draw their
blocks' random numbers: the default backward's time, dropout in it, scales with the grids; the
dP workspace moves dQ's matmul out of the fused kernel, not the random numbers: the dropout's
seconds are added to the workspace backward of the kernel without them.
"""
from __future__ import annotations

from dataclasses import replace

from ..base.formula import qualname
from ..cost.dp_workspace import workspace_backward_time
from ..cost.key_loop import deterministic_backward_time
from ..layer.ops import Attention
from .price import kernel_time

_KEY_LOOP, _WORKSPACE = qualname(deterministic_backward_time), qualname(workspace_backward_time)


def deterministic_attention(ops, times: list[float], formulas: list, device) -> tuple[list, list]:
    """``(times, formulas)`` with each fused attention backward priced as its kernel's
    deterministic one and named by the function that priced it (module docstring); every other
    op's time and formula as given."""
    kernels = device.attention_kernels
    if not kernels or not device.sm_count:
        return times, formulas
    times, formulas = list(times), list(formulas)
    for i, op in enumerate(ops):
        if type(op) is not Attention or not op.backward:
            continue
        kernel = kernels[op.kernel or device.attention_kernel]
        if kernel.deterministic_tile:
            times[i] = deterministic_backward_time(times[i], op.b, op.heads, op.seq_q, op.seq_kv,
                                                   op.head_dim, op.causal, device,
                                                   tuple(kernel.deterministic_tile))
            formulas[i] = _KEY_LOOP
        elif kernel.deterministic_workspace_bytes:
            plain = kernel_time(replace(op, dropout=False), device) if op.dropout else times[i]
            drop = times[i] - plain      # 0.0 without dropout
            times[i] = workspace_backward_time(plain, op.b, op.heads, op.pairs,
                                               kernel.deterministic_workspace_bytes, device) + drop
            formulas[i] = _WORKSPACE
    return times, formulas


def deterministic_attention_times(ops, times: list[float], device) -> list[float]:
    """The times of :func:`deterministic_attention` alone."""
    return deterministic_attention(ops, times, [None] * len(times), device)[0]


__all__ = ["deterministic_attention", "deterministic_attention_times"]
