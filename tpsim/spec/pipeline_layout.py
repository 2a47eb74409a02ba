"""Megatron-core's ``--pipeline-model-parallel-layout``: which layers each virtual stage holds.

The grammar is Megatron-core's (``PipelineParallelLayerLayout.parse_str_to_list``,
megatron/core/transformer/pipeline_parallel_layer_layout.py): one string per virtual stage,
stages separated by ``|``, each a run of ``E`` (the embedding), ``t`` (a transformer layer),
``m`` (a multi-token-prediction layer) and ``L`` (the output layer and loss); commas are
cosmetic; ``(...)*n`` repeats a group n times, then ``x*n`` one character. ``Et|(tt|)*30mL``
is ``Et``, thirty ``tt`` and ``mL``: 32 virtual stages.

The stages are listed in layer order, virtual stage g = chunk * pp + stage (Megatron's
``layout[vpp_rank * pp + pp_rank]``), the order of
:func:`tpsim.training.pipeline.split_layers`. The embedding must open the first virtual stage
and the output layer close the last (Megatron: the first and last layers of the flattened
layout, each exactly once), as tpsim places them. The ``m`` layers' count must equal the
multi-token-prediction layers trained (Megatron's check; tpsim's ``--mtp-layers``, by default
the model's ``mtp_layers``), and they sit in the last virtual stage, beside ``L``
(Megatron-core puts the multi-token-prediction block there without a layout, and accepts it
only in a pipeline rank's last virtual stage, ``validate_layer_layout``). There they are
priced as without a layout (:func:`tpsim.training.pipeline.layout_layers`,
:mod:`tpsim.training.mtp`).
"""
from __future__ import annotations

import re

from ..base.errors import ConfigError

FLAG = "--pipeline-layout"
LAYER_CHARS = "EtmL"
_GROUP = re.compile(r"\(([^)]+)\)\*(\d+)")
_ONE = re.compile(r"(.)\*(\d+)")


def unroll(text: str) -> list[str]:
    """The virtual stages of a layout string, each a string of ``LAYER_CHARS`` (module
    docstring); a ConfigError naming --pipeline-layout for any other character."""
    flat = text.replace(",", "")
    for pattern in (_GROUP, _ONE):
        flat = pattern.sub(lambda x: x.group(1) * int(x.group(2)), flat)
    bad = set(flat) - set(LAYER_CHARS + "|")
    if bad:
        raise ConfigError(FLAG, "", f"virtual stages of E, t, m, L separated by | (repeat: "
                          f"(...)*n), no {''.join(sorted(bad))!r}", text)
    return flat.split("|")


def stage_layers(text: str, pp: int, v: int) -> list[int]:
    """Transformer layers (``t``) of each virtual stage g = chunk * pp + stage of ``text``;
    a ConfigError naming --pipeline-layout unless it lists pp x v virtual stages, ``E`` only
    first and ``L`` only last (module docstring)."""
    stages = unroll(text)
    flat = "".join(stages)
    if len(stages) != pp * v:
        raise ConfigError(FLAG, "", f"pp x virtual stages = {pp * v} virtual stages", text,
                          f"it lists {len(stages)}")
    if flat.count("E") != 1 or not flat.startswith("E"):
        raise ConfigError(FLAG, "", "E (the embedding) once, first", text)
    if flat.count("L") != 1 or not flat.endswith("L"):
        raise ConfigError(FLAG, "", "L (the output layer) once, last", text)
    return [s.count("t") for s in stages]


def check_layers(text: str, pp: int, v: int, layers: int, mtp_layers: int | None) -> list[int]:
    """:func:`stage_layers` of ``text``, checked to hold the model's ``layers`` transformer
    layers and ``mtp_layers`` ``m`` layers (None: not checked) (a ConfigError naming
    --pipeline-layout)."""
    counts = stage_layers(text, pp, v)
    if sum(counts) != layers:
        raise ConfigError(FLAG, "", f"the model's {layers} transformer layers (t)", text,
                          f"it lists {sum(counts)}")
    mtp = mtp_count(text)
    if mtp_layers is not None and mtp != mtp_layers:
        raise ConfigError(FLAG, "", f"the {mtp_layers} multi-token-prediction layers (m) "
                          f"trained (--mtp-layers; default: the model's)", text,
                          f"it lists {mtp}")
    if mtp != unroll(text)[-1].count("m"):
        raise ConfigError(FLAG, "", "the multi-token-prediction layers (m) in the last "
                          "virtual stage, beside L", text)
    return counts


def mtp_count(text: str) -> int:
    """How many multi-token-prediction layers (``m``) the layout ``text`` lists."""
    return "".join(unroll(text)).count("m")
