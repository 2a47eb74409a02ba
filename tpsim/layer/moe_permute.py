"""The all-to-all dispatcher's token permutation without Transformer Engine's fused kernels:
Megatron-core's PyTorch path (``--no-moe-permute-fusion``; Megatron-core's default).

With ``moe_permute_fusion`` (every Megatron-Bridge performance recipe and Megatron-MoE-ModelZoo
benchmark config of ``bench/moe_published.py``) the permutation, the chunk sorts and the
unpermutation are Transformer Engine's ``moe_permute_with_probs``, ``moe_sort_chunks_by_index``
and ``moe_unpermute``: one memory-bound pass each (:mod:`tpsim.layer.moe_ep`). Without it,
Megatron-core (``megatron/core/transformer/moe/moe_utils.py`` at d98e8a64, ``permute``,
``unpermute``, ``sort_chunks_by_idxs`` with ``fused=False``; ``token_dispatcher.py``
``MoEAlltoAllTokenDispatcher``; dropless, so ``num_out_tokens`` = T_n k is known on the host)
runs PyTorch ops, each a Python-level call and its kernels, with T_n tokens, E experts, top-k
k, R_1 = T_n k rows, hidden h, B the activations' bytes, n = T_n E::

    permute     routing_map.bool().T.contiguous()       copy of n bools: 2n bytes
                .reshape(-1).argsort(stable)            PyTorch's radix sort of n one-byte keys
                                                        with int64 indices: the indices' arange
                                                        (8n), cub's digit histogram (n) and one
                                                        8-bit onesweep pass (read and write the
                                                        keys and indices, 18n): 3 kernels, 27n
                flat_sorted % num_tokens                R_1 int64 read and written: 16 R_1
                probs.T.contiguous()                    copy of the n probabilities: 2 n B
                [...][flat_sorted]                      gather: R_1 (8 + 2B)
                tokens.index_select(0, sorted_indices)  R_1 rows of h read and written, and the
                                                        indices: 2 R_1 h B + 8 R_1
    unpermute   torch.zeros(T_n, h)                     T_n h B written
    (no probs:  scatter_add_(0, index.expand(-1, h), x) R_1 h B read, T_n h B read and written
     the experts                                        (the expanded index has stride 0
     scale)                                             along h: one int64 a row)
    sort_chunks torch.split(x, counts.tolist()), torch.cat of the chunks in sorted_idxs.tolist()
                order (one batched copy for up to 128 chunks: 2 R h B, as the fused sort), and
                the same for the probabilities (the sort): 4 and 4 Python-level ops where the
                fused kernels issue the sort and its chunk map (2)

In backward, autograd's C++ nodes: index_select's is ``zeros`` of T_n x h and ``index_add_``
of the R_1 rows (T_n h B written, R_1 h B read, T_n h B read and written), the probabilities'
gather's ``index_put_`` with accumulation (PyTorch sorts its R_1 int64 indices first, radix
passes of 8 bits over the ceil(log2 n) bits they need, each reading and writing key and index:
32 R_1 a pass, then the accumulation R_1 (8 + 2B), into zeros of n B) and the transpose's copy
(2 n B); scatter_add_'s is a gather of the R_1 rows (2 R_1 h B); the chunk sorts' a ``cat`` of
the gradients (as the fused). The host copies the tokens per local expert to the host too
(``_maybe_dtoh_and_synchronize``: one more non-blocking copy) and keeps the chunk indices on the
CPU (``permute_idx_device``). The sync point is unchanged (before the all-to-all with EP > 1).

Not priced: the PyTorch views (``.T``, ``.reshape``, ``.unsqueeze``, ``.expand``, slices: no
kernel) and the Python list the cat's chunks are gathered into (no torch call).
"""
from __future__ import annotations

import math

from .template import Builder

CHUNK_SORT_OPS = 4          # split, counts .tolist(), sorted_idxs .tolist(), cat
PERMUTE_OPS = 6             # map copy, argsort, %, probs copy, probs gather, index_select
DTOH_EXTRA = 1              # num_global_tokens_per_local_expert copied to the host
RADIX_BITS = 8              # cub's onesweep digit


def chosen_rows(d) -> int:
    """R_1 = T_n k: one row per token and expert it chose, before the dispatch."""
    return d.Tn * d.topk


def _map(d) -> int:
    return d.Tn * d.experts


def sort_passes(keys: int) -> int:
    """PyTorch's radix passes over indices below ``keys`` (ceil(log2 keys) bits, 8 a pass)."""
    return max(1, math.ceil(math.log2(max(keys, 2)) / RADIX_BITS))


def permute_fwd(B: Builder, x, topk, host_ops: int) -> str:
    """The unfused permutation (module docstring) of the T_n tokens ``x`` by the router's
    ``topk``; the index_select carries ``host_ops`` (the dispatcher's preprocessing) besides
    its own."""
    m = B.eltwise("fwd.moe.permute.map", lambda d: (d.Tn, d.experts, 2 * _map(d)), (topk,))
    m = B.eltwise("fwd.moe.permute.argsort", lambda d: (d.Tn, d.experts, 27 * _map(d)), (m,),
                  kernels=lambda d: 3)
    i = B.eltwise("fwd.moe.permute.mod", lambda d: (chosen_rows(d), 1, 16 * chosen_rows(d)), (m,))
    p = B.eltwise("fwd.moe.permute.probs", lambda d: (d.Tn, d.experts, 2 * _map(d) * d.bpe),
                  (i,))
    p = B.eltwise("fwd.moe.permute.probs.gather",
                  lambda d: (chosen_rows(d), 1, chosen_rows(d) * (8 + 2 * d.bpe)), (p,))
    return B.eltwise("fwd.moe.permute", lambda d: (chosen_rows(d), d.h, chosen_rows(d)
                                                   * (2 * d.h * d.bpe + 8)), (x, p),
                     host_ops=host_ops + 1 + DTOH_EXTRA)


def unpermute_fwd(B: Builder, y, topk) -> str:
    """zeros, then scatter_add_ of the R_1 expert outputs into the T_n tokens."""
    z = B.eltwise("fwd.moe.unpermute.zeros", lambda d: (d.Tn, d.h, d.Tn * d.h * d.bpe), (y,))
    return B.eltwise("fwd.moe.unpermute", lambda d: (d.Tn, d.h, (chosen_rows(d) + 2 * d.Tn) * d.h
                                                     * d.bpe), (y, topk, z))


def unpermute_bwd(B: Builder, grad) -> str:
    """scatter_add_'s backward: a gather of the R_1 rows of the output gradient."""
    return B.eltwise("bwd.moe.unpermute",
                     lambda d: (chosen_rows(d), d.h, 2 * chosen_rows(d) * d.h * d.bpe), (grad,),
                     forward_of="fwd.moe.unpermute")


def _probs_bwd_bytes(d) -> int:
    """index_put_'s sort of the R_1 indices, its accumulation into zeros of n, the copy."""
    sort = sort_passes(_map(d)) * 32 * chosen_rows(d)
    return sort + chosen_rows(d) * (8 + 2 * d.bpe) + 3 * _map(d) * d.bpe


def permute_bwd(B: Builder, g, probs) -> str:
    """index_select's backward (zeros, index_add_) and the probabilities' (module docstring),
    their kernels launched by autograd's C++ nodes."""
    z = B.eltwise("bwd.moe.permute.zeros", lambda d: (d.Tn, d.h, d.Tn * d.h * d.bpe), (g,))
    p = B.eltwise("bwd.moe.permute.probs", lambda d: (chosen_rows(d), 1, _probs_bwd_bytes(d)),
                  (probs,), forward_of="fwd.moe.permute.probs",
                  kernels=lambda d: 2 * sort_passes(_map(d)) + 3)
    return B.eltwise("bwd.moe.permute", lambda d: (d.Tn, d.h, (chosen_rows(d) + 2 * d.Tn) * d.h
                                                   * d.bpe), (g, z, p),
                     forward_of="fwd.moe.permute")
