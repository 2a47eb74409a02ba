"""Memory per GPU when serving: weights, the KV cache, the prefill's activations.

Closed forms, per GPU of a TP group of ``tp`` ranks in a pipeline of ``pp`` stages, each stage
holding n_L = ceil(layers / pp) layers (the largest stage):

* weights = n_L (W_lin bpe_w + 2 norm bpe_a) + ends bpe_a, where W_lin = layer_params(tp) -
  2 norm are one layer's linear weights on one rank (query, output and MLP split by tp; keys
  and values of kv_heads_per_rank(tp) heads, replicated when tp > kv_heads) in the GEMMs'
  dtype (fp8: 1 byte), and the norms, the token embedding and the output layer (padded
  vocab / tp rows each; both on one stage when pp = 1, one of them per end stage otherwise)
  stay in the activation dtype, as fp8 checkpoints keep them;
* KV cache = batch (prompt + gen - 1) x kv_bytes_per_token, with
  kv_bytes_per_token = 2 n_L kv_heads_per_rank(tp) head_dim bpe_kv (keys and values): the
  cache holds every prompt token and every generated one but the last, which is never fed;
* activations = (batch / pp) prompt (h + (n_in + 1) f / tp) bpe_a: the prefill's widest live
  set, the residual stream beside the MLP's fc1 output (n_in = 2 for SwiGLU) and its
  activation (serving engines size this by profiling one dummy prefill);
* max_batch = floor((usable - weights) / (per-sequence KV + activations)), both linear in
  the batch; pp > 1 rounds it down to a multiple of pp. ``usable`` is the device's memory less
  the reserve (CUDA context, NCCL buffers, the allocator's fragmentation) and the server's
  headroom (:meth:`tpsim.cluster.topology.Device.usable_bytes`); ``reserved_bytes`` = capacity -
  usable.
"""
from __future__ import annotations

import math

from .result import InferMemory
from ..cluster.topology import BYTES_PER_ELEMENT


def weights_per_gpu(model, tp: int, pp: int, dtype: str, act_dtype: str) -> float:
    """Bytes of weights on the largest pipeline stage's GPUs (module docstring)."""
    layers = math.ceil(model.layers / pp)
    norms = 2 * model.norm_params
    linear = model.layer_params(tp) - norms
    vocab_rows = model.padded_vocab(tp) // tp
    ends = (model.vocab_params(vocab_rows) if pp == 1 else vocab_rows * model.hidden)
    ends += model.norm_params
    bw, ba = BYTES_PER_ELEMENT[dtype], BYTES_PER_ELEMENT[act_dtype]
    return float(layers * (linear * bw + norms * ba) + ends * ba)


def kv_bytes_per_token(model, tp: int, pp: int, kv_dtype: str) -> float:
    """2 ceil(layers/pp) kv_heads_per_rank(tp) head_dim bpe_kv: one token's keys and values."""
    return float(2 * math.ceil(model.layers / pp) * model.kv_heads_per_rank(tp)
                 * model.head_dim * BYTES_PER_ELEMENT[kv_dtype])


def activations_per_sequence(model, tp: int, pp: int, prompt: int, act_dtype: str) -> float:
    """prompt (h + (n_in + 1) f/tp) bpe_a / pp: one sequence's share of the prefill's widest
    activations (module docstring)."""
    width = model.hidden + (model.mlp_in_gemms + 1) * model.ffn_hidden // tp
    return prompt * width * BYTES_PER_ELEMENT[act_dtype] / pp


def serving_memory(model, tp: int, pp: int, batch: int, prompt: int, gen: int, dtype: str,
                   act_dtype: str, kv_dtype: str, capacity: float,
                   usable: float | None = None) -> InferMemory:
    """Weights, KV cache and activations per GPU, whether they fit and the largest batch that
    does (module docstring)."""
    weights = weights_per_gpu(model, tp, pp, dtype, act_dtype)
    per_token = kv_bytes_per_token(model, tp, pp, kv_dtype)
    kv_seq = (prompt + gen - 1) * per_token
    act_seq = activations_per_sequence(model, tp, pp, prompt, act_dtype)
    kv, act = batch * kv_seq, batch * act_seq
    total = weights + kv + act
    usable = capacity if usable is None else usable
    room = usable - weights
    most = max(0, math.floor(room / (kv_seq + act_seq))) if room > 0 else 0
    return InferMemory(weights, kv, per_token, act, total, capacity, capacity - usable,
                       total <= usable, most - most % pp)
