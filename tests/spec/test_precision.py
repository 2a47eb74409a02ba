"""Bytes per parameter of a training precision and its Megatron-core options."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.spec.precision import Precision, precision, precision_key
from tpsim.training.predict import predict


def test_a_dtype_alone_is_its_own_key():
    assert precision_key("bf16") == "bf16"
    assert precision(precision_key("bf16")) == Precision(2, 4, 12, 2)


def test_bf16_gradients_halve_the_main_gradients_and_add_the_fp32_copy():
    """--grad-reduce-in-bf16: 2-byte main gradients; the optimizer's fp32 copy of its shard,
    +4 bytes (16 in all, as fp16's row); fp16 keeps its 2-byte gradients unchanged."""
    assert precision(precision_key("bf16", grad_reduce_in_bf16=True)) == Precision(2, 2, 16, 2)
    assert precision(precision_key("fp16", grad_reduce_in_bf16=True)) == precision("fp16")


def test_fp8_parameters_are_the_fp8_copy_and_its_transpose():
    """--fp8-param-gather: weights 1 + 1 bytes, all-gathered in 1 byte; fp8 only."""
    key = precision_key("fp8", grad_reduce_in_bf16=True, fp8_param_gather=True)
    assert key == "fp8+bf16-grads+fp8-params"
    assert precision(key) == Precision(2, 2, 16, 1)
    with pytest.raises(ConfigError, match="--fp8-param-gather"):
        precision(precision_key("bf16", fp8_param_gather=True))


def test_the_options_change_memory_and_the_dp_traffic_not_the_layer():
    """Llama 3 8B FP8 on 8 H100s, DP 8, distributed optimizer: both options take 4 bytes per
    parameter off the weights and gradients, add 4 / 8 to the optimizer's, and leave the layer
    as it was; the reduce-scatter carries half the bytes, so the step is no slower."""
    kw = dict(tp=1, dp=8, global_batch=16, seq_len=2048, dtype="fp8",
              distributed_optimizer=True)
    base = predict("llama3-8b", "dgx-h100", **kw)
    opt = predict("llama3-8b", "dgx-h100", grad_reduce_in_bf16=True, fp8_param_gather=True, **kw)
    n = base.memory.params_per_gpu
    assert base.memory.total_bytes - opt.memory.total_bytes == pytest.approx(n * (4 - 4 / 8))
    assert opt.layer.total_s == base.layer.total_s
    assert opt.step.time_s <= base.step.time_s
    with pytest.raises(ConfigError, match="--fp8-param-gather"):
        predict("llama3-8b", "dgx-h100", tp=8, fp8_param_gather=True)
