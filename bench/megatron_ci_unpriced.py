"""What the flags and code paths of Megatron-LM's CI runs (bench/megatron_ci_published.py) that
tpsim does not price would add to each run's step, each from its source and priced with tpsim's
own kernel costs. An estimate beside the prediction, not a part of it; nothing is fitted.

* ``fill``: ``--deterministic-mode`` calls ``torch.use_deterministic_algorithms(True)``
  (megatron/training/arguments.py at 6e091e1b68), and with it PyTorch's
  ``fill_uninitialized_memory`` (on by default since 2.1) fills every tensor the dispatcher's
  ``empty`` makes (``at::native::empty_cuda``, aten/src/ATen/native/cuda/TensorFactories.cu)
  with NaN: one more write of every Transformer Engine output, which TE allocates with
  ``at::empty`` / ``torch.empty``: each linear's forward output, dgrad and (without gradient
  accumulation fusion) 16-bit wgrad, the LayerNorm outputs and input gradients, the
  attention's output and dQ, dK, dV. Per layer and micro-batch, the sum B of those bytes in
  the layer's own ops, written in one kernel each: ``elementwise_time(B, kernels)``.
  Megatron's and torch's own fused kernels (bias-dropout-add, GeLU) allocate through
  structured kernels, which do not fill: left out, so a lower bound.
* ``mask H2D``: without ``--no-create-attention-mask-in-dataloader`` the mock dataset returns a
  (1, s, s) boolean causal mask a sample (megatron/core/datasets/gpt_dataset.py), copied to
  the GPU a micro-batch (``get_batch_on_this_tp_rank``, megatron/core/utils.py) on the stream
  the compute waits on: b s^2 bytes over the host link (``host_link_bandwidth_GBps``, its line
  rate: a lower bound); Transformer Engine's causal kernel never reads it.

Megatron-core's fp32 main-gradient add without gradient accumulation fusion and the per-step
``--log-params-norm`` and ``--log-num-zeros-in-grad`` passes are priced (``main_grad_add``,
:mod:`tpsim.layer.linears`; ``log_params_norm``, ``log_num_zeros_in_grad``,
:mod:`tpsim.training.optimizer_step`), not estimated here.

The step with them: ``step (1 + fill / compute) + mask``, the per-layer fill scaled with the
stage's compute (a pipeline's idle time grows with its micro-batches' time), the mask copies
added once.
"""
from __future__ import annotations

import math

from tpsim.cluster.topology import BYTES_PER_ELEMENT, load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.layer.ops import Attention, Gemm, MemoryBound

NORMS = ("fwd.norm1", "fwd.norm2", "bwd.norm1", "bwd.norm2")


def fill_bytes(p) -> tuple[float, int]:
    """(bytes, kernels) the deterministic fill writes per layer and micro-batch (module
    docstring): the outputs Transformer Engine allocates in the layer's ops."""
    total, kernels = 0.0, 0
    for name, op in zip(p.run.template.names, p.run.ops):
        if isinstance(op, Gemm) and not op.accumulate:
            out = op.m * op.n * op.batch * BYTES_PER_ELEMENT[op.dtype]
        elif isinstance(op, Attention):
            tokens = op.seq_q * op.heads + (2 * op.seq_kv * op.kv_heads if op.backward else 0)
            out = op.b * tokens * op.head_dim * BYTES_PER_ELEMENT[op.dtype]
        elif isinstance(op, MemoryBound) and name in NORMS:
            out = math.prod(op.dims) * BYTES_PER_ELEMENT["bf16"]
        else:
            continue
        total += out
        kernels += 1
    return total, kernels


def unpriced(r: dict, p, platform: str) -> dict[str, float]:
    """Seconds a step each unpriced cost adds on a GPU of run ``r`` predicted as ``p``."""
    dev = load_topology(platform).device
    stage = p.step.stages[0]
    passes = stage.layers * p.step.micro_batches
    fill, kernels = fill_bytes(p)
    mb, s = int(r["micro_batch"]), int(r["seq_len"])
    return {"fill": passes * elementwise_time(fill, dev, kernels=kernels),
            "mask H2D": p.step.micro_batches * mb * s * s / dev.host_link_Bps}


def with_unpriced(p, costs: dict[str, float]) -> float:
    """The step with ``costs`` (module docstring): the fill scaled with the stage."""
    return p.step.time_s * (1 + costs["fill"] / p.step.stages[0].compute_s) + costs["mask H2D"]
