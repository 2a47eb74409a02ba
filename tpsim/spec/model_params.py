"""Parameter counts of a whole model, dense or mixture-of-experts, with or without multi-head
latent attention: what :meth:`tpsim.spec.model.ModelConfig.params` and ``active_params`` return.

Per layer, with h = hidden, n_in = 1 (GeLU) or 2 (SwiGLU: gate and up):

* attention, grouped-query: ``2 q h + 2 kv h`` (q = heads x head_dim, kv = kv_heads x head_dim),
  biases ``q + 2 kv + h``;
* attention, multi-head latent (DeepSeek-V2/V3, ``kv_lora_rank`` set): with r_q, r_kv the
  query and key/value ranks, d_n, d_r, d_v the no-position, rotary and value head widths,
  H heads (DeepSeek-V3 report, section 2.1.1; ``modeling_deepseek.py``)::

      r_q (h + H (d_n + d_r)) + r_q           queries down, up and the norm between (r_q set)
      | h H (d_n + d_r)                       queries projected directly (no r_q)
      + h (r_kv + d_r) + r_kv                 keys/values down (+ the shared rotary key), norm
      + r_kv H (d_n + d_v) + H d_v h          keys/values up, output

* an MLP of inner width f: ``(n_in + 1) h f``, biases ``n_in f + h``;
* an MoE layer: the router ``h E`` (bias E), E routed experts of width f_e, S shared ones of
  width f_s (each an MLP as above);
* two norms.

A layer i is MoE when the model has experts, ``i >= first_dense_layers`` and
``i % moe_layer_freq == 0`` (DeepSeek's ``first_k_dense_replace`` and ``moe_layer_freq``).

Active parameters per token: every weight a token meets, i.e. all of the above but only k =
``experts_per_token`` of the E routed experts, plus the token embedding (unless
``embedding=False``: OpenAI counts gpt-oss's 5.1B without it, a lookup multiplies nothing) and
the output layer.
"""
from __future__ import annotations


def attention_params(m) -> int:
    """Attention weights (and biases) of one layer; see the module docstring."""
    h = m.hidden
    if m.kv_lora_rank is None:
        n = 2 * m.q_width * h + 2 * m.kv_width * h
        return n + (m.q_width + 2 * m.kv_width + h if m.bias else 0)
    heads, nope, rope, v = m.heads, m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
    q_head = nope + rope
    q = (m.q_lora_rank * (h + heads * q_head) + m.q_lora_rank if m.q_lora_rank
         else h * heads * q_head)
    kv = h * (m.kv_lora_rank + rope) + m.kv_lora_rank + m.kv_lora_rank * heads * (nope + v)
    return q + kv + heads * v * h


def mlp_params(m, width: int) -> int:
    """One MLP (or one expert) of inner ``width``: (n_in + 1) h f, biases n_in f + h."""
    h, n_in = m.hidden, m.mlp_in_gemms
    return (n_in + 1) * h * width + (n_in * width + h if m.bias else 0)


def is_moe_layer(m, i: int) -> bool:
    """Layer ``i`` (from 0) carries experts; see the module docstring."""
    return bool(m.experts) and i >= m.first_dense_layers and i % m.moe_layer_freq == 0


def moe_layers(m) -> int:
    """How many of the model's layers carry experts: the multiples of moe_layer_freq in
    [first_dense_layers, layers), counted without a loop (layers may be 2^31 - 1)."""
    if not m.experts or m.first_dense_layers >= m.layers:
        return 0
    freq = m.moe_layer_freq
    return (m.layers - 1) // freq - -(-m.first_dense_layers // freq) + 1


def moe_mlp_params(m, routed: int) -> int:
    """Router, ``routed`` routed experts and the shared experts of one MoE layer."""
    router = m.hidden * m.experts + (m.experts if m.bias else 0)
    shared = m.shared_experts * mlp_params(m, m.shared_expert_ffn_hidden) if m.shared_experts else 0
    return router + routed * mlp_params(m, m.expert_ffn_hidden) + shared


def model_params(m, active: bool = False, embedding: bool = True) -> int:
    """All parameters (``active``: those one token meets, k of the E routed experts); the
    token embedding counted unless ``embedding`` is False (then only the output layer, or the
    tied table once); see the module docstring."""
    sparse = moe_layers(m)
    dense = m.layers - sparse
    common = m.layers * (attention_params(m) + 2 * m.norm_params)
    mlps = dense * mlp_params(m, m.ffn_hidden)
    if sparse:
        mlps += sparse * moe_mlp_params(m, m.experts_per_token if active else m.experts)
    vocab = m.vocab_params(m.vocab) if embedding else m.vocab * m.hidden
    return common + mlps + vocab + m.norm_params


def moe_layers_in(m, start: int, count: int) -> int:
    """How many of layers start .. start + count - 1 carry experts (:func:`is_moe_layer`),
    without a loop: the multiples of moe_layer_freq in [max(start, first_dense_layers),
    start + count)."""
    if not m.experts or count <= 0:
        return 0
    lo, hi, freq = max(start, m.first_dense_layers), start + count, m.moe_layer_freq
    return max(0, (hi - 1) // freq - -(-lo // freq) + 1) if lo < hi else 0


def moe_layer_params(m, tp: int, ep: int = 1, etp: int | None = None) -> int:
    """Parameters of one MoE layer on one of ``tp`` ranks, biases not priced (the slot has
    none); every expert local (EP 1) and each split over the TP group (expert TP = tp):

        layer_params(tp) - (n_in + 1) h f / tp                   attention and norms
          + h E                                                  router, whole on every rank
          + E (n_in + 1) h f_e / tp  +  S (n_in + 1) h f_s / tp  routed and shared experts

    With ``ep`` > 1 or an expert TP ``etp`` other than tp (Megatron-core's folding,
    :mod:`tpsim.spec.folding`) the routed experts are :func:`expert_params` instead: E / ep
    of them, each 1/etp wide; the shared ones stay split over tp."""
    n = m.mlp_in_gemms + 1
    shared = m.shared_experts * n * m.hidden * (m.shared_expert_ffn_hidden or 0)
    dense = m.layer_params(tp) - n * m.hidden * m.ffn_hidden // tp + m.hidden * m.experts
    if ep == 1 and etp in (None, tp):
        return dense + (m.experts * n * m.hidden * m.expert_ffn_hidden + shared) // tp
    return dense + shared // tp + expert_params(m, ep, etp)


def expert_params(m, ep: int, etp: int) -> int:
    """The routed experts' parameters of one MoE layer on one rank: E / ep experts of
    (n_in + 1) h f_e / etp each (reduced over the expert-DP group)."""
    return m.experts // ep * (m.mlp_in_gemms + 1) * m.hidden * (m.expert_ffn_hidden // etp)
