"""QK-norm: an RMSNorm over each head's query and key before the attention (Qwen3).

Megatron-core's ``SelfAttention.get_query_key_value_tensors``
(``megatron/core/transformer/attention.py``): with ``qk_layernorm`` (which Megatron-Bridge's
Qwen3 and Qwen3-MoE providers set: ``models/qwen/qwen3_bridge.py``, ``qwen3_moe_bridge.py``)
the QKV output, split into the query [s, b, heads, d] and the key [s, b, kv_heads, d], goes
through ``query = self.q_layernorm(query)`` and ``key = self.k_layernorm(key)``: two
Transformer Engine RMSNorms (``TENorm``) over the head width d, each one module call on the
host and one kernel forward (read x, write y) and one backward (read x and dy, write dx; the
weight gradient's partial sums ride along, as for the layer's own norms), on the rank's
T = b s tokens (all of them: after the QKV GEMM, whose SP all-gather came before it):

    forward    q_norm  2 T q bpe       k_norm  2 T kv bpe
    backward   q_norm  3 T q bpe       k_norm  3 T kv bpe

q = heads/tp x d and kv = kv_heads/tp x d per rank, bpe the activations' bytes; each keeps its
input for its backward (T q and T kv elements; the rows' fp32 reciprocal RMS, 4 bytes a head
and token, left out as for the layer's norms). The 2 d weights are not counted in the
parameters (under 1e-5 of a Qwen3 layer's). Priced in the training layer
(:func:`tpsim.layer.graph.layer_template`); the serving layer (:mod:`tpsim.layer.infer_graph`,
whose engines fuse their own norms and rotary embedding) leaves it out.
"""
from __future__ import annotations

from .template import Builder

# (name, width of the normalised tensor on one rank: query or key)
NORMS = (("q_norm", lambda d: d.q), ("k_norm", lambda d: d.kv))


def qk_norm_fwd(B: Builder, qkv: str) -> str:
    """The query's and the key's norms after the QKV GEMM ``qkv``; returns the key norm's name
    (the attention waits for both, the query's issued first)."""
    x = qkv
    for name, width in NORMS:
        x = B.eltwise(f"fwd.{name}", lambda d, w=width: (d.T, w(d), 2 * d.T * w(d) * d.bpe),
                      (x,), saved=lambda d, w=width: d.T * w(d) * d.bpe)
    return x


def qk_norm_bwd(B: Builder, grads: tuple) -> tuple:
    """The key's and the query's norm backward after the attention's ``grads``; returns the
    last one's name as the QKV GEMM's gradient input."""
    x = grads
    for name, width in reversed(NORMS):
        x = (B.eltwise(f"bwd.{name}", lambda d, w=width: (d.T, w(d), 3 * d.T * w(d) * d.bpe),
                       x, forward_of=f"fwd.{name}"),)
    return x
