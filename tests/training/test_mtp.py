"""Multi-token prediction in the training step: trained by default as the model declares it
(--mtp-layers, Megatron's --mtp-num-layers), placed in the last virtual stage with or without a
pipeline layout (the same step either way), its own parameters on that stage, counted in
Megatron's TFLOP/s; a layout that disagrees is refused in one line."""
from __future__ import annotations

import dataclasses

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.model import load_model
from tpsim.spec.model_params import mtp_module_params
from tpsim.training.flops import megatron_flops
from tpsim.training.mtp import LastStage, last_stage

TOPO = "dgx-h100-ndr-cluster"
JOB = dict(pp=2, global_batch=16)


def _models():
    base = load_model("gpt3-1.3b")
    return base, dataclasses.replace(base, mtp_layers=1)


def test_layout_and_no_layout_agree():
    """Megatron-core puts the block in the last stage without a layout (mtp_on_this_rank):
    the same step, memory and TFLOP/s as the layout that lists it there."""
    _, mtp = _models()
    a = tpsim.predict(mtp, TOPO, **JOB)
    b = tpsim.predict(mtp, TOPO, pipeline_layout="Et*12|t*12mL", **JOB)
    assert a.step.time_s == b.step.time_s
    assert [s.total_bytes for s in a.stage_memory] == [s.total_bytes for s in b.stage_memory]
    assert a.step.megatron_tflops_per_gpu == b.step.megatron_tflops_per_gpu


def test_default_is_the_models_and_zero_turns_it_off():
    """--mtp-layers defaults to the model's mtp_layers; 0 prices the model without it,
    exactly; the model's count with it grows the last stage only, and Megatron's count by
    its MTP terms."""
    base, mtp = _models()
    off = tpsim.predict(mtp, TOPO, mtp_layers=0, **JOB)
    plain = tpsim.predict(base, TOPO, **JOB)
    on = tpsim.predict(mtp, TOPO, **JOB)
    assert off.step.time_s == plain.step.time_s
    assert (on.inputs.mtp_layers, off.inputs.mtp_layers, plain.inputs.mtp_layers) == (1, 0, 0)
    assert on.step.time_s > off.step.time_s
    assert on.stage_memory[0].total_bytes == off.stage_memory[0].total_bytes
    assert on.stage_memory[-1].total_bytes > off.stage_memory[-1].total_bytes
    ratio = megatron_flops(mtp, 16, mtp.seq_len, 8, mtp_layers=1) / \
        megatron_flops(mtp, 16, mtp.seq_len, 8)
    assert on.step.megatron_tflops_per_gpu * on.step.time_s == pytest.approx(
        ratio * off.step.megatron_tflops_per_gpu * off.step.time_s, rel=1e-12)


def test_disagreeing_layout_is_refused():
    """A layout's m must be the layers trained: refused (ConfigError naming the flag), and by
    the CLI in one line, exit 2."""
    base, mtp = _models()
    with pytest.raises(ConfigError, match="--mtp-layers"):
        tpsim.predict(mtp, TOPO, pipeline_layout="Et*12|t*12mL", mtp_layers=0, **JOB)
    with pytest.raises(ConfigError, match="--pipeline-layout"):
        tpsim.predict(mtp, TOPO, pipeline_layout="Et*12|t*12L", **JOB)


def test_cli_refusal_is_one_line(capsys):
    assert main(["predict", "--model", "gpt3-1.3b", "--pp", "2",
                 "--pipeline-layout", "Et*12|t*12mL"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pipeline-layout" in err and "--mtp-layers" in err


@pytest.mark.parametrize("tp, pp, sp", [(1, 1, False), (8, 16, True)])
def test_own_parameters_closed_form(tp, pp, sp):
    """eh_proj 2h x h split over tp, three norms whole: 2 h^2 / tp + 3 norm per depth; the
    norms hold no quantized copy and are TP-synced under SP; with pp > 1 the untied embedding's
    copy (vocab / tp x h) besides. DeepSeek-V3 with 2 depths past its 61 layers."""
    m = load_model("deepseek-v3")
    h, norm = m.hidden, m.norm_params
    assert mtp_module_params(m, tp) == 2 * h * h // tp + 3 * norm
    layers = [61 // pp] * (pp - 1) + [61 - 61 // pp * (pp - 1) + 2]
    copy = m.padded_vocab(tp) * h // tp if pp > 1 else 0
    assert last_stage(m, tp, pp, layers, sp) == LastStage(
        2, copy, 2 * (2 * h * h // tp + 3 * norm), 6 * norm, 6 * norm if sp else 0)
    assert last_stage(m, tp, pp, layers[:-1] + [layers[-1] - 2], sp) == LastStage()
