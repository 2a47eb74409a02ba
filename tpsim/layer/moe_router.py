"""The router's top-k and auxiliary loss without Megatron-core's fused kernels: PyTorch ops
(``--no-moe-router-fusion``; Megatron-core's default, and its only path before Megatron-LM
commit c08d89be, 2025-08-17, "Add MoE router fusion").

With ``moe_router_fusion`` (every Megatron-Bridge performance recipe) the top-k, the softmax
and the routing map are one Transformer Engine kernel and the auxiliary loss's scores and loss
two more (:mod:`tpsim.layer.moe_host`; ``fwd.router.topk``). Without it, Megatron-core
(``megatron/core/transformer/moe/moe_utils.py`` ``topk_softmax_with_capacity``,
``switch_load_balancing_loss_func``; ``router.py`` ``TopKRouter.aux_loss_load_balancing``,
``compute_routing_scores_for_aux_loss``, ``apply_load_balancing_loss``; Megatron-LM 1e057005,
May 2025: softmax scores, top-k before the softmax, dropless) runs PyTorch ops, each a
Python-level call and a kernel, with T_n tokens, E experts, top-k k, n = T_n E logits of B
bytes (the activations' dtype, as the fused op's) and fp32 probabilities::

    top-k      torch.topk(logits, k)                  n B read, T_n k (B + 8) written
               torch.softmax(top, fp32)               T_n k (B + 4)
               zeros_like(logits).scatter(1, i, p)    n B written; the copy n 2B, T_n k 12
               zeros_like(logits).int().scatter(1, i, 1).bool()
                                                      n B; n (B + 4); n 8; n 5
               routing_map.sum(0)                     n (one byte each)
                                                      9 ops, n (6 B + 18) + T_n k (2 B + 24)
    aux loss   torch.softmax(logits, fp32)            n (B + 4)
               scores.sum(0)                          n 4
               the loss's product, sum and scale, its / coeff for the metrics tracker, the
               tracker's add and copy back (E or one element), MoEAuxLossAutoScaler.apply
                                                      9 ops, 8 kernels, n (B + 8)

(the fused path counts 1 + 7 of these ops: 10 more here). The token counts' all-reduce over
TP x CP is the fused path's (``fwd.router.aux.all-reduce``). In backward, autograd's C++
nodes: the scatter's gather (T_n k), the softmax's backward (T_n k), the top-k's zeros and
scatter (n B, T_n k), with the loss the scores' softmax backward (n 8 read, n B written) and
the product's (E), and the sum of the logits' two gradients (3 n B); MoEAuxLossAutoScaler's
backward is a Python Function (one host op, its ones_like kernel). Small tensors: each kernel
is about its launch, which :class:`tpsim.layer.ops.MemoryBound` ``kernels`` prices.

Not priced (as in the fused path): the force-balanced router's RandomSTE (a benchmark
setting). The gating GEMM's casts to the router's dtype: :mod:`tpsim.layer.router_dtype`.
"""
from __future__ import annotations

from .template import Builder

TOPK_OPS = 9          # topk, softmax, zeros_like, scatter, zeros_like, int, scatter, bool, sum
AUX_OPS = 9           # softmax, sum, product, sum, scale, / coeff, add, copy back, AutoScaler
AUX_KERNELS = 8       # the same but the AutoScaler's apply
TOPK_BWD_KERNELS = 4  # the scatter's gather, the softmax's backward, the top-k's zeros and scatter
AUX_BWD_KERNELS = 4   # AutoScaler's ones_like, the product's, the softmax's, the gradients' sum


def _logits(d) -> int:
    return d.Tn * d.experts


def topk_fwd_bytes(d, aux: bool) -> int:
    """The top-k's and (with the auxiliary loss, ``aux``) the loss's kernels' bytes (module
    docstring): n (6 B + 18) + T_n k (2 B + 24), + n (B + 8) with ``aux``."""
    n, rows = _logits(d), d.Tn * d.topk
    topk = n * (6 * d.bpe + 18) + rows * (2 * d.bpe + 24)
    return topk + (n * (d.bpe + 8) if aux else 0)


def topk_bwd_bytes(d, aux: bool) -> int:
    """Their autograd kernels' bytes (module docstring), n = T_n E logits of B bytes::

        n B + T_n k (4 + 2 x 4 + 12)    the top-k's zeros; a routed pair's bytes in the
                                        scatter's gather, the softmax's backward, the
                                        top-k's scatter
        + n (8 + B) + 3 n B             with ``aux``: the scores' softmax backward (n 8 read,
                                        n B written), the logits' two gradients summed

    (the loss product's backward, E elements, is left out)."""
    n, rows = _logits(d), d.Tn * d.topk
    topk = n * d.bpe + rows * (4 + 2 * 4 + 12)
    return topk + (n * (8 + d.bpe) + 3 * n * d.bpe if aux else 0)


def topk_fwd(B: Builder, router: str) -> str:
    """The unfused top-k and auxiliary loss (module docstring) from the gating GEMM."""
    aux = B.load_balancing != "none"
    return B.eltwise("fwd.router.topk", lambda d: (d.Tn, d.experts, topk_fwd_bytes(d, aux)),
                     (router,), saved=lambda d: d.Tn * d.experts * 4,
                     host_ops=TOPK_OPS + (AUX_OPS if aux else 0),
                     kernels=lambda d: TOPK_OPS + (AUX_KERNELS if aux else 0))


def topk_bwd(B: Builder, probs: str) -> str:
    """Their backward: autograd's C++ nodes, and MoEAuxLossAutoScaler's Python backward."""
    aux = B.load_balancing != "none"
    kernels = TOPK_BWD_KERNELS + (AUX_BWD_KERNELS if aux else 0)
    return B.eltwise("bwd.router.topk", lambda d: (d.Tn, d.experts, topk_bwd_bytes(d, aux)),
                     (probs,), forward_of="fwd.router.topk", host_ops=1 + aux,
                     launches=lambda d: kernels - 1 - aux, kernels=lambda d: kernels)
