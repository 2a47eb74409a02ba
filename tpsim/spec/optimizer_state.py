"""Adam's state per parameter, by the dtypes it is kept in: the main (master) weights and the
two moments, named as Megatron-core names them (megatron/training/arguments.py:
``--main-params-dtype``, ``--exp-avg-dtype``, ``--exp-avg-sq-dtype``, which its
``--use-precision-aware-optimizer`` takes: Transformer Engine's FusedAdam keeps the moments in
fp16, bf16 or fp8 "for storing the optimizer state in memory", computing in fp32).

    optimizer state = main x copy + exp_avg + exp_avg_sq        bytes per parameter

STATE_BYTES of each dtype (fp32 4, fp16 and bf16 2, fp8 1: its per-tensor scales negligible).
``copy``: whether the main weights are a copy of their own. They are the model's weights
themselves, no copy, where they share the weights' dtype: under fp32 training (Megatron-LM's
dist_optimizer.md: 16 bytes = 4 + 4 + 8), fp16 beside fp16 weights, and bf16 beside bf16
weights: PyTorch's Adam on a model built in bf16 (NeMo AutoModel's recipes build it with
``get_dtype(config.torch_dtype, torch.bfloat16)``, no master copy; ``torch.optim.Adam`` makes
``exp_avg`` and ``exp_avg_sq`` by ``torch.zeros_like(p)``, in the parameter's dtype: a state of
2 + 2 bytes beside the 2-byte weights; Megatron-FSDP's ``--megatron-fsdp-main-params-dtype``
takes bf16 or ``auto``, the model's dtype, the same way). The defaults are Megatron's mixed
precision, fp32 throughout: 12 bytes (:mod:`tpsim.spec.precision`).

A precision key (:func:`tpsim.spec.precision.precision_key`) names the dtypes that are not
fp32 as options, ``main-bf16``, ``exp-avg-bf16``, ``exp-avg-sq-fp8``; the optimizer step's
traffic reads the same :func:`adam_state` (:mod:`tpsim.training.optimizer_step`).
"""
from __future__ import annotations

from typing import NamedTuple

from ..base.errors import ConfigError

STATE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
MAIN_PARAMS_DTYPES = ("fp32", "fp16", "bf16")       # bf16: the bf16 weights are the main ones
MOMENT_DTYPES = ("fp32", "fp16", "bf16", "fp8")     # Megatron-LM's --exp-avg(-sq)-dtype
# the Layout fields, their flags and their option prefixes in a precision key, in that order
ADAM_DTYPE_FIELDS = ("main_params_dtype", "exp_avg_dtype", "exp_avg_sq_dtype")
FLAGS = ("--main-params-dtype", "--exp-avg-dtype", "--exp-avg-sq-dtype")
PREFIXES = ("main", "exp-avg", "exp-avg-sq")
FP32_STATE = ("fp32",) * 3
BF16_WEIGHTS = ("bf16", "fp8", "mxfp8", "nvfp4")    # dtypes whose weights keep a bf16 copy


class AdamState(NamedTuple):
    """Bytes per parameter: ``main`` of the weights Adam updates, held as a ``copy`` of their
    own or not (module docstring), ``exp_avg`` and ``exp_avg_sq`` of the moments."""
    main: int
    copy: bool
    exp_avg: int
    exp_avg_sq: int

    @property
    def held(self) -> int:
        """The optimizer state's bytes: main x copy + exp_avg + exp_avg_sq."""
        return self.main * self.copy + self.exp_avg + self.exp_avg_sq


def state_options(dtypes: tuple[str, ...] = ()) -> list[str]:
    """The precision key's options of (main params, exp_avg, exp_avg_sq) ``dtypes``: each
    not fp32 as ``prefix-dtype``."""
    if not dtypes or dtypes == FP32_STATE:     # the common case, asked at every prediction
        return []
    return [f"{p}-{d}" for p, d in zip(PREFIXES, dtypes) if d != "fp32"]


def adam_state(dtype: str, options: list[str] | tuple = ()) -> AdamState:
    """The :class:`AdamState` of training ``dtype`` with a precision key's ``options``; a
    ConfigError naming the flag of a main-params dtype the weights cannot take (fp32 training's
    are the fp32 weights; bf16 needs bf16 weights, which fp16 training and fp8 parameters
    lack)."""
    got = dict(o.rsplit("-", 1) for o in options if o.rsplit("-", 1)[0] in PREFIXES)
    main, m, v = (got.get(p, "fp32") for p in PREFIXES)
    for flag, d, allowed in zip(FLAGS, (main, m, v), (MAIN_PARAMS_DTYPES,) + (MOMENT_DTYPES,) * 2):
        if d not in allowed:
            raise ConfigError(flag, "", f"one of {', '.join(allowed)}", d)
    if dtype == "fp32" and main != "fp32":
        raise ConfigError(FLAGS[0], "", "fp32 with --dtype fp32 (the weights are the main ones)",
                          main)
    if main == "bf16" and (dtype not in BF16_WEIGHTS or "fp8-params" in options):
        raise ConfigError(FLAGS[0], "", "fp32 or fp16 unless the weights are bf16 (--dtype bf16, "
                          "fp8, mxfp8 or nvfp4 without --fp8-param-gather)", main)
    copy = main != ("bf16" if dtype in BF16_WEIGHTS and "fp8-params" not in options else dtype)
    return AdamState(STATE_BYTES[main], copy, STATE_BYTES[m], STATE_BYTES[v])


def check_state(lay) -> None:
    """What the state's dtypes allow of Layout ``lay``'s other settings: ZeRO-3's fp32
    parameter shards are fp32 main weights."""
    if lay.fsdp_fp32_params and lay.main_params_dtype != "fp32":
        raise ConfigError(FLAGS[0], "", "fp32 with --fsdp-fp32-params (the fp32 shards are the "
                          "main weights)", lay.main_params_dtype)


__all__ = ["STATE_BYTES", "MAIN_PARAMS_DTYPES", "MOMENT_DTYPES", "ADAM_DTYPE_FIELDS", "AdamState",
           "state_options", "adam_state", "check_state"]
