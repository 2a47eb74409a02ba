"""cuDNN's deterministic attention backward on Hopper: dQ through a dP workspace.

The default fused backward (one kernel) accumulates each query block's dQ = dS K over the key
blocks of several CTAs with fp32 atomics, in an order that changes from run to run. With
``set_deterministic_algorithm(True)`` (what Transformer Engine passes under
``NVTE_ALLOW_NONDETERMINISTIC_ALGO=0``, ``fused_attn_f16_arbitrary_seqlen.cu``) cudnn-frontend
forces, on cuDNN >= 9.0, its dP-workspace decomposition (``use_dp_workspace = true``,
``include/cudnn_frontend/node/scaled_dot_product_flash_attention.h``, v1.22.0, the one
Transformer Engine 2.16 builds; cudnn-frontend PR #398: "on Hopper,
use_deterministic_algorithm ... always forced the dP-workspace decomposition" before cuDNN
9.25): the fused kernel writes dS, b heads s_q s_kv elements of 2 bytes, to a workspace, and
dQ = dS K is a second matmul that reads it back, one CTA a dQ tile. The workspace's size is
what cuDNN asks for: b h s^2 x 2 bytes, 256 GiB at b 1, h 128, s 32768 in cudnn-frontend's
H200 deterministic benchmark (``benchmark/sdpa_benchmark_training/results/h200_919_only_cudnn``,
cuDNN 9.19), an allocation Transformer Engine makes through torch's caching allocator
(``allocateSpace``, ``extensions/attention.cpp``).

Priced from those two passes:

    t_det = t_default x (1 - DQ_SHARE) + elementwise_time(2 x b heads pairs x bytes)

the fused kernel without dQ (one of the backward's five equal matmuls: QK^T, dO V^T, P^T dO,
dS K, dS^T Q), the dS it writes and the dQ matmul's read of it at the memory rate (that matmul
does head_dim FLOPs a byte read, under the ridge of every Hopper part: bound by the read).
``pairs``: the (query, key) pairs the model needs (:class:`tpsim.layer.ops.Attention`; causal,
the tiles at or below the diagonal, whose dS the kernel computes). Left out: the atomics the
default pays and this one does not, and the diagonal tiles' masked halves (block / s of the
pairs). Checked (no fit) on cudnn-frontend's H200 deterministic timings
(``python bench/deterministic_attention_published.py``).
"""
from __future__ import annotations

from .compute import elementwise_time

DQ_SHARE = 1 / 5     # dQ = dS K: one of the flash backward's five matmuls (all head_dim deep)


def workspace_backward_time(default_s: float, b: int, heads: int, pairs: float,
                            elem_bytes: float, device) -> float:
    """The deterministic backward's seconds from the default one's ``default_s``:
    default_s x (1 - DQ_SHARE) + elementwise_time(2 b heads pairs elem_bytes) (module
    docstring); ``heads``: the query heads (dS is per query head)."""
    if not elem_bytes:
        return default_s
    return (default_s * (1 - DQ_SHARE)
            + elementwise_time(2 * b * heads * pairs * elem_bytes, device))


__all__ = ["DQ_SHARE", "workspace_backward_time"]
