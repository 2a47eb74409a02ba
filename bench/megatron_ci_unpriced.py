"""What the code path of Megatron-LM's CI runs (bench/megatron_ci_published.py) that tpsim does
not price would add to each run's step, from its source at the device's host-link rate. An
estimate beside the prediction, not a part of it; nothing is fitted.

* ``mask H2D``: without ``--no-create-attention-mask-in-dataloader`` the mock dataset returns a
  (1, s, s) boolean causal mask a sample (megatron/core/datasets/gpt_dataset.py), copied to
  the GPU a micro-batch (``get_batch_on_this_tp_rank``, megatron/core/utils.py) on the stream
  the compute waits on: b s^2 bytes over the host link (``host_link_bandwidth_GBps``, its line
  rate: a lower bound); Transformer Engine's causal kernel never reads it.

Priced, not estimated here: ``--deterministic-mode``'s fill of new tensors
(``deterministic_mode``, :mod:`tpsim.sim.fill`), Megatron-core's fp32 main-gradient add
without gradient accumulation fusion (``main_grad_add``, :mod:`tpsim.layer.linears`) and the
per-step ``--log-params-norm`` and ``--log-num-zeros-in-grad`` passes
(:mod:`tpsim.training.optimizer_step`).

The step with it: ``step + mask``, the copies added once a micro-batch.
"""
from __future__ import annotations

from tpsim.cluster.topology import load_topology


def unpriced(r: dict, p, platform: str) -> dict[str, float]:
    """Seconds a step each unpriced cost adds on a GPU of run ``r`` predicted as ``p``."""
    dev = load_topology(platform).device
    mb, s = int(r["micro_batch"]), int(r["seq_len"])
    return {"mask H2D": p.step.micro_batches * mb * s * s / dev.host_link_Bps}


def with_unpriced(p, costs: dict[str, float]) -> float:
    """The step with ``costs`` (module docstring), added once."""
    return p.step.time_s + costs["mask H2D"]
