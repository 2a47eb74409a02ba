"""What a :class:`~tpsim.spec.layout.Layout`'s global batch allows of its other settings: a
whole number of micro-batches per step, few enough to simulate one by one, and with an
interleaved pipeline a multiple of the stages (Megatron-core's interleaved schedule,
``pipeline_parallel/schedules.py``: ``num_microbatches % pipeline_parallel_size == 0``)."""
from __future__ import annotations

from ..base.errors import ConfigError

MAX_MICRO_BATCHES = 65536  # simulated one by one: 16x a 16M-token batch of 4K sequences, 1 replica


def check_batch(lay) -> None:
    """One ConfigError naming ``--global-batch`` where the global batch does not split into
    micro-batches of every replica as above (None: one micro-batch, nothing to check)."""
    gb, per_step = lay.global_batch, lay.per_step
    if gb is None:
        return
    if gb % per_step:
        raise ConfigError("--global-batch", "", f"a multiple of micro-batch x dp "
                          f"({per_step})", gb)
    if gb // per_step > MAX_MICRO_BATCHES:
        raise ConfigError("--global-batch", "", f"at most {MAX_MICRO_BATCHES:,} micro-batches "
                          f"per step (global batch / (micro-batch x dp) = {gb // per_step:,}; "
                          "the step is simulated micro-batch by micro-batch)", gb)
    if lay.virtual_stages > 1 and (gb // per_step) % lay.pp:
        raise ConfigError("--global-batch", "", f"micro-batches per step (global batch / "
                          f"(micro-batch x dp) = {gb // per_step}) a multiple of pp "
                          f"({lay.pp}) with --virtual-stages", gb)


__all__ = ["MAX_MICRO_BATCHES", "check_batch"]
