"""Multi-head latent attention's rotary embedding and concatenations in eager PyTorch, as NeMo
AutoModel's DeepSeek-V3 runs them (``--mla-eager``).

Megatron-core's MLA (:mod:`tpsim.layer.mla`) applies the rotary embedding and builds the
attention's query and key inside fused kernels, which tpsim folds into the attention. NeMo
AutoModel's ``MLA.forward`` (NVIDIA-NeMo/Automodel 89e3a9fdd, the performance summary's commit,
``nemo_automodel/components/models/deepseek_v3/layers.py``; ``apply_rotary_emb`` in
``components/moe/rope_utils.py``) runs them as PyTorch tensor operations, and its benchmark
recipes (``examples/benchmark/configs/deepseek_v3_te_deepep.yaml``) set no ``compile``, so each
is a kernel of its own (``recipes/llm/train_ft.py`` compiles only under a ``compile`` key).
``apply_rotary_emb(x)`` is ``view_as_complex(x.float().view(..., -1, 2)) * freqs_cis``, then
``view_as_real(...).flatten(3).to(dtype)``: three kernels, float (B+F bytes an element, B the
activations' 2, F = 4), the complex product (2F; the freqs, one row a token, broadcast over the
heads, not counted) and the cast back (F+B): :data:`tpsim.layer.eager.ROPE`, 20 bytes an
element. Per layer and micro-batch on T tokens, H heads (the rank's), widths d_n, d_r, d_v,
the key/value rank r_kv:

    forward   q_pe rope            3 kernels on T x H d_r (a slice of q_up's output)
              cat(q_nope, q_pe)    copy of T x H (d_n + d_r): read and write
              k_pe rope            3 kernels on T x d_r (a slice of kv_down's output)
              cat(k_nope, k_pe)    k_pe expanded over the H heads: write T x H (d_n + d_r),
                                   read as much
              v.contiguous()       v, a slice of kv_up's output: Transformer Engine's
                                   ``DotProductAttention.forward`` copies non-contiguous q, k, v
                                   (``x.contiguous() if not x.is_contiguous()``), T x H d_v
    backward  q: the cat's gradient is a view; rope's backward (the cast to fp32, the product
              with the conjugate, the cast back: the same 3 kernels and bytes); split's
              backward concatenates dq_nope and dq_pe into T x H (d_n + d_r)
              k: expand's backward sums dk_pe over the heads (read T x H d_r, write T x d_r);
              rope's backward on T x d_r; split's backward concatenates dk_nope and dv into
              T x H (d_n + d_v), and kv_down's output gradient, dkv and dk_pe, into
              T x (r_kv + d_r)

Bytes a layer (DeepSeek-V3, T = 4,096, H = 128, d_n = d_v = 128, d_r = 64): forward 1.75 GB,
its recomputation as much, backward 1.69 GB (0.68, 0.68 and 0.66 ms on H100 at tpsim's
elementwise rate, 4.7% of the MoE layer AutoModel's recipe runs). The softmax scale (YaRN's mscale squared) is a Python
float passed to the attention kernel and the q_a/kv_a norms are Transformer Engine's RMSNorm
(the recipe's ``rms_norm: te``): no kernel of their own. Each kernel is one bare torch call,
priced on the host as a launch (:data:`~tpsim.layer.template.BARE_CALL`). Left out: whether
Transformer Engine's RMSNorm copies kv_a's non-contiguous slice first (T x r_kv, 4 MB).
"""
from __future__ import annotations

from .eager import ROPE, chain, copy_size
from .template import BARE_CALL


def _q(d) -> int:
    return d.heads * (d.dn + d.dr)


def _copy(B, name: str, cols, dep) -> str:
    """One copy kernel of (T, cols(d)), read and written (:func:`tpsim.layer.eager.copy_size`)."""
    return B.eltwise(name, lambda d: copy_size(d, cols(d)), (dep,), **BARE_CALL)


def _rope(B, name: str, cols, dep) -> str:
    """apply_rotary_emb's 3 kernels over (T, cols(d)) (module docstring)."""
    return chain(B, name, ROPE, lambda d: d.T, cols, dep, **BARE_CALL)


def query_fwd(B, q) -> str:
    """From q_up's output: q_pe's rope, then the query's concatenation."""
    q = _rope(B, "fwd.mla.q_rope", lambda d: d.heads * d.dr, q)
    return _copy(B, "fwd.mla.q_cat", _q, q)


def key_fwd(B, kv) -> str:
    """From kv_up's output: k_pe's rope, the key's concatenation, v made contiguous."""
    k = _rope(B, "fwd.mla.k_rope", lambda d: d.dr, kv)
    k = _copy(B, "fwd.mla.k_cat", _q, k)
    return _copy(B, "fwd.mla.v_contiguous", lambda d: d.heads * d.dv, k)


def query_bwd(B, grad) -> str:
    """From the attention's input gradient: q_pe's rope backward, split's concatenation."""
    q = _rope(B, "bwd.mla.q_rope", lambda d: d.heads * d.dr, grad)
    return _copy(B, "bwd.mla.q_cat", _q, q)


def key_bwd(B, grad) -> str:
    """expand's sum over the heads, k_pe's rope backward, split's two concatenations."""
    def head_sum(d):
        return d.T, d.dr, d.T * d.dr * (d.heads + 1) * d.bpe
    k = B.eltwise("bwd.mla.k_expand", head_sum, (grad,), **BARE_CALL)
    k = _rope(B, "bwd.mla.k_rope", lambda d: d.dr, k)
    k = _copy(B, "bwd.mla.kv_cat", lambda d: d.heads * (d.dn + d.dv), k)
    return _copy(B, "bwd.mla.kv_down_cat", lambda d: d.r_kv + d.dr, k)
