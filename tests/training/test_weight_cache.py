"""Transformer Engine's per-step casts of the quantized weights (tpsim.training.weight_cache)."""
from __future__ import annotations

import pytest

from tpsim.cost.compute import cast_transpose_time, elementwise_time
from tpsim.spec.precision import precision_key
from tpsim.training import terms
from tpsim.spec.model import load_model
from tpsim.spec.model_params import plain_params
from tpsim.training.pipeline import split_layers
from tpsim.training.weight_cache import stage_plain_params, weight_cast_s

from tests.conftest import make_topology

LEVEL = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]
DEV = make_topology(LEVEL, {"memory_efficiency": 0.5, "cast_transpose_efficiency": 0.25,
                            "kernel_launch_us": 2}).device
P = 1e9


def test_fp8_weights_cast_transposed_once_per_step():
    """fp8: read 2, write the fp8 copy and its transpose, 1 + 1 bytes: 4 P at the
    cast-transpose efficiency (4 GB at 1000 GB/s x 0.25 = 16 ms, + 2 us); bf16 grads change
    nothing; fp8 parameters write only the transpose (read 1, write 1); bf16 casts nothing."""
    assert weight_cast_s(P, "fp8", DEV) == pytest.approx(2e-6 + 16e-3, rel=1e-12)
    assert weight_cast_s(P, precision_key("fp8", True), DEV) == weight_cast_s(P, "fp8", DEV)
    assert weight_cast_s(P, precision_key("fp8", True, True), DEV) == \
        cast_transpose_time(2 * P, DEV)
    assert weight_cast_s(P, "bf16", DEV) == weight_cast_s(P, "fp16", DEV) == 0.0


def test_current_scaling_reads_each_bf16_weight_twice():
    """--fp8-recipe tensorwise: the weight's amax kernel (read 2, a plain memory-bound kernel)
    (2 P at half the bandwidth: 4 ms)
    before its cast (4 P: 16 ms); fp8 parameters are cast by the optimizer, their transpose
    alone as under delayed scaling."""
    key = precision_key("fp8", fp8_recipe="tensorwise")
    assert weight_cast_s(P, key, DEV) == pytest.approx(2e-6 + 16e-3 + 2e-6 + 4e-3, rel=1e-12)
    assert weight_cast_s(P, precision_key("fp8", True, True, fp8_recipe="tensorwise"), DEV) == \
        cast_transpose_time(2 * P, DEV)


def test_any_layout_fp8_writes_one_copy():
    """Blackwell (+any-layout): read 2, write one fp8 copy (3 P, no transpose); fp8 parameters need no
    kernel; MXFP8 parameters were all-gathered whole (none), NVFP4's build their column-wise
    copy (read and write 1/2 + 1/16 bytes)."""
    key = precision_key("fp8", any_layout=True)
    assert key == "fp8+any-layout"
    assert weight_cast_s(P, key, DEV) == elementwise_time(3 * P, DEV)
    assert weight_cast_s(P, precision_key("fp8", True, True, True), DEV) == 0.0
    assert weight_cast_s(P, precision_key("mxfp8", True, True, True), DEV) == 0.0
    assert weight_cast_s(P, precision_key("nvfp4", True, True), DEV) == \
        elementwise_time(2 * (1 / 2 + 1 / 16) * P, DEV)


def test_block_scaled_weights_cast_row_and_column_wise():
    """MXFP8: read 2, write two copies of 1 + 1/32 bytes, a plain memory-bound kernel."""
    assert weight_cast_s(P, "mxfp8", DEV) == elementwise_time(P * (2 + 2 * (1 + 1 / 32)), DEV)


def test_optimizer_term_adds_the_weight_casts():
    """The step's optimizer term is the optimizer pass plus the casts of every held weight."""
    assert terms.optimizer_s(P, 8, "fp8", DEV) == pytest.approx(
        terms.optimizer_s(P, 8, "bf16", DEV) + weight_cast_s(P, "fp8", DEV), rel=1e-12)


def test_each_stage_counts_its_norms_and_its_ends():
    """Llama 3 8B over pp 4 x 2 chunks: each stage 8 layers' norms, the embedding on the first,
    the output layer on the last; together the one-stage model's."""
    m = load_model("llama3-8b")
    per = stage_plain_params(m, 1, split_layers(m.layers, 4, 2), 4, 2)
    assert per == (plain_params(m, 1, 8, True, False), plain_params(m, 1, 8, False, False),
                   plain_params(m, 1, 8, False, False), plain_params(m, 1, 8, False, True))
    assert sum(per) == plain_params(m, 1, m.layers, True, True)
