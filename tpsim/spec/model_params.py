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
    return mla_params(m)


def mla_params(m, tp: int = 1) -> int:
    """Multi-head latent attention's weights on one of ``tp`` ranks, split as Megatron-core's
    MLASelfAttention: the down projections and their norms whole on every rank
    (``parallel_mode="duplicated"``), the up and output projections split by tp::

        whole = r_q h + r_q  +  h (r_kv + d_r) + r_kv        (no r_q: no query down projection)
        split = r_q H (d_n + d_r)  (no r_q: h H (d_n + d_r))  +  r_kv H (d_n + d_v)  +  H d_v h
        whole + split / tp
    """
    h, heads, r_q, r_kv = m.hidden, m.heads, m.q_lora_rank, m.kv_lora_rank
    nope, rope, v = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim
    split = (r_q or h) * heads * (nope + rope) + r_kv * heads * (nope + v) + heads * v * h
    return mla_duplicated_params(m) + split // tp


def mla_duplicated_params(m) -> int:
    """MLA's weights whole on every TP rank: r_q h + r_q (if r_q) + h (r_kv + d_r) + r_kv."""
    h, r_q, r_kv = m.hidden, m.q_lora_rank, m.kv_lora_rank
    return (r_q * h + r_q if r_q else 0) + h * (r_kv + m.qk_rope_head_dim) + r_kv


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


def router_params(m) -> int:
    """The router's gating weight h E, and its bias E with biases (gpt-oss)."""
    return m.hidden * m.experts + (m.experts if m.bias else 0)


def moe_mlp_params(m, routed: int) -> int:
    """Router, ``routed`` routed experts and the shared experts of one MoE layer."""
    shared = m.shared_experts * mlp_params(m, m.shared_expert_ffn_hidden) if m.shared_experts else 0
    return router_params(m) + routed * mlp_params(m, m.expert_ffn_hidden) + shared


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


def moe_layer_params(m, tp: int, ep: int = 1, etp: int | None = None,
                     gate_weight: bool = True) -> int:
    """Parameters of one MoE layer on one of ``tp`` ranks; every expert local (EP 1) and each
    split over the TP group (expert TP = tp):

        layer_params(tp) - (n_in + 1) h f / tp                   attention and norms
          + h E                                                  router, whole on every rank
          + E (n_in + 1) h f_e / tp  +  S (n_in + 1) h f_s / tp  routed and shared experts

    with biases (gpt-oss) layer_params' MLP biases (n_in f / tp + h) out and the router's E,
    each expert's n_in f_e / tp + h (fc1's split, fc2's whole, as Transformer Engine's
    GroupedLinear holds them) and the shared experts' n_in S f_s / tp + h in. With ``ep`` > 1
    or an expert TP ``etp`` other than tp (Megatron-core's folding, :mod:`tpsim.spec.folding`)
    the routed experts are :func:`expert_params` instead: E / ep of them, each 1/etp wide;
    the shared ones stay split over tp. Without ``gate_weight`` (AutoModel's FakeBalancedGate,
    :mod:`tpsim.spec.fake_gate`) the router's :func:`router_params` are not held."""
    n, h = m.mlp_in_gemms + 1, m.hidden
    shared = m.shared_experts * n * h * (m.shared_expert_ffn_hidden or 0)
    dense = m.layer_params(tp) - n * h * m.ffn_hidden // tp + (router_params(m) if gate_weight
                                                                else 0)
    if m.bias:
        fs = m.shared_experts * (m.shared_expert_ffn_hidden or 0)
        dense += -(m.mlp_in_gemms * m.ffn_hidden // tp + h) \
            + ((m.mlp_in_gemms * fs // tp + h) if fs else 0)
    if ep == 1 and etp in (None, tp):
        return dense + (m.experts * n * h * m.expert_ffn_hidden + shared) // tp \
            + _expert_biases(m, 1, tp)
    return dense + shared // tp + expert_params(m, ep, etp)


def expert_params(m, ep: int, etp: int) -> int:
    """The routed experts' parameters of one MoE layer on one rank: E / ep experts of
    (n_in + 1) h f_e / etp each, with biases n_in f_e / etp + h more (reduced over the
    expert-DP group)."""
    return (m.experts // ep * (m.mlp_in_gemms + 1) * m.hidden * (m.expert_ffn_hidden // etp)
            + _expert_biases(m, ep, etp))


def _expert_biases(m, ep: int, etp: int) -> int:
    """E / ep (n_in f_e / etp + h): the routed experts' biases on one rank (0 without)."""
    return m.experts // ep * (m.mlp_in_gemms * m.expert_ffn_hidden // etp + m.hidden) \
        if m.bias else 0


def mtp_params(m, own_vocab: bool = True) -> int:
    """The multi-token-prediction modules' parameters (DeepSeek-V3 report, section 2.2), each
    a projection of [norm(h); norm(embedding)] (2h -> h), its two RMSNorms, one transformer
    layer of the last layer's kind and a final norm; ``own_vocab``: plus its own embedding and
    output head, as the released checkpoint stores them (they are shared in the model):

        mtp_layers (2 h^2 + 3 norm + layer (+ embedding and output layer))
    """
    last = m.layers - 1
    layer = (attention_params(m) + 2 * m.norm_params
             + (moe_mlp_params(m, m.experts) if is_moe_layer(m, last)
                else mlp_params(m, m.ffn_hidden)))
    vocab = m.vocab_params(m.vocab) if own_vocab else 0
    return m.mtp_layers * (mtp_module_params(m) + layer + vocab)


def mtp_module_params(m, tp: int = 1) -> int:
    """One multi-token-prediction depth's own parameters on one of ``tp`` ranks (Megatron-core's
    ``MultiTokenPredictionLayer``): eh_proj, column-parallel, and its three norms (enorm,
    hnorm, final), whole on every rank:

        2 h^2 / tp + 3 norm
    """
    return 2 * m.hidden * m.hidden // tp + 3 * m.norm_params


def _multiples(m: int, lo: int, hi: int) -> int:
    """How many multiples of ``m`` lie in [lo, hi)."""
    return max(0, (hi - 1) // m - -(-lo // m) + 1) if lo < hi else 0


def layer_kinds(m) -> tuple[tuple[int, bool, int], ...]:
    """(count, carries experts, attention window; 0: full) of each kind of layer the model has,
    the MoE kinds first, full attention before sliding; counted without a loop. A layer i uses
    the ``sliding_window`` when i % sliding_window_freq == 0; it is MoE by :func:`is_moe_layer`,
    so both hold for the multiples of lcm(moe_layer_freq, sliding_window_freq) from
    first_dense_layers on."""
    import math
    sparse = moe_layers(m)
    w, n = m.sliding_window or 0, m.sliding_window_freq
    sliding = _multiples(n, 0, m.layers) if w else 0
    both = (_multiples(math.lcm(n, m.moe_layer_freq), m.first_dense_layers, m.layers)
            if w and sparse else 0)
    kinds = ((sparse - both, True, 0), (both, True, w),
             (m.layers - sparse - sliding + both, False, 0), (sliding - both, False, w))
    return tuple(k for k in kinds if k[0])


def plain_params(m, tp: int, layers: int, first: bool, last: bool) -> int:
    """Parameters of a pipeline stage on one of ``tp`` ranks that no Transformer Engine linear
    holds, so none has a quantized copy (:func:`tpsim.spec.precision.weights_bytes`):

        (first) embedding  +  (last) final norm + output layer  +  layers x 2 norms

    (:meth:`~tpsim.spec.model.ModelConfig.stage_params`' ends; a tied output layer on the
    embedding's stage is the embedding)."""
    return ((m.embedding_params(tp) if first else 0) + (m.output_params(tp, first) if last else 0)
            + 2 * layers * m.norm_params)
