"""Memory per GPU for training: weights, gradients, optimizer state, activations, per pipeline stage.

Mixed-precision Adam as Megatron-LM runs it (Rajbhandari et al. 2020, ZeRO, section 3.1),
bytes per parameter from :mod:`tpsim.spec.precision`: weights + main gradients + optimizer state,
18 for bf16 (2 + 4 + 12), 20 for fp16, 16 for fp32; under FP8 the quantized weight copies of
the linears only (the embedding, output layer and norms 16-bit:
:func:`tpsim.spec.precision.weights_bytes`). With the distributed optimizer (ZeRO-1,
Megatron's DistributedOptimizer) each of the d data-parallel ranks keeps only 1/d of the
optimizer state (``optimizer_shards``). The parameters of a stage are
``ModelConfig.stage_params`` (linears / tp, norms whole, padded vocab / tp of the embedding on
the first stage and of the output layer on the last).

Activations are not a formula here but the sum of what every forward op of the op graph
keeps for its backward (``saved_bytes``), times the layers: without sequence parallelism this
is exactly Korthikanti et al. 2022's  s b h (10 + 24/t + 5 a s / (h t))  bytes per layer for a
GPT layer in 16-bit with dropout and unfused attention (their Table 2); flash attention drops
the 5as/(ht) term (with grouped queries the unfused core keeps K and V repeated to every query
head: :func:`tpsim.layer.unfused.kept`); sequence parallelism shards norms, dropout masks and residuals, while the
gathered input of each column-parallel GEMM is kept for its weight gradient (4 s b h not
sharded: s b h (4 + 30/t) with flash attention and dropout). Under FP8 (Transformer Engine)
each linear keeps its input as the 1-byte fp8 cast its GEMMs read (the norms' outputs, the
activation's), while the fused attention kernel still keeps its 16-bit output beside the
projection's cast (:mod:`tpsim.layer.linears`). Activation recomputation
(:mod:`tpsim.layer.recompute`) zeroes what it frees in the graph before the sum: ``full`` keeps only
the layer input (bytes_per_element s b h, / t with SP), ``selective`` drops the unfused
attention core's s^2 tensors (s b h (10 + 24/t) without SP, Korthikanti eq. 6), or what its
``--recompute-modules`` drop (:mod:`tpsim.layer.recompute_modules`); ``full`` of some layers
only (``--recompute-method``) mixes the two per virtual stage
(:mod:`tpsim.training.partial_recompute`). A pipeline
stage holds the activations of every micro-batch in flight at its fullest moment of the 1F1B
schedule (the first stage p of them; :func:`tpsim.training.pipeline.in_flight`).

With TP communication overlap (``--tp-comm-overlap``) Transformer Engine's userbuffers hold
ten (tokens, h) buffers, one per overlapped GEMM, for the run (:func:`userbuffers_bytes`),
counted in the total as a tensor (``Memory.tp_buffers_bytes``).

The optimizer step's fp32 copy of 16-bit main gradients (``--grad-reduce-in-bf16``, fp16;
params x step_copy / shards: :mod:`tpsim.spec.precision`; none under PyTorch's FSDP, whose
gradient shard is kept in the parameter's dtype: :mod:`tpsim.training.shard_state`) exists
only between the backward's end and the next step's start, when no activation is held: the
stage's peak is

    total = weights + gradients + optimizer + TP buffers + max(activations, step's copy)

the larger of the two phases, not their sum.

A stage fits when its total is within what the device leaves to tensors
(:meth:`tpsim.cluster.topology.Device.usable_bytes`): its memory as the CUDA runtime exposes it,
less the CUDA context and NCCL's buffers and the run's memory_headroom, less the caching
allocator's fragmentation, a share of the bytes the step allocates and frees, max(activations,
step's copy): the weights, gradient buffers, optimizer state and userbuffers are allocated once
and fragment nothing; ``reserved_bytes`` is the difference.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cluster.topology import BYTES_PER_ELEMENT
from ..spec.precision import PRECISION, precision, weights_bytes

OPTIMIZER_BYTES = {k: v.optimizer for k, v in PRECISION.items()}
# Transformer Engine's initialize_ub (transformer_engine/pytorch/module/base.py, 1.8): its
# all-gather overlaps (qkv_fprop, qkv_dgrad, proj_dgrad, fc1_fprop, fc1_dgrad, fc2_dgrad) and
# reduce-scatter ones (proj_fprop, fc2_fprop, qkv_wgrad, fc1_wgrad)
GATHER_BUFFERS, SCATTER_BUFFERS = 6, 4


def userbuffers_bytes(tokens: int, hidden: int, dtype: str, overlap: bool = True) -> float:
    """Transformer Engine's TP-overlap buffers (0 without TP overlap, ``overlap``): one (tokens, hidden) buffer per overlapped
    GEMM, tokens = seq_len x micro_batch / cp (the shape Megatron-core's and NeMo's
    ``initialize_ub`` calls pass), the all-gather ones in fp8 under FP8 (``fp8_buf``), the
    others 16-bit:

        tokens x hidden x (6 x (1 fp8 | 2) + 4 x 2)

    Each is cuMemCreate'd by userbuffers (``register_user_buffer_collective`` with
    ``alloc=true``, transformer_engine/pytorch/csrc/userbuffers/userbuffers-host.cpp) for the
    whole run, beside the caching allocator's tensors."""
    gather = BYTES_PER_ELEMENT["fp8"] if dtype == "fp8" else 2
    return float(tokens * hidden * (GATHER_BUFFERS * gather + SCATTER_BUFFERS * 2)) * overlap


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one pipeline ``stage``. ``capacity_bytes``: the device's memory as the
    CUDA runtime exposes it; ``reserved_bytes``: what the tensors cannot have of it (the CUDA
    context, NCCL's buffers, the allocator's waste on the step's churned bytes, the headroom:
    :meth:`tpsim.cluster.topology.Device.usable_bytes`); ``fits``: total <= capacity -
    reserved. ``in_flight``: micro-batches whose activations the stage holds at once."""
    params_per_gpu: int
    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    total_bytes: float
    capacity_bytes: float
    reserved_bytes: float
    fits: bool
    stage: int = 0
    in_flight: int = 1
    optimizer_shards: int = 1     # d with the distributed optimizer, else 1
    zero: int = 0                 # the ZeRO stage (tpsim.training.sharded_dp)
    offloaded_bytes: float = 0.0  # activations in host memory, not in total (training.offload)
    step_copy_bytes: float = 0.0  # the optimizer step's fp32 gradient copy (module docstring)
    tp_buffers_bytes: float = 0.0  # Transformer Engine's TP-overlap buffers (userbuffers_bytes)

    @property
    def state_bytes(self) -> float:
        """What the stage holds in both phases: weights + gradients + optimizer state."""
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes


def stage_memory(params: int, dtype: str, activations_bytes: float, capacity_bytes: float,
                 optimizer_shards: int = 1, stage: int = 0, in_flight: int = 1,
                 usable_bytes: float | None = None, state: tuple | None = None,
                 zero: int = 0, offloaded_bytes: float = 0.0, plain: float = 0.0,
                 tp_buffers: float = 0.0) -> Memory:
    """params x (weights + gradients + optimizer / shards) bytes, plus the larger of the
    activations and the optimizer step's copy, params x step_copy / optimizer_shards (module
    docstring); it fits
    within ``usable_bytes`` of the ``capacity_bytes`` (default: all of it; a function of the
    bytes the step churns, max(activations, step's copy), for the allocator's waste on them:
    :meth:`tpsim.cluster.topology.Device.usable_bytes`). ``state``: the
    (weights, gradients, optimizer, step's copy) bytes of a ZeRO-2/3 run instead
    (:func:`tpsim.training.shard_state.state_bytes`: PyTorch's FSDP keeps no step copy);
    ``offloaded_bytes``: activations held in host memory instead
    (:mod:`tpsim.training.offload`), outside the total; ``plain``: the parameters with no
    quantized copy (embedding, output layer, norms), their weights 16-bit
    (:func:`tpsim.spec.precision.weights_bytes`); ``tp_buffers``: the TP-overlap buffers
    (:func:`userbuffers_bytes`), held throughout."""
    prec = precision(dtype)
    weights, grads, optim, copy = state or (
        weights_bytes(dtype, params, plain), params * prec.grads,
        params * prec.optimizer / optimizer_shards, params * prec.step_copy / optimizer_shards)
    churned = max(activations_bytes, copy)
    total = weights + grads + optim + tp_buffers + churned
    usable = (capacity_bytes if usable_bytes is None else
              usable_bytes(churned) if callable(usable_bytes) else usable_bytes)
    return Memory(params, float(weights), float(grads), float(optim), float(activations_bytes),
                  float(total), float(capacity_bytes), float(capacity_bytes - usable),
                  total <= usable, stage, in_flight, optimizer_shards, zero,
                  float(offloaded_bytes), float(copy), float(tp_buffers))
