"""Memory per GPU for training with tensor parallelism: weights, gradients, Adam, activations.

Mixed-precision Adam as Megatron-LM runs it (Rajbhandari et al. 2020, ZeRO, section 3.1, with
Megatron's default fp32 main gradients): per parameter, bf16/fp16 weights (2 bytes), fp32
gradients (4: Megatron accumulates and all-reduces gradients in fp32 by default with bf16),
and an fp32 master copy, Adam's m and v (4 + 4 + 4 = 12): 18 bytes. Training in fp32: 4 + 4 +
8 (m, v) = 16 bytes. No data-parallel sharding (no distributed optimizer / ZeRO): what one
TP rank holds when it is the only data-parallel replica.

Parameters per rank: the linears' weights are split by tp; norms are replicated on every
rank; the embedding (and an untied output layer) hold padded_vocab/tp rows each.

Activations are not a formula here but the sum of what every forward op of the op graph
keeps for its backward (``saved_bytes``), times the layers: without sequence parallelism this
is exactly Korthikanti et al. 2022's  s b h (10 + 24/t + 5 a s / (h t))  bytes per layer for a
GPT layer in 16-bit with dropout and unfused attention (their Table 2); flash attention drops
the 5as/(ht) term; sequence parallelism shards norms, dropout masks and residuals, while the
gathered input of each column-parallel GEMM is kept for its weight gradient (4 s b h not
sharded: s b h (4 + 30/t) with flash attention and dropout). Activation recomputation
(:mod:`tpsim.recompute`) zeroes what it frees in the graph before the sum: ``full`` keeps only
the layer input (bytes_per_element s b h, / t with SP), ``selective`` drops the unfused
attention core's s^2 tensors (s b h (10 + 24/t) without SP, Korthikanti eq. 6).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError
from .topology import BYTES_PER_ELEMENT

MASTER_GRAD_BYTES = 4                       # fp32 main gradients (Megatron default)
OPTIMIZER_BYTES = {"bf16": 12, "fp16": 12,  # fp32 master weights + Adam m + v
                   "fp32": 8,               # Adam m + v; the weights are the master copy
                   "fp8": 12}               # as bf16: Transformer Engine keeps bf16 weights
# bytes of model weights per parameter: fp8 training keeps the bf16 weights plus Transformer
# Engine's cached fp8 copy and its transpose (Hopper's fp8 GEMMs take only the TN layout)
WEIGHT_BYTES = {"fp8": 2 + 2}


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU. ``fits``: total <= capacity (no allowance for the CUDA context, workspace
    or fragmentation, which take a few GB more in practice)."""
    params_per_gpu: int
    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    total_bytes: float
    capacity_bytes: float
    fits: bool


def training_memory(model, tp: int, dtype: str, activations_bytes: float,
                    capacity_bytes: float) -> Memory:
    """Weights, fp32 gradients and Adam state for one rank's parameters, plus activations."""
    if dtype not in OPTIMIZER_BYTES:
        raise ConfigError("--dtype", "", f"one of {', '.join(OPTIMIZER_BYTES)}", dtype)
    n = model.params_per_rank(tp)
    weights = n * WEIGHT_BYTES.get(dtype, BYTES_PER_ELEMENT[dtype])
    grads = n * MASTER_GRAD_BYTES
    optim = n * OPTIMIZER_BYTES[dtype]
    total = weights + grads + optim + activations_bytes
    return Memory(n, float(weights), float(grads), float(optim), float(activations_bytes),
                  float(total), float(capacity_bytes), total <= capacity_bytes)
