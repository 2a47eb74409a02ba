"""Megatron-core's pipeline layout string: its closed forms, its refusals in one line naming
--pipeline-layout, and a layout that places the layers as --first/--last-stage-layers do
predicting exactly what they predict."""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.report.render import prediction_json
from tpsim.spec.layout import Layout
from tpsim.spec.model import load_model
from tpsim.spec.pipeline_layout import check_layers, mtp_count, stage_layers, unroll
from tpsim.training.pipeline import split_layers


def test_deepseek_v3_layout():
    """Megatron-Bridge's DeepSeek-V3 H100 layout at PP 8 x VP 4: the embedding beside one
    layer, thirty stages of two, the MTP layer beside the loss: 61 layers in 32 stages."""
    counts = stage_layers("Et|(tt|)*30mL", 8, 4)
    assert counts == [1] + [2] * 30 + [0]
    assert check_layers("Et|(tt|)*30mL", 8, 4, 61, 1) == counts


def test_repeats_and_commas_unroll_as_megatron():
    """Megatron's docstring example, and its cosmetic commas."""
    assert unroll("Ettt|(tt|)*29,m|L") == ["Ettt"] + ["tt"] * 29 + ["m", "L"]
    assert unroll("Et*3|t*4,|t*3L") == ["Ettt", "tttt", "tttL"]


@given(pp=st.integers(1, 6), v=st.integers(1, 4), per=st.integers(1, 5))
def test_even_layout_is_the_even_split(pp, v, per):
    """One stage string per virtual stage, ``per`` layers each: split_layers' even split."""
    text = "E" + "|".join(["t" * per] * (pp * v)) + "L"
    assert stage_layers(text, pp, v) == split_layers(per * pp * v, pp, v)


@pytest.mark.parametrize("text, pp, v", [
    ("Et|tL", 3, 1), ("Et|t|tL", 2, 2), ("tE|tL", 2, 1), ("Et|EtL", 2, 1), ("Et|Lt", 2, 1),
    ("Et|tLL", 2, 1), ("Et|tx", 2, 1), ("(Et|tL", 2, 1), ("Et|tL*", 2, 1), ("", 1, 1),
])
def test_bad_layouts_name_the_flag(text, pp, v):
    with pytest.raises(ConfigError) as e:
        Layout(pp=pp, virtual_stages=v, global_batch=pp * 2, pipeline_layout=text)
    assert e.value.source == "--pipeline-layout" and "\n" not in str(e.value)


def test_the_model_checks_the_layer_counts():
    """t must be the model's layers and m its multi-token-prediction layers."""
    with pytest.raises(ConfigError, match="24 transformer layers"):
        tpsim.predict("gpt3-1.3b", "dgx-h100-ndr-cluster", pp=2, global_batch=4,
                      pipeline_layout="Et*11|t*12L")
    with pytest.raises(ConfigError, match="0 multi-token"):
        tpsim.predict("gpt3-1.3b", "dgx-h100-ndr-cluster", pp=2, global_batch=4,
                      pipeline_layout="Et*12|t*12mL")


def test_exclusive_with_first_and_last_stage_layers():
    with pytest.raises(ConfigError) as e:
        Layout(pp=2, pipeline_layout="Et|tL", first_stage_layers=1)
    assert e.value.source == "--pipeline-layout"


def test_cli_refuses_in_one_line(capsys):
    assert main(["predict", "--model", "gpt3-1.3b", "--pp", "2", "--global-batch", "4",
                 "--pipeline-layout", "Et*12|t*12L|"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--pipeline-layout" in err


@pytest.mark.parametrize("first, last, text", [
    (3, 3, "Ettt|tttt|tttL"), (2, 4, "Ett|tttt|ttttL")])
def test_layout_predicts_as_first_and_last_stage_layers(first, last, text):
    """A 10-layer model at PP 3: the same split said two ways predicts the same, number for
    number."""
    model = dataclasses.replace(load_model("gpt3-1.3b"), layers=10)
    job = dict(tp=2, pp=3, global_batch=6)
    by_ends = tpsim.predict(model, "dgx-h100-ndr-cluster", first_stage_layers=first,
                            last_stage_layers=last, **job)
    by_layout = tpsim.predict(model, "dgx-h100-ndr-cluster", pipeline_layout=text, **job)
    said = [prediction_json(p) for p in (by_layout, by_ends)]
    assert said[0]["inputs"].pop("layout")["pipeline_layout"] == text    # how each was asked
    assert said[1]["inputs"].pop("layout")["first_stage_layers"] == first
    assert json.dumps(said[0]) == json.dumps(said[1])
    assert by_layout.step == by_ends.step and by_layout.memory == by_ends.memory


def test_multi_token_prediction_priced_in_the_last_virtual_stage():
    """A multi-token-prediction layer (m) runs beside the output layer: one more layer, one more
    pass of the output layer and its loss and one more embedding lookup on the last stage,
    which the 1F1B steady state waits on (the last stage the slower one): the step grows by the
    micro-batches times those and the module's own ops (:mod:`tpsim.layer.mtp`). Untied, the last stage also holds a copy of the embedding (its
    weights and state: at least its 16-bit weights more there than tied). Elsewhere than
    the last virtual stage it is refused."""
    job = dict(pp=2, global_batch=32)
    grown = {}
    for tied in (True, False):
        base = dataclasses.replace(load_model("gpt3-1.3b"), tie_embeddings=tied)
        mtp = dataclasses.replace(base, mtp_layers=1)
        a = tpsim.predict(base, "dgx-h100-ndr-cluster", pipeline_layout="Et*12|t*12L", **job)
        b = tpsim.predict(mtp, "dgx-h100-ndr-cluster", pipeline_layout="Et*12|t*12mL", **job)
        t = a.model
        assert b.step.time_s - a.step.time_s == pytest.approx(
            32 * (t.layer_s + t.output_s + t.embedding_s + _mtp_s(base)), rel=0.02)
        assert b.stage_memory[0].total_bytes == a.stage_memory[0].total_bytes
        grown[tied] = b.stage_memory[-1].total_bytes - a.stage_memory[-1].total_bytes
    assert grown[False] - grown[True] >= 2 * load_model("gpt3-1.3b").embedding_params(1)
    assert mtp_count("Et*12|t*12mL") == 1
    with pytest.raises(ConfigError, match="last virtual stage"):
        tpsim.predict(mtp, "dgx-h100-ndr-cluster", pipeline_layout="Et*11m|t*13L", **job)


def _mtp_s(m) -> float:
    """One depth's own ops, forward and backward, at predict's defaults (tp 8, bf16, H100)."""
    from tpsim.cluster.topology import load_topology
    from tpsim.sim.simulate import phase_times
    from tpsim.training.mtp import mtp_simulation
    from tpsim.training.predict import simulate_layer
    sim, pricing = simulate_layer(m, load_topology("dgx-h100-ndr-cluster"), 8, 1, m.seq_len,
                                  "bf16", False, m.dropout, m.attention)
    return sum(phase_times(mtp_simulation(sim, pricing, 8, False)))
