"""Bytes per parameter and per quantized element of each training dtype and its Megatron-core
options (tpsim.spec.precision), Blackwell's block-scaled formats by hand, and their predictions."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import BYTES_PER_ELEMENT
from tpsim.spec.precision import (FP8_RECIPES, LOW_PRECISION, QUANTIZED_BYTES, Precision,
                                  amax_pass_bytes, cast_write_bytes, key_quantizer, precision,
                                  precision_key, quantizer, weights_bytes)
from tpsim.spec.model_params import plain_params
from tpsim.training.predict import predict


def test_block_scaled_bytes_by_hand():
    """MXFP8: 32 fp8 bytes + 1 E8M0 scale = 33 bytes per 32 elements; NVFP4: 16 half-bytes + 1
    E4M3 scale = 9 bytes per 16 elements."""
    assert QUANTIZED_BYTES["mxfp8"] * 32 == 33
    assert QUANTIZED_BYTES["nvfp4"] * 16 == 9
    assert all(BYTES_PER_ELEMENT[q] == QUANTIZED_BYTES[q] for q in LOW_PRECISION)


def test_weights_keep_bf16_and_both_quantized_copies():
    """bf16 2 + row-wise and column-wise copies: fp8 4 (Hopper's transposed copy), MXFP8
    2 + 66/32, NVFP4 2 + 18/16; the fp32 gradients and Adam state are bf16's."""
    assert precision("mxfp8").weights == pytest.approx(2 + 66 / 32)
    assert precision("nvfp4").weights == pytest.approx(2 + 18 / 16)
    for q in ("mxfp8", "nvfp4"):
        p = precision(q)
        assert (p.grads, p.optimizer, p.gathered) == (4, 12, 2)


def test_cast_writes_two_copies_and_nvfp4_reads_its_amax():
    assert cast_write_bytes("fp8") == 2
    assert cast_write_bytes("mxfp8") == pytest.approx(66 / 32)
    assert cast_write_bytes("nvfp4") == pytest.approx(18 / 16)
    assert amax_pass_bytes("nvfp4") == 2 and amax_pass_bytes("mxfp8") == 0


def test_current_scaling_reads_the_input_again_unless_its_amax_was_fused():
    """fp8's current scaling: the amax kernel reads the 16-bit input (2 bytes) before the cast
    writes its copy and transpose; delayed and blockwise find their scales in the cast; a norm
    that found the amax leaves the cast its write alone."""
    assert amax_pass_bytes(quantizer("fp8", "tensorwise")) == 2
    assert amax_pass_bytes(quantizer("fp8", "tensorwise"), amax_fused=True) == 0
    assert cast_write_bytes(quantizer("fp8", "tensorwise")) == 2
    assert amax_pass_bytes(quantizer("fp8", "delayed")) == amax_pass_bytes("fp8") == 0
    assert amax_pass_bytes(quantizer("fp8", "blockwise")) == 0
    assert amax_pass_bytes("nvfp4", amax_fused=True) == 0
    assert quantizer("mxfp8", "tensorwise") == "mxfp8" and quantizer("", "tensorwise") == ""


@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_the_key_names_a_recipe_other_than_delayed_and_only_for_fp8(recipe):
    key = precision_key("fp8", True, True, False, recipe)
    assert key_quantizer(key) == f"fp8:{recipe}"
    assert (recipe in key.split("+")) == (recipe != "delayed")
    assert precision(key) == precision(precision_key("fp8", True, True))
    assert precision_key("mxfp8", fp8_recipe=recipe) == "mxfp8"


@pytest.mark.parametrize("topology, fp4_over_fp8", [("dgx-b200", 2.0), ("gb200-nvl72", 2.0),
                                                     ("gb300-nvl72", 3.0)])
def test_blackwell_peaks(topology, fp4_over_fp8):
    """Datasheets: MXFP8 at the FP8 rate; NVFP4 twice it (B200 9 PF, GB200 10 PF dense), GB300
    three times (15 PF dense)."""
    dev = tpsim.cluster.topology.load_topology(topology).device
    assert dev.peak("mxfp8") == dev.peak("fp8")
    assert dev.peak("nvfp4") == fp4_over_fp8 * dev.peak("fp8")


def test_lower_precision_is_faster_and_hopper_refuses_it():
    kw = dict(tp=1, dp=8, global_batch=16, seq_len=4096)
    t = {d: tpsim.predict("llama3-8b", "dgx-b200", dtype=d, **kw).step.time_s
         for d in ("bf16", "mxfp8", "nvfp4")}
    assert t["nvfp4"] < t["mxfp8"] < t["bf16"]
    with pytest.raises(tpsim.base.errors.ConfigError, match="--dtype"):
        tpsim.predict("llama3-8b", "dgx-h100", dtype="nvfp4", **kw)


def test_a_dtype_alone_is_its_own_key():
    assert precision_key("bf16") == "bf16"
    assert precision(precision_key("bf16")) == Precision(2, 4, 12, 2)


def test_bf16_gradients_halve_the_main_gradients_and_add_the_fp32_copy():
    """--grad-reduce-in-bf16: 2-byte main gradients; the optimizer step's fp32 copy of its
    shard, 4 bytes (12 + 4, as fp16's row); fp16 keeps its 2-byte gradients unchanged."""
    assert precision(precision_key("bf16", grad_reduce_in_bf16=True)) == Precision(2, 2, 12, 2, 4)
    assert precision(precision_key("fp16", grad_reduce_in_bf16=True)) == precision("fp16")


def test_fp8_parameters_are_the_fp8_copy_and_its_transpose():
    """--fp8-param-gather: weights 1 + 1 bytes, all-gathered in 1 byte; quantized dtypes only."""
    key = precision_key("fp8", grad_reduce_in_bf16=True, fp8_param_gather=True)
    assert key == "fp8+bf16-grads+fp8-params"
    assert precision(key) == Precision(2, 2, 12, 1, 4)
    with pytest.raises(ConfigError, match="--fp8-param-gather"):
        precision(precision_key("bf16", fp8_param_gather=True))


def test_any_layout_fp8_keeps_no_transpose():
    """Blackwell: bf16 + one fp8 copy (3 bytes), fp8 parameters 1 byte; other dtypes keep
    their key (block-scaled copies differ by direction)."""
    assert precision(precision_key("fp8", any_layout=True)).weights == 3
    assert precision(precision_key("fp8", True, True, True)).weights == 1
    assert precision_key("mxfp8", any_layout=True) == "mxfp8"


def test_block_scaled_parameters_are_their_two_quantized_copies():
    """MXFP8 (1 + 1/32 bytes an element, both copies all-gathered: 2) and NVFP4 (1/2 + 1/16,
    the packed row-wise 4 bits all-gathered: 1/2) parameters, no bf16 copy."""
    mx = precision(precision_key("mxfp8", True, True))
    assert (mx.weights, mx.grads, mx.gathered) == (2 * (1 + 1 / 32), 2, 2)
    nv = precision(precision_key("nvfp4", True, True))
    assert (nv.weights, nv.gathered) == (2 * (1 / 2 + 1 / 16), 1 / 2)


def test_the_options_change_memory_and_the_dp_traffic_not_the_layer():
    """Llama 3 8B FP8 on 8 H100s, DP 8, distributed optimizer: both options take 4 bytes per
    parameter off the weights and gradients (2 of the embedding's, output layer's and norms',
    which have no bf16 copy to drop: they never had a quantized one), add the optimizer step's 4 / 8 copy (held in the
    step, when the activations are freed: not on top of them), and leave the layer as it was; the reduce-scatter carries half the bytes, so the step is no slower."""
    kw = dict(tp=1, dp=8, global_batch=16, seq_len=2048, dtype="fp8",
              distributed_optimizer=True)
    base = predict("llama3-8b", "dgx-h100", **kw)
    opt = predict("llama3-8b", "dgx-h100", grad_reduce_in_bf16=True, fp8_param_gather=True, **kw)
    n = base.memory.params_per_gpu
    m = tpsim.load_model("llama3-8b")
    plain = plain_params(m, 1, m.layers, True, True)
    assert base.memory.total_bytes - opt.memory.total_bytes == pytest.approx(n * 4 - 2 * plain)
    assert opt.memory.step_copy_bytes == pytest.approx(n * 4 / 8)
    assert opt.layer.total_s == base.layer.total_s
    assert opt.step.time_s <= base.step.time_s
    with pytest.raises(ConfigError, match="--fp8-param-gather"):
        predict("llama3-8b", "dgx-h100", tp=8, fp8_param_gather=True)


@pytest.mark.parametrize("key, linear, plain", [
    ("fp8", 4, 2), ("fp8+bf16-grads", 4, 2), ("fp8+fp8-params", 2, 2),
    ("fp8+fp8-params+any-layout", 1, 2), ("fp8+any-layout", 3, 2),
    ("mxfp8", 2 + 2 * (1 + 1 / 32), 2), ("bf16", 2, 2), ("fp32", 4, 4)])
def test_only_transformer_engines_linears_keep_quantized_weight_copies(key, linear, plain):
    """weights_bytes: a linear's weight costs the precision's bytes (bf16 + fp8 copy and its
    transpose under fp8), an embedding, output-layer or norm parameter its 16-bit copy alone
    (fp32 runs: its fp32 weight)."""
    params, outside = 1000, 300
    assert weights_bytes(key, params, outside) == pytest.approx(
        (params - outside) * linear + outside * plain)
