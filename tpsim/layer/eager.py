"""PyTorch eager's elementwise kernels: a Llama layer as torchtitan runs it without torch.compile.

Transformer Engine and Megatron-core run a layer's elementwise work as a few fused kernels
(:mod:`tpsim.layer.graph`: one RMSNorm pass, one SwiGLU pass, rope inside the attention
kernel's preparation). PyTorch eager runs each tensor operation of the model code as a kernel
of its own, and autograd one or more per operation in the backward. The code is torchtitan's
Llama at the commit of its December 2024 H100 benchmarks (pytorch/torchtitan 9dec370,
``torchtitan/models/norms.py`` RMSNorm, ``torchtitan/models/llama/model.py``
``apply_rotary_emb``, ``repeat_kv``, ``Attention.forward``, ``FeedForward.forward``). Each
kernel is a memory-bound pass priced by its bytes (:class:`~tpsim.layer.ops.MemoryBound`); per
element of the tensor it runs over, with B the activations' bytes (2) and F = 4 (fp32):

* RMSNorm, ``self._norm(x.float()).type_as(x) * self.weight`` with ``_norm(x) = x *
  torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)``, on the (Tn, h) input: forward
  float (B+F), pow (2F), mean (F), + eps and rsqrt (per token), x * rsqrt (2F: the per-token
  factor broadcast), type_as (F+B), * weight (2B): 8 kernels, 36 bytes an element against the
  fused 2B. Backward, autograd's kernels in reverse: the weight's product and sum over tokens
  (3B, B), the input's product (2B), type_as (B+F), the rsqrt product (2F), its product with
  x and per-token sum (3F, F), rsqrt and + eps (per token), mean's expanded division (F),
  pow's 2 x g (3F), the sum of the two input gradients (3F), float (F+B): 13 kernels, 76
  bytes an element against the fused 3B.
* rope, ``view_as_complex(x.float()) * freqs_cis`` then ``type_as``, on q (T, q) and k
  (T, kv) each: float (B+F), the complex product (2F), type_as (F+B); its backward the same
  three in reverse: 6 kernels a direction, 20 bytes an element. Fused: none.
* ``repeat_kv`` (grouped-query attention, heads > kv_heads): ``expand`` + ``reshape`` copies
  k and v to every query head, reading kv and writing q elements a token each (B each); the
  backward sums the copies back (the same bytes). Fused kernels read the shared heads.
* ``output.transpose(1, 2).contiguous()`` after the attention: a copy of (T, q), 2B.
* SwiGLU, ``w2(F.silu(w1(x)) * w3(x))``, on (T, f): forward silu (2B) and the product (3B),
  10 bytes an element against the fused 3B; backward the product's two gradients (3B each)
  and silu's (3B): 18 against 5B. w1 and w3 are two GEMMs of width f where Megatron-core
  runs one of 2f: the same FLOPs, priced as one.

What autograd keeps of these kernels' outputs beyond the fused layer's is not counted
(torchtitan checkpoints activations, which recomputes them); the final norm of the model is
left fused.
"""
from __future__ import annotations

F32 = 4

# (name, bytes per element as (activation-bytes count, fp32-bytes count), per token only)
NORM_FWD = (("float", 1, 1), ("pow", 0, 2), ("mean", 0, 1), ("eps", 0, 2, True),
            ("rsqrt", 0, 2, True), ("scale", 0, 2), ("type_as", 1, 1), ("weight", 2, 0))
NORM_BWD = (("weight.product", 3, 0), ("weight.sum", 1, 0), ("weight", 2, 0),
            ("type_as", 1, 1), ("scale", 0, 2), ("scale.product", 0, 3), ("scale.sum", 0, 1),
            ("rsqrt", 0, 2, True), ("eps", 0, 2, True), ("mean", 0, 1), ("pow", 0, 3),
            ("sum", 0, 3), ("float", 1, 1))
ROPE = (("float", 1, 1), ("complex_mul", 0, 2), ("type_as", 1, 1))
SWIGLU_FWD = (("silu", 2, 0), ("mul", 3, 0))
SWIGLU_BWD = (("mul.gate", 3, 0), ("mul.up", 3, 0), ("silu", 3, 0))


def chain(B, name: str, kernels, rows, cols, dep, saved=None, forward_of=None,
          **issue) -> str:
    """The ``kernels`` (name, activation bytes, fp32 bytes per element[, per token]) one after
    another over a rows(d) x cols(d) tensor, the last named ``name`` (keeping ``saved``, the
    backward of ``forward_of``), the others ``name.kernel``; ``issue``: each kernel's
    ``host_ops`` and ``loop_ops`` (:meth:`~tpsim.layer.template.Builder.eltwise`)."""
    x = dep
    for i, (kernel, act, fp32, *per_token) in enumerate(kernels):
        last = i == len(kernels) - 1

        def size(d, act=act, fp32=fp32, per_token=bool(per_token)):
            n = rows(d) * (1 if per_token else cols(d))
            return rows(d), cols(d), n * (act * d.bpe + fp32 * F32)
        x = B.eltwise(name if last else f"{name}.{kernel}", size, (x,),
                      saved=saved if last else None, forward_of=forward_of if last else None,
                      **issue)
    return x


def _tokens(d) -> int:
    return d.Tn


def _hidden(d) -> int:
    return d.h


def norm_fwd(B, name: str, dep, saved) -> str:
    """Eager RMSNorm forward on the (Tn, h) layer input (module docstring): 8 kernels."""
    return chain(B, name, NORM_FWD, _tokens, _hidden, dep, saved=saved)


def norm_bwd(B, name: str, dep, forward_of: str) -> str:
    """Eager RMSNorm backward (module docstring): 13 kernels."""
    return chain(B, name, NORM_BWD, _tokens, _hidden, dep, forward_of=forward_of)


def rope_fwd(B, dep) -> str:
    """Rope on q, then k, then ``repeat_kv``'s copies of k and v (module docstring)."""
    q = chain(B, "fwd.rope.q", ROPE, lambda d: d.T, lambda d: d.q, dep)
    x = chain(B, "fwd.rope.k", ROPE, lambda d: d.T, lambda d: d.kv, q)
    return repeat_kv(B, "fwd.repeat_kv", x)


def rope_bwd(B, deps) -> str:
    """``repeat_kv``'s sums, then rope's backward on q and k (module docstring)."""
    x = repeat_kv(B, "bwd.repeat_kv", deps)
    q = chain(B, "bwd.rope.q", ROPE[::-1], lambda d: d.T, lambda d: d.q, x)
    return chain(B, "bwd.rope.k", ROPE[::-1], lambda d: d.T, lambda d: d.kv, q)


def repeat_kv(B, name: str, dep, forward_of: str | None = None, host_ops: int = 1) -> str:
    """k and v each: read T x kv, write T x q elements (none without grouped queries); a
    backward's sums name ``forward_of``'s ``.k`` and ``.v``; ``host_ops``: each one's."""
    def size(d):
        n = d.T * (d.q + d.kv) * d.bpe if d.heads > d.kv_heads else 0
        return d.T, d.q, n
    of = (lambda part: f"{forward_of}.{part}") if forward_of else (lambda part: None)
    k = B.eltwise(f"{name}.k", size, (dep,), forward_of=of("k"), host_ops=host_ops)
    return B.eltwise(f"{name}.v", size, (k,), forward_of=of("v"), host_ops=host_ops)


def copy_size(d, cols) -> tuple:
    """A copy of (T, cols): rows, columns, bytes read and written."""
    return d.T, cols, 2 * d.T * cols * d.bpe


def contiguous(B, dep) -> str:
    """The attention output made contiguous: read and write (T, q)."""
    return B.eltwise("fwd.attn.contiguous", lambda d: copy_size(d, d.q), (dep,))


def swiglu_fwd(B, dep, saved) -> str:
    """silu, then the product (module docstring); the last is ``fwd.act``."""
    return chain(B, "fwd.act", SWIGLU_FWD, lambda d: d.T, lambda d: d.f, dep, saved=saved)


def swiglu_bwd(B, dep) -> str:
    """The product's two gradients, then silu's; the last is ``bwd.act``."""
    return chain(B, "bwd.act", SWIGLU_BWD, lambda d: d.T, lambda d: d.f, dep,
                  forward_of="fwd.act")
