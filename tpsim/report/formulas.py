"""Which function computed each section of ``tpsim predict`` and ``tpsim infer``: the ``formula``
of every aggregate, so that every number of the output is one hop from its formula.

Op and collective rows name the function that priced them (:mod:`tpsim.sim.price`); the
sections built from them name theirs here: one dotted name where one function computed the
whole section, else a mapping JSON field -> name. Each name is read off the function object
(:func:`tpsim.base.formula.qualname`), so renaming or moving a function renames the output
with it, and a function that disappears fails when its section's names are made: when
first read, so that ``tpsim predict`` does not import the serving model nor ``tpsim serve``
the training one. The search's candidates reuse the step's and the memory's names (:mod:`tpsim.report.search`).
"""
from __future__ import annotations

import dataclasses

from ..base.formula import qualname
from ..cluster.topology import Device


def by_field(*groups) -> dict[str, str]:
    """{field: function name} from (function, fields) pairs, in their order."""
    return {f: qualname(fn) for fn, fields in groups for f in fields}


# tpsim predict: LAYER, MODEL, STEP, STAGE, MEMORY, SPLIT, OFFLOAD (:func:`__getattr__`)
_PREDICT = ("LAYER", "MODEL", "STEP", "STAGE", "MEMORY", "SPLIT", "OFFLOAD")
OFFLOAD_FIELDS = ("offload_exposed_s",)      # named by tpsim.training.offload's formula


def _predict_sections() -> dict:
    """``tpsim predict``'s sections' names (the training model, imported here: serving's
    output does not read them)."""
    from ..sim.memory import stage_memory, userbuffers_bytes
    from ..sim.result import TimeSplit
    from ..sim.simulate import layer_times, phase_times
    from ..spec.model import ModelConfig
    from ..spec.sharding import zero_stage
    from ..training import energy, offload, terms
    from ..training import step_accounting as accounting
    from ..training.expert_comm import group_exposed_s
    from ..training.flops import megatron_flops
    from ..training.predict import predict
    split = tuple(f.name for f in dataclasses.fields(TimeSplit) if f.name not in OFFLOAD_FIELDS)
    return dict(
        OFFLOAD=OFFLOAD_FIELDS, SPLIT=split, LAYER=qualname(layer_times),
        STAGE=qualname(accounting.stage_times),
        MODEL=by_field((layer_times, ("layer_s",)), (phase_times, ("embedding_s", "output_s")),
                       (predict, ("step_s", "flops", "tflops_per_gpu", "mfu", "hardware_flops",
                                  "hfu")), (ModelConfig.params, ("params",))),
        STEP=by_field((accounting.simulate_step, ("time_s",)), (accounting.stage_times, split),
                      (accounting.step_times, ("tokens_per_s", "tflops_per_gpu", "mfu", "hfu",
                                               "flops", "hardware_flops",
                                               "ideal_bubble_fraction")),
                      (terms.p2p_bytes, ("p2p_bytes",)),
                      (megatron_flops, ("megatron_tflops_per_gpu",
                                        "megatron_full_square_tflops_per_gpu")),
                      (energy.step_energy_j, ("energy_j",)),
                      (energy.step_cost_usd, ("cost_usd",)),
                      (group_exposed_s, ("ep_comm_exposed_s",)),
                      (offload.exposed_s, OFFLOAD_FIELDS)),
        MEMORY=by_field((stage_memory, ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                                        "step_copy_bytes", "total_bytes", "fits")),
                        (accounting.stage_memories, ("activations_bytes",)),
                        (Device.usable_bytes, ("reserved_bytes",)),
                        (terms.in_flight_chunks, ("in_flight",)),
                        (ModelConfig.stage_params, ("params_per_gpu",)),
                        (zero_stage, ("zero",)), (offload.offloaded_bytes, ("offloaded_bytes",)),
                        (userbuffers_bytes, ("tp_buffers_bytes",))))


# tpsim infer: PREFILL, DECODE, TOTAL, INFER_MEMORY (:func:`__getattr__`)
_INFER = ("PREFILL", "DECODE", "TOTAL", "INFER_MEMORY")


def __getattr__(name: str):
    """``tpsim predict``'s and ``tpsim infer``'s sections' names, made when one is first
    read."""
    if name in _PREDICT:
        globals().update(_predict_sections())
        return globals()[name]
    if name not in _INFER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..serving import infer as serving
    from ..serving import memory as serving_memory
    globals().update(
        PREFILL=by_field((serving.prefill_pass, ("time_s", "tokens_per_s", "mfu")),
                         (serving.phase_cost, ("cost",))),
        DECODE=by_field((serving.decode_steps, ("time_per_token_s", "tokens_per_s",
                                                "first_step_s", "last_step_s", "kv_len",
                                                "hbm_bandwidth_Bps")),
                        (serving.phase_cost, ("cost",))),
        TOTAL=qualname(serving.infer),
        INFER_MEMORY=by_field((serving_memory.weights_per_gpu, ("weights_bytes",)),
                              (serving_memory.kv_bytes_per_token, ("kv_bytes_per_token",)),
                              (serving_memory.serving_memory, ("kv_cache_bytes",
                                                               "activations_bytes",
                                                               "total_bytes", "fits",
                                                               "max_batch")),
                              (Device.usable_bytes, ("reserved_bytes",))))
    return globals()[name]


LABEL = "  formula        "
WIDTH = 120


def formula_lines(formula, label: str = LABEL) -> list[str]:
    """A section's ``formula`` in text: the function's name, or one line per function with
    the JSON fields it computed (wrapped under ``label``'s indent)."""
    if isinstance(formula, str):
        return [label + formula]
    import textwrap             # only a section with several functions wraps
    fields: dict[str, list[str]] = {}
    for field, name in formula.items():
        fields.setdefault(name, []).append(field)
    indent = " " * len(label)
    return [line for name, keys in fields.items() for line in textwrap.wrap(
        f"{name} ({', '.join(keys)})", WIDTH, initial_indent=label, subsequent_indent=indent,
        break_on_hyphens=False)]
