"""Full recomputation of some layers (Megatron-core's --recompute-method block | uniform,
--recompute-num-layers): the memory and time of block N interpolated between none and full,
uniform's groups keeping one input each, the recomputed layers' units, the flags' refusals."""
from __future__ import annotations

import math

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.layout import Layout
from tpsim.spec.model import load_model
from tpsim.training.partial_recompute import Partial
from tpsim.training.predict import predict

RUN = dict(tp=1, micro_batch=1, seq_len=1024, dtype="bf16")     # one stage, one micro-batch


def run(**kw):
    return predict("llama3-8b", "dgx-h100", **{**RUN, **kw})


@pytest.mark.parametrize("n", [1, 5, 31])
def test_block_interpolates_memory_and_time(n):
    """One stage of L = 32 layers, block N: N layers as full, L - N as none; the activations,
    the whole model's time and the step's move by N / L of the way from none to full."""
    none, full = run(), run(recompute="full")
    p = run(recompute="full", recompute_method="block", recompute_num_layers=n)
    share = n / 32
    for get in (lambda x: x.memory.activations_bytes, lambda x: x.model.step_s,
                lambda x: x.step.time_s, lambda x: x.model.hardware_flops):
        assert get(p) == pytest.approx(get(none) + share * (get(full) - get(none)), rel=1e-12)
    assert p.model.flops == pytest.approx(none.model.flops, rel=1e-12)


def test_block_of_every_layer_is_full():
    full = run(recompute="full")
    p = run(recompute="full", recompute_method="block", recompute_num_layers=40)
    assert p.memory.activations_bytes == pytest.approx(full.memory.activations_bytes, rel=1e-12)
    assert p.step.time_s == pytest.approx(full.step.time_s, rel=1e-12)


def test_block_counts_each_virtual_stage():
    """pp 2 x 2 chunks of 8 layers: block 3 recomputes 3 of each chunk's 8, 12 of the 32, and
    the first stage holds its chunks' activations as in-flight counts of each."""
    kw = dict(pp=2, virtual_stages=2, global_batch=4)
    none, full = run(**kw), run(recompute="full", **kw)
    p = run(recompute="full", recompute_method="block", recompute_num_layers=3, **kw)
    assert p.model.step_s == pytest.approx(
        none.model.step_s + 12 / 32 * (full.model.step_s - none.model.step_s), rel=1e-12)
    for a, b, c in zip(none.stage_memory, full.stage_memory, p.stage_memory):
        assert c.activations_bytes == pytest.approx(
            a.activations_bytes + 3 / 8 * (b.activations_bytes - a.activations_bytes), rel=1e-12)


@pytest.mark.parametrize("n", [1, 3, 32])
def test_uniform_keeps_one_input_per_group(n):
    """uniform N: every layer re-runs (full's time); each group of N layers keeps its input
    only: ceil(L / N) layer inputs (b s h, 16-bit) instead of L."""
    full = run(recompute="full")
    p = run(recompute="full", recompute_method="uniform", recompute_num_layers=n)
    inputs = 1024 * 4096 * 2
    assert full.memory.activations_bytes - p.memory.activations_bytes == \
        pytest.approx((32 - math.ceil(32 / n)) * inputs, rel=1e-12)
    assert p.step.time_s == pytest.approx(full.step.time_s, rel=1e-12)


def test_units_rename_a_virtual_stages_first_layers():
    """Units run last layer first: the stage's first layers are its last units."""
    units = [("output", 9, 1), ("moe", 5, 3), ("layer", 4, 1), ("embedding", 7, 1)]
    assert Partial("block", 2).units(units) == [
        ("output", 9, 1), ("moe", 5, 2), ("moe.rc", 5, 1), ("layer.rc", 4, 1), ("embedding", 7, 1)]
    assert Partial("block", 9).units(units)[1:3] == [("moe.rc", 5, 3), ("layer.rc", 4, 1)]
    assert Partial("uniform", 2).units(units) == units


def test_model_layers_of_a_model_with_dense_layers_first():
    """DeepSeek-V3 (3 dense layers first) split 1 + 4 x 15: block 2 recomputes layer 0 and
    layers 1, 2 (dense), 5, 6, ... (MoE)."""
    m = load_model("deepseek-v3")
    assert Partial("block", 2).model_layers(m, [1] + [4] * 15) == (3, 28)


@pytest.mark.parametrize("kw, flag", [
    (dict(recompute="full", recompute_method="block"), "--recompute-method"),
    (dict(recompute="full", recompute_num_layers=2), "--recompute-num-layers"),
    (dict(recompute="selective", recompute_method="block", recompute_num_layers=2),
     "--recompute-method"),
    (dict(recompute="full", recompute_modules=("mlp",)), "--recompute-modules"),
    (dict(recompute="full", recompute_method="every", recompute_num_layers=2),
     "--recompute-method")])
def test_layout_refuses_what_megatron_refuses(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        Layout(**kw)


def test_cli_errors_are_one_line(capsys):
    base = ["predict", "--model", "llama3-8b", "--tp", "1", "--seq", "1024"]
    assert main(base + ["--recompute", "full", "--recompute-method", "block"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--recompute-num-layers" in err and len(err.splitlines()) == 1
    assert main(base + ["--recompute", "full", "--recompute-method", "block",
                        "--recompute-num-layers", "5", "--json"]) == 0
    assert '"recompute_method": "block"' in capsys.readouterr().out


def test_block_on_a_moe_model_moves_its_moe_layers():
    """Qwen3-30B-A3B (every layer MoE), one stage of 48: block 6 recomputes 6 MoE layers."""
    kw = dict(tp=1, micro_batch=1, seq_len=512, dtype="bf16")
    none = predict("qwen3-30b-a3b", "dgx-h100", **kw)
    full = predict("qwen3-30b-a3b", "dgx-h100", recompute="full", **kw)
    p = predict("qwen3-30b-a3b", "dgx-h100", recompute="full", recompute_method="block",
                recompute_num_layers=6, **kw)
    for get in (lambda x: x.memory.activations_bytes, lambda x: x.model.step_s):
        assert get(p) == pytest.approx(get(none) + 6 / 48 * (get(full) - get(none)), rel=1e-12)
