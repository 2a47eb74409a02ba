"""FLOP conventions: tpsim's own count (MFU's numerator) and Megatron-LM's published one.

tpsim counts the FLOPs the model needs, summed over the ops of the step
(:mod:`tpsim.layer.ops`): 2mnk per GEMM (the output layer's logits included), and for causal
attention only the (query, key) pairs on or below the diagonal, s (s + 1) / 2 per sequence and
head: 4 b s (s + 1) / 2 heads head_dim forward, twice that backward. Recomputed ops count in
the hardware FLOPs (HFU), not the model FLOPs (MFU); norms, softmax and elementwise kernels
count in neither.

Published TFLOP/s per GPU come from Megatron-LM's ``num_floating_point_operations``
(megatron/training/training.py) divided by the step time and the GPUs. For a dense model of L
layers, hidden h, q = heads head_dim query and k = kv_heads head_dim key/value widths, ffn
width f (n_in = 2 GEMM inputs with SwiGLU, else 1), padded vocabulary V, B sequences of s tokens:

    F = 6 B s [L (h (q + 2k) + q h + (n_in + 1) h f) + h V] + c 6 B s^2 q L

with c = 1 since ADLR/megatron-lm!2789 (commit 8873b55, March 2025: "only half of the
attention matrix is non-zero"; Megatron-core 0.12 on) and c = 2 before it (the full square of
Narayanan et al. 2021, eq. 3, which the papers' and the Megatron-LM README's TFLOP/s use).
A model with experts (Megatron-LM's count for MoE, same function): each of its L_moe MoE
layers' MLP term is (n_in + 1) h (k f_e + S f_s), the k routed experts a token meets and the
S shared ones (the router's h E is not counted), the L - L_moe dense layers keep f. tpsim's
own count is by active parameters too: the grouped expert GEMMs run on the T k routed rows of
a balanced router (:mod:`tpsim.layer.moe`), so MFU counts each token's top-k experts, not all
E.

Multi-head latent attention (Megatron-LM's ``multi_latent_attention`` branch): each layer's
attention term h (q + 2k) + q h becomes

    r_q (h + H (d_n + d_r) + 1)  [no r_q: h H (d_n + d_r)]  +  r_kv (h + H (d_n + d_v) + 1)
      + h d_r  +  H d_v h

(the +1: the RMSNorms), and the core c 6 B s^2 q L becomes c 6 B s^2 H (d_n + d_r + d_v) L / 2.

Multi-token prediction (``mtp_layers`` D, Megatron-LM's ``args.mtp_num_layers``): D more
layers of the last layer's kind (L + D in every term above), each with its two norms, final
norm and eh_proj, 6 (3 h + 2 h^2) a token, and D more passes of the logits, h V (1 + D).

tpsim's own count differs from c = 1 only by its s (s + 1) / 2 pairs against s^2 / 2 and by
what the model leaves out (biases, the embedding lookup), a few parts in 10^4 at s = 2048.
"""
from __future__ import annotations

import dataclasses

from ..spec.model_params import is_moe_layer, moe_layers


def megatron_flops(model, global_batch: int, seq_len: int, tp: int = 1,
                   full_square: bool = False, mtp_layers: int = 0) -> float:
    """Megatron-LM's num_floating_point_operations for one step of ``global_batch`` sequences
    of ``seq_len`` tokens (module docstring); ``full_square``: its count before March 2025;
    ``mtp_layers``: the multi-token-prediction layers trained. The vocabulary is padded as
    Megatron pads it for ``tp`` ranks."""
    h, L, s, B = model.hidden, model.layers + mtp_layers, seq_len, global_batch
    q, k = model.heads * model.head_dim, model.kv_heads * model.head_dim
    sparse = moe_layers(model) + mtp_layers * is_moe_layer(model, model.layers - 1)
    width = (L - sparse) * model.ffn_hidden
    if sparse:
        width += sparse * (model.experts_per_token * model.expert_ffn_hidden
                           + model.shared_experts * (model.shared_expert_ffn_hidden or 0))
    mlp = (model.mlp_in_gemms + 1) * h * width
    ends = mtp_layers * (3 * h + 2 * h * h) + (1 + mtp_layers) * h * model.padded_vocab(tp)
    per_token = L * (h * (q + 2 * k) + q * h) + mlp + ends
    if model.mla:
        H, nope, rope, v = model.heads, model.qk_nope_head_dim, model.qk_rope_head_dim, \
            model.v_head_dim
        r_q, r_kv = model.q_lora_rank, model.kv_lora_rank
        q_term = r_q * (h + H * (nope + rope) + 1) if r_q else h * H * (nope + rope)
        attn = q_term + r_kv * (h + H * (nope + v) + 1) + h * rope + H * v * h
        per_token = L * attn + mlp + ends
        q = H * (nope + rope + v) / 2
    core = (2 if full_square else 1) * s * s * q * L
    return 6.0 * B * (s * per_token + core)


def with_megatron_tflops(step, m, lay, par, mtp_layers: int = 0):
    """``step`` with Megatron-LM's TFLOP/s per GPU (:func:`megatron_flops` of Layout ``lay``'s
    run with ``mtp_layers`` multi-token-prediction layers, / GPUs / step time), its count since
    and before March 2025."""
    def per_gpu(full_square: bool) -> float:
        flops = megatron_flops(m, lay.global_batch, lay.seq_len, lay.tp, full_square, mtp_layers)
        return flops / par.world / step.time_s / 1e12
    return dataclasses.replace(step, megatron_tflops_per_gpu=per_gpu(False),
                               megatron_full_square_tflops_per_gpu=per_gpu(True))
