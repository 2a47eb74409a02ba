"""What a :class:`~tpsim.spec.layout.Layout`'s run settings allow of one another: the global
batch a whole number of micro-batches per step, few enough to simulate one by one, and with an
interleaved pipeline a multiple of the stages (Megatron-core's interleaved schedule,
``pipeline_parallel/schedules.py``: ``num_microbatches % pipeline_parallel_size == 0``); the
pipeline's layout alone or the stages' layer counts; virtual stages only with a pipeline;
Transformer Engine's TP overlap only of sequence-parallel collectives; CPU offloading without
a pipeline or recomputation; a bounded number of training metrics."""
from __future__ import annotations

from ..base.errors import ConfigError
from .pipeline_layout import stage_layers

MAX_MICRO_BATCHES = 65536  # simulated one by one: 16x a 16M-token batch of 4K sequences, 1 replica
MAX_TRAIN_METRICS = 64     # metric cross-entropies a micro-batch: a trainer's handful, bounded


def check_run(lay) -> None:
    """One ConfigError naming the flag: virtual stages with a pipeline, the TP overlap with
    sequence parallelism over TP > 1, the training metrics bounded, CPU offloading with
    neither a pipeline nor recomputation (Megatron-core offloads with neither), a pipeline
    layout with no stage layer counts beside it and one that splits (:func:`stage_layers`)."""
    if lay.virtual_stages > 1 and lay.pp == 1:
        raise ConfigError("--virtual-stages", "", "1 unless --pp > 1", lay.virtual_stages)
    if lay.tp_comm_overlap and not (lay.sequence_parallel and lay.tp > 1):
        raise ConfigError("--tp-comm-overlap", "", "--sequence-parallel and --tp > 1 "
                          "(Transformer Engine overlaps the sequence-parallel collectives)",
                          lay.tp_comm_overlap)
    if lay.train_metrics > MAX_TRAIN_METRICS:
        raise ConfigError("--train-metrics", "", f"at most {MAX_TRAIN_METRICS}", lay.train_metrics)
    if lay.cpu_offload_layers and (lay.pp > 1 or lay.recompute != "none"):
        raise ConfigError("--cpu-offload-layers", "", "0 with --pp above 1 or --recompute "
                          "(Megatron-core offloads with neither)", lay.cpu_offload_layers)
    if lay.pipeline_layout is not None:
        if lay.first_stage_layers is not None or lay.last_stage_layers is not None:
            raise ConfigError("--pipeline-layout", "", "no --first-stage-layers nor "
                              "--last-stage-layers beside it", lay.pipeline_layout)
        stage_layers(lay.pipeline_layout, lay.pp, lay.virtual_stages)


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


__all__ = ["MAX_MICRO_BATCHES", "MAX_TRAIN_METRICS", "check_batch", "check_run"]
