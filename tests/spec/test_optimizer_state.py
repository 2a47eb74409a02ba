"""Adam's state by its dtypes (tpsim.spec.optimizer_state): bytes per parameter in closed form
for every combination, carried by the precision key into memory (Megatron's and ZeRO-3's), the
framework's preset, and bad values refused naming the flag."""
from __future__ import annotations

import itertools

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.sim.memory import stage_memory
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.layout import Layout
from tpsim.spec.optimizer_state import MAIN_PARAMS_DTYPES, MOMENT_DTYPES, adam_state
from tpsim.spec.precision import precision, precision_key
from tpsim.training.predict import predict
from tpsim.training.sharded_dp import Sharding
from tpsim.training.shard_state import state_bytes

SIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
COMBOS = list(itertools.product(MAIN_PARAMS_DTYPES, MOMENT_DTYPES, MOMENT_DTYPES))


@pytest.mark.parametrize("main_dtype, m, v", COMBOS)
def test_bf16_training_holds_main_copy_plus_moments(main_dtype, m, v):
    """bf16 weights: a main copy of its own but for bf16 (the weights themselves), plus the
    moments: (0 if bf16 else main) + m + v; weights, gradients, all-gathers unchanged."""
    got = precision(precision_key("bf16", adam_dtypes=(main_dtype, m, v)))
    want = (0 if main_dtype == "bf16" else SIZE[main_dtype]) + SIZE[m] + SIZE[v]
    assert got.optimizer == want
    assert (got.weights, got.grads, got.gathered, got.step_copy) == (2, 4, 2, 0)


@pytest.mark.parametrize("dtype, main_dtype, want", [
    ("fp32", "fp32", 0), ("fp16", "fp16", 0), ("fp16", "fp32", 4), ("fp16", "bf16", None),
    ("fp8", "bf16", 0), ("mxfp8", "fp16", 2), ("nvfp4", "fp32", 4), ("fp32", "fp16", None)])
def test_the_main_weights_are_a_copy_unless_they_share_the_weights_dtype(dtype, main_dtype, want):
    """Under each dtype the main weights' bytes: none where the weights are them (fp32
    training's, bf16 beside bf16 weights, fp16 beside fp16), refused where impossible."""
    key = precision_key(dtype, adam_dtypes=(main_dtype, "bf16", "fp8"))
    if want is None:
        with pytest.raises(ConfigError, match="--main-params-dtype"):
            precision(key)
    else:
        assert precision(key).optimizer == want + 2 + 1


def test_fp8_parameters_have_no_bf16_weights_to_update():
    with pytest.raises(ConfigError, match="--main-params-dtype"):
        precision(precision_key("fp8", fp8_param_gather=True, adam_dtypes=("bf16",)))
    assert precision(precision_key("fp8", fp8_param_gather=True,
                                   adam_dtypes=("fp16", "fp32", "fp32"))).optimizer == 10


def test_the_defaults_are_megatron_fp32_state():
    assert precision_key("bf16", adam_dtypes=("fp32",) * 3) == "bf16"
    assert adam_state("bf16").held == 12 and adam_state("fp32").held == 8


def test_memory_and_zero3_state_count_the_state_bytes():
    """stage_memory: params x (2 + 4 + 4 / d) with bf16 state; ZeRO-3 over 8: 4 / 8 a parameter
    of optimizer state."""
    key, P = precision_key("bf16", adam_dtypes=("bf16", "bf16", "bf16")), 1e9
    mem = stage_memory(P, key, 0.0, 80e9, optimizer_shards=4)
    assert mem.optimizer_bytes == P * 4 / 4 and mem.total_bytes == P * (2 + 4 + 1)
    _, _, opt, _ = state_bytes(P, key, Sharding(3, 8), 8, False, 0)
    assert opt == P * 4 / 8


def test_automodel_keeps_bf16_state_and_prediction_follows():
    """--framework automodel: bf16 main weights and moments; its optimizer state is a third of
    Megatron's fp32 state."""
    assert {k: FRAMEWORKS["automodel"][k] for k in ("main_params_dtype", "exp_avg_dtype",
                                                    "exp_avg_sq_dtype")} == \
        {"main_params_dtype": "bf16", "exp_avg_dtype": "bf16", "exp_avg_sq_dtype": "bf16"}
    kw = dict(tp=1, dp=8, zero=3, dtype="bf16", seq_len=1024)
    fp32 = predict("gpt3-125m", "dgx-h100", **kw)
    bf16 = predict("gpt3-125m", "dgx-h100", **kw, **FRAMEWORKS["automodel"])
    assert bf16.memory.optimizer_bytes * 3 == pytest.approx(fp32.memory.optimizer_bytes)


def test_fsdp_fp32_params_are_fp32_main_weights():
    with pytest.raises(ConfigError, match="--main-params-dtype"):
        Layout(tp=1, dp=8, zero=3, fsdp_fp32_params=True, main_params_dtype="bf16")


@pytest.mark.parametrize("flag, value", [("--exp-avg-dtype", "int8"),
                                         ("--main-params-dtype", "fp8"),
                                         ("--exp-avg-sq-dtype", "fp64")])
def test_a_bad_state_dtype_is_one_line_naming_the_flag(capsys, flag, value):
    code = main(["predict", "--model", "gpt3-125m", "--tp", "1", flag, value])
    err = capsys.readouterr().err
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_a_main_dtype_the_weights_cannot_take_is_one_line(capsys):
    code = main(["predict", "--model", "gpt3-125m", "--tp", "1", "--dtype", "fp32",
                 "--main-params-dtype", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and "--main-params-dtype" in err and len(err.strip().splitlines()) == 1
