"""Rotary position embedding applied unfused, as Megatron-core does under YaRN's attention factor.

Megatron-core applies RoPE to the queries and keys in Transformer Engine's fused kernel
(``apply_rope_fusion``), one pass tpsim leaves inside the attention's preparation. With YaRN
(``position_embedding_type`` yarn) ``Attention.forward`` passes the attention factor
``mscale`` = ``_yarn_get_concentration_factor`` (0.1 ln(factor) + 1 when ``yarn_mscale`` and
``yarn_mscale_all_dim`` are unset; gpt-oss: factor 32, 1.347) and ``apply_rotary_pos_emb``
falls back to the unfused PyTorch code when mscale != 1 ("mscale ... is not supported by TE's
fused RoPE. Using unfused implementation"; Megatron-LM core_v0.17.0,
``megatron/core/models/common/embeddings/rope_utils.py``, ``yarn_rotary_pos_embedding.py``).
``_apply_rotary_pos_emb_bshd`` runs on q (T x q elements) and then k (T x kv), each call:

    cos_ = (cos(freqs) * mscale).to(dtype), sin_ likewise         6 kernels on the (s, d) fp32 freqs
    t * cos_ ; -x2 ; cat(-x2, x1) ; * sin_ ; + ; cat(t, t_pass)    6 kernels on t

(``t[..., :rot_dim]`` with rot_dim = d is ``t`` itself, no copy; ``t_pass`` is empty and the
last cat a copy). Bytes per element of t, B the activations' bytes: 2B, B (half the elements),
2B, 2B, 3B, 2B = 12B; per freqs element 8, 8, 4 + B (cos or sin, the product, the cast).
Autograd's backward, in reverse: the sin product's gradient 2B, the negation's B, the chunk's
gradient gathered into one tensor 2B, the cos product's gradient 2B, the two gradients of t
summed 3B; then the empty ``t_pass`` slice's ``SliceBackward0`` (``slice_backward``: a zeroed
gradient of t's whole shape, B written, and an empty copy) and the engine's add of it into t's
gradient, 3B (the full slice ``t[..., :rot_dim]`` is an alias, no kernel): 14B in 7 kernels
(the cats' backwards are views; cos_ and sin_ need no gradient, so nothing of t is kept;
read off PyTorch 2.13's autograd profile of this code). Each kernel is one bare torch call, priced on the host as a launch
(``host_launch_s``, :mod:`tpsim.sim.launches`), not as a module's op.
"""
from __future__ import annotations

from .eager import F32, chain
from .template import BARE_CALL

# (kernel, bytes per element of t in activation bytes, in fp32 bytes: none)
T_FWD = (("cos", 2, 0), ("neg", 1, 0), ("rotate", 2, 0), ("sin", 2, 0), ("add", 3, 0),
         ("cat", 2, 0))
T_BWD = (("sin", 2, 0), ("neg", 1, 0), ("split", 2, 0), ("cos", 2, 0), ("add", 3, 0),
         ("zeros", 1, 0), ("accumulate", 3, 0))
FREQS = ("cos", "cos.scale", "cos.to", "sin", "sin.scale", "sin.to")


def _freqs(B, name: str, dep) -> str:
    """cos and sin of the (s, d) fp32 angles, scaled by mscale and cast (``.to``): 6 kernels."""
    x = dep
    for kernel in FREQS:
        def size(d, kernel=kernel):
            per = F32 + d.bpe if kernel.endswith(".to") else 2 * F32
            return d.s, d.d, d.s * d.d * per
        x = B.eltwise(f"{name}.{kernel}", size, (x,), **BARE_CALL)
    return x


def _chain(B, name: str, kernels, width, dep) -> str:
    """``kernels`` over the (T, width(d)) tensor one after another, the last named ``name``,
    each a bare torch call (:func:`tpsim.layer.eager.chain`)."""
    return chain(B, name, kernels, _tokens, width, dep, **BARE_CALL)


def _tokens(d) -> int:
    return d.T


def _q(d) -> int:
    return d.q


def _kv(d) -> int:
    return d.kv


def unfused_fwd(B, dep) -> str:
    """RoPE on q, then on k, each after its own cos and sin (module docstring): 24 kernels."""
    x = _chain(B, "fwd.rope.q", T_FWD, _q, _freqs(B, "fwd.rope.q.freqs", dep))
    return _chain(B, "fwd.rope.k", T_FWD, _kv, _freqs(B, "fwd.rope.k.freqs", x))


def unfused_bwd(B, deps) -> str:
    """Autograd's kernels of the unfused RoPE on k's, then q's gradient: 14 kernels."""
    x = _chain(B, "bwd.rope.k", T_BWD, _kv, deps)
    return _chain(B, "bwd.rope.q", T_BWD, _q, x)
