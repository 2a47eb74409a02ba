"""Memory per GPU when serving: weights, the KV cache, the prefill's activations.

Closed forms, per GPU of a TP group of ``tp`` ranks in a pipeline of ``pp`` stages, each stage
holding n_L = ceil(layers / pp) layers (the largest stage):

* weights = n_L (W_lin bpe_w + 2 norm bpe_a) + ends bpe_a, where W_lin = layer_params(tp) -
  2 norm are one layer's linear weights on one rank (query, output and MLP split by tp; keys
  and values of kv_heads_per_rank(tp) heads, replicated when tp > kv_heads) in the GEMMs'
  dtype (fp8: 1 byte), and the norms, the token embedding and the output layer (padded
  vocab / tp rows each; both on one stage when pp = 1, one of them per end stage otherwise)
  stay in the activation dtype, as fp8 checkpoints keep them;
  A mixture-of-experts layer holds, instead of the MLP, the router h E (whole on every rank),
  its E / ep experts (each split by tp) and the shared experts (split by tp); multi-head
  latent attention its down projections and their norms whole (duplicated on every TP rank,
  as Megatron-core's MLASelfAttention) and the up and output projections split by tp
  (:func:`layer_weights`); the largest stage is taken to hold min(n_L, MoE layers) MoE layers;
* KV cache = (batch / ep) (prompt + gen - 1) x kv_bytes_per_token, with
  kv_bytes_per_token = 2 n_L kv_heads_per_rank(tp) head_dim bpe_kv (keys and values), or
  under MLA n_L (kv_lora_rank + qk_rope_head_dim) bpe_kv, the latent every TP rank caches
  whole (:mod:`tpsim.layer.infer_mla`): the cache holds every prompt token and every
  generated one but the last, which is never fed; each of ep attention replicas holds the
  cache of its batch / ep sequences;
* activations = (batch / pp) prompt (h + (n_in + 1) f / tp) bpe_a: the prefill's widest live
  set, the residual stream beside the MLP's fc1 output (n_in = 2 for SwiGLU) and its
  activation (serving engines size this by profiling one dummy prefill);
* max_batch = floor((usable - weights) / (per-sequence KV + activations + waste)), all linear
  in the batch; pp > 1 rounds it down to a multiple of pp. ``usable`` is the device's memory
  less the reserve (CUDA context, NCCL buffers) and the server's headroom, less the caching
  allocator's waste on the bytes that churn, the activations, ``waste`` per sequence
  (:meth:`tpsim.cluster.topology.Device.usable_bytes`): the weights and the KV cache, one pool
  allocated at start, fragment nothing; ``reserved_bytes`` = capacity - usable.
"""
from __future__ import annotations

import math

from .result import InferMemory
from ..layer.infer_mla import mla_cache_width
from ..spec.model_params import layer_kinds, moe_layers
from ..cluster.topology import BYTES_PER_ELEMENT


def layer_weights(model, tp: int, ep: int, moe: bool) -> int:
    """Linear weights of one layer on one GPU (module docstring): layer_params(tp) - 2 norms
    (MLA's down projections and their norms included), the MoE slot replacing the MLP (with
    biases: the router's E and each local expert's n_in f_e / tp + h)."""
    h, n = model.hidden, model.mlp_in_gemms + 1
    linear = model.layer_params(tp) - 2 * model.norm_params
    if moe:
        shared = model.shared_experts * (model.shared_expert_ffn_hidden or 0)
        routed = model.experts // ep * model.expert_ffn_hidden
        linear += h * model.experts + n * h * (routed + shared) // tp - n * h * model.ffn_hidden // tp
        if model.bias:  # the router's and the local experts' biases replace the MLP's
            n_in, experts = model.mlp_in_gemms, model.experts // ep
            linear += (model.experts + experts * (n_in * model.expert_ffn_hidden // tp + h)
                       - n_in * model.ffn_hidden // tp - h)
    return linear


def weights_per_gpu(model, tp: int, pp: int, dtype: str, act_dtype: str, ep: int = 1) -> float:
    """Bytes of weights on the largest pipeline stage's GPUs (module docstring)."""
    layers = math.ceil(model.layers / pp)
    norms = 2 * model.norm_params
    sparse = min(layers, moe_layers(model))
    vocab_rows = model.padded_vocab(tp) // tp
    ends = (model.vocab_params(vocab_rows) if pp == 1 else vocab_rows * model.hidden)
    ends += model.norm_params
    bw, ba = BYTES_PER_ELEMENT[dtype], BYTES_PER_ELEMENT[act_dtype]
    dense = (layers - sparse) * (layer_weights(model, tp, ep, False) * bw + norms * ba)
    if sparse:
        dense += sparse * (layer_weights(model, tp, ep, True) * bw + norms * ba)
    return float(dense + ends * ba)


def kv_bytes_per_token(model, tp: int, pp: int, kv_dtype: str) -> float:
    """2 ceil(layers/pp) kv_heads_per_rank(tp) head_dim bpe_kv: one token's keys and values;
    MLA: ceil(layers/pp) (kv_lora_rank + qk_rope_head_dim) bpe_kv, on every TP rank."""
    width = (mla_cache_width(model) if model.mla
             else 2 * model.kv_heads_per_rank(tp) * model.head_dim)
    return float(math.ceil(model.layers / pp) * width * BYTES_PER_ELEMENT[kv_dtype])


def kv_bytes_per_sequence(model, per_token: float, pp: int, context: int) -> float:
    """The cache of one sequence of ``context`` tokens: context x per_token, except that the
    stage's sliding-window layers keep only their last ``sliding_window`` tokens (vLLM's
    hybrid KV cache manager): of the n_L layers, n_w = n_L - min(n_L, full-attention layers)
    (the largest stage taken to hold them all) cost min(context, window) tokens each."""
    if not model.sliding_window:
        return context * per_token
    layers = math.ceil(model.layers / pp)
    full = sum(n for n, _, w in layer_kinds(model) if not w)
    windowed = layers - min(layers, full)
    keep = min(context, model.sliding_window)
    return per_token / layers * ((layers - windowed) * context + windowed * keep)


def activations_per_sequence(model, tp: int, pp: int, prompt: int, act_dtype: str) -> float:
    """prompt (h + (n_in + 1) f/tp) bpe_a / pp: one sequence's share of the prefill's widest
    activations (module docstring)."""
    width = model.hidden + (model.mlp_in_gemms + 1) * model.ffn_hidden // tp
    return prompt * width * BYTES_PER_ELEMENT[act_dtype] / pp


def serving_memory(model, tp: int, pp: int, batch: int, prompt: int, gen: int, dtype: str,
                   act_dtype: str, kv_dtype: str, capacity: float,
                   usable=None, ep: int = 1, draft: tuple[float, float] = (0.0, 0.0)
                   ) -> InferMemory:
    """Weights, KV cache and activations per GPU, whether they fit and the largest batch that
    does (module docstring); with ``ep`` attention replicas a GPU holds batch / ep sequences.
    ``usable(churned)``: the bytes tensors may take beside ``churned`` bytes of activations, as
    :meth:`tpsim.cluster.topology.Device.usable_bytes`, linear in them (None: all of
    ``capacity``). ``draft``: a speculative draft's (weights, KV bytes per token) on each GPU
    (:func:`tpsim.serving.speculative.draft_memory`), its cache as long as the target's."""
    weights = weights_per_gpu(model, tp, pp, dtype, act_dtype, ep) + draft[0]
    batch //= ep
    per_token = kv_bytes_per_token(model, tp, pp, kv_dtype)
    kv_seq = (kv_bytes_per_sequence(model, per_token, pp, prompt + gen - 1)
              + (prompt + gen - 1) * draft[1])
    per_token += draft[1]
    act_seq = activations_per_sequence(model, tp, pp, prompt, act_dtype)
    kv, act = batch * kv_seq, batch * act_seq
    total = weights + kv + act
    space = usable or (lambda churned: capacity)
    room, waste_seq = space(0.0) - weights, space(0.0) - space(act_seq)
    most = max(0, math.floor(room / (kv_seq + act_seq + waste_seq))) if room > 0 else 0
    return InferMemory(weights, kv, per_token, act, total, capacity, capacity - space(act),
                       total <= space(act), (most - most % pp) * ep)
