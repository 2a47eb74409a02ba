"""One type for a run's layout: tpsim.Layout (training) and tpsim.ServingLayout (serving) are
frozen and keyword-only, check their own values naming the flag, give predict and infer the
same numbers as the keyword form, and are what the command line's flags are made from."""
from __future__ import annotations

import dataclasses
import json

import pytest

import tpsim
from tpsim.base.errors import ConfigError, TpsimError
from tpsim.base.schema import MAX_INT
from tpsim.cli import build_parser, main
from tpsim.report.render import infer_json, prediction_json
from tpsim.spec.layout import Layout
from tpsim.spec.serving import ServingLayout
from tpsim.spec.settings import declared

LAYOUTS = [
    dict(tp=8),
    dict(tp=4, pp=4, global_batch=16, recompute="full"),
    dict(tp=8, pp=4, dp=2, virtual_stages=2, global_batch=64, sequence_parallel=True),
    dict(tp=2, dp=4, micro_batch=2, global_batch=32, distributed_optimizer=True,
         overlap_grad_reduce=False, seq_len=1024, dtype="fp16"),
    dict(tp=8, pp=4, global_batch=8, sequence_parallel=True, tp_comm_overlap=True,
         first_stage_layers=5, last_stage_layers=5, nodes=4),
]


def _json(pred) -> str:
    return json.dumps(prediction_json(pred), sort_keys=True)


@pytest.mark.parametrize("kw", LAYOUTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_layout_and_keywords_predict_the_same(kw):
    model = "gpt3-13b" if kw.get("first_stage_layers") is None else "gpt3-1.3b"
    topo = "dgx-h100-ndr-cluster"
    by_layout = tpsim.predict(model, topo, layout=tpsim.Layout(**kw))
    assert _json(by_layout) == _json(tpsim.predict(model, topo, **kw))
    assert by_layout.inputs.tp == kw["tp"] and by_layout.inputs.pp == kw.get("pp", 1)
    assert tpsim.predict_layer(model, topo, layout=Layout(**kw)) == \
        tpsim.predict_layer(model, topo, **kw)


def test_layout_is_frozen_and_keyword_only():
    lay = Layout(tp=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lay.tp = 8
    with pytest.raises(TypeError):
        Layout(4)                                   # noqa - positional on purpose
    with pytest.raises(TypeError):
        Layout(tensor_parallel=4)
    assert "Layout" in tpsim.__all__ and tpsim.Layout is Layout
    assert hash(Layout(tp=4)) == hash(lay) and Layout(tp=4) == lay != Layout(tp=2)


@pytest.mark.parametrize("kw, flag", [
    (dict(tp=0), "--tp"), (dict(tp=8.0), "--tp"), (dict(pp=True), "--pp"),
    (dict(dp=MAX_INT + 1), "--dp"), (dict(micro_batch=-1), "--micro-batch"),
    (dict(seq_len="2048"), "--seq"), (dict(global_batch=0), "--global-batch"),
    (dict(virtual_stages=0), "--virtual-stages"), (dict(dtype="int8"), "--dtype"),
    (dict(dtype=["bf16"]), "--dtype"), (dict(sequence_parallel=1), "--sequence-parallel"),
    (dict(dropout=1.0), "--dropout"), (dict(dropout=True), "--dropout"),
    (dict(attention=""), "--attention"), (dict(recompute="some"), "--recompute"),
    (dict(overlap_grad_reduce=None), "--overlap-grad-reduce"),
    (dict(nodes=0), "--nodes"), (dict(first_stage_layers=0), "--first-stage-layers"),
    (dict(virtual_stages=2), "--virtual-stages"),
    (dict(tp_comm_overlap=True), "--tp-comm-overlap"),
    (dict(tp=1, sequence_parallel=True, tp_comm_overlap=True), "--tp-comm-overlap"),
    (dict(dp=2, global_batch=3), "--global-batch"),
    (dict(pp=4, virtual_stages=2, global_batch=6), "--global-batch"),
    (dict(train_metrics=65), "--train-metrics"), (dict(train_metrics=-1), "--train-metrics"),
])
def test_bad_values_name_their_flag(kw, flag):
    with pytest.raises(ConfigError) as e:
        Layout(**kw)
    assert e.value.source == flag


@pytest.mark.parametrize("kw, flag", [
    (dict(ep=0), "--ep"), (dict(zero=True), "--zero"),
])
def test_bad_parallel_values_are_refused(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        Layout(**kw)
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict("gpt3", "dgx-h100", **kw)
    assert Layout(ep=1, cp=1, zero=0) == Layout()


def test_replace_checks_again():
    lay = Layout(tp=8, pp=2, global_batch=8)
    assert dataclasses.replace(lay, virtual_stages=2).virtual_stages == 2
    with pytest.raises(ConfigError, match="--tp"):
        dataclasses.replace(lay, tp=0)
    with pytest.raises(ConfigError, match="--global-batch"):
        dataclasses.replace(lay, dp=3)
    with pytest.raises(ConfigError, match="--seq"):
        dataclasses.replace(lay, cp=4, seq_len=100)       # not 2 x cp chunks


@pytest.mark.parametrize("kw", LAYOUTS + [dict(tp=0), dict(dropout=True), dict(cp=2),
                                         dict(pp=1, virtual_stages=3)])
def test_the_fast_paths_make_and_check_what_the_dataclass_does(kw):
    """Layout.of (the keyword form) and Layout.replace (predict's defaults) are
    Layout(**kw) and dataclasses.replace: the same layout, or the same error."""
    def outcome(make):
        try:
            return make()
        except ConfigError as e:
            return str(e)
    assert outcome(lambda: Layout.of(kw)) == outcome(lambda: Layout(**kw))
    base = Layout(tp=2, pp=4, global_batch=8)
    assert outcome(lambda: base.replace(**kw)) == \
        outcome(lambda: dataclasses.replace(base, **kw))
    with pytest.raises(TypeError):
        Layout.of({"tensor_parallel": 2})


def test_layout_beside_keywords():
    lay = Layout(tp=4, pp=2, global_batch=8)
    same = tpsim.predict("gpt3-1.3b", "dgx-h100", layout=lay, tp=4)       # agrees: fine
    assert _json(same) == _json(tpsim.predict("gpt3-1.3b", "dgx-h100", layout=lay))
    with pytest.raises(TpsimError, match="tp"):
        tpsim.predict("gpt3-1.3b", "dgx-h100", layout=lay, tp=8)
    with pytest.raises(TpsimError, match="pp"):
        tpsim.predict_layer("gpt3-1.3b", "dgx-h100", layout=lay, pp=1)
    with pytest.raises(ConfigError, match="layout"):
        tpsim.predict("gpt3-1.3b", "dgx-h100", layout={"tp": 4})
    with pytest.raises(TypeError):
        tpsim.predict("gpt3-1.3b", "dgx-h100", layout=lay, bogus=1)


def test_checks_that_need_the_topology_read_the_layout():
    with pytest.raises(ConfigError, match="at most the 8 GPUs"):
        tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=16))
    with pytest.raises(ConfigError, match="--pp"):
        tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=1, pp=5))     # 96 layers over 5
    with pytest.raises(ConfigError, match="--attention"):
        tpsim.predict("gpt3", "dgx-a100", layout=Layout(attention="flash3"))


def test_predict_kwargs_is_the_keyword_form():
    lay = Layout(tp=2, pp=2, global_batch=4, sequence_parallel=True)
    assert lay.predict_kwargs() == dict(tp=2, pp=2, global_batch=4, sequence_parallel=True)
    assert Layout(**lay.predict_kwargs()) == lay
    assert Layout(tp=8).predict_kwargs() == {}


def test_every_field_declares_its_meaning_flag_and_values():
    for f in declared(Layout) + declared(ServingLayout):
        meta = f.metadata
        assert meta["doc"] and meta["flag"].startswith("--") and meta["kind"]
    assert len(declared(Layout)) == len(dataclasses.fields(Layout))
    assert set(Layout.flags()) == {f.name for f in dataclasses.fields(Layout)}


def _help(*argv) -> str:
    parser = build_parser(list(argv))
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    for name in argv[1:]:
        sub = sub._subparsers._group_actions[0].choices[name]
    return sub.format_help()


def test_the_predict_flags_are_the_layouts_fields():
    from tpsim.cli.layout_args import cli_flag
    text = _help("predict")
    for f in declared(Layout):
        assert f" {cli_flag(f)} " in text or f" {cli_flag(f)}\n" in text, f.name
    assert "--no-overlap-grad-reduce" in text and "--seq TOKENS" in text
    infer = _help("infer")
    for f in declared(ServingLayout):
        assert cli_flag(f) in infer, f.name


@pytest.mark.parametrize("command", ["predict", "infer", "serve"])
def test_the_comma_lists_are_the_flags_that_take_them(command):
    """A command's LISTS (what its combinations vary, the last fastest) are the flags its parser
    gives a comma-list type (--model, --topology and the fields declared ``lists``), in the
    order its help lists them."""
    import importlib
    from tpsim.cli.lists import int_list, name_list, probability_list, rate_list, token_list
    parser = build_parser([command])._subparsers._group_actions[0].choices[command]
    kinds = (int_list, name_list, rate_list, probability_list, token_list)
    takes = [a.dest for a in parser._actions if a.nargs is None and a.type is not None and
             (a.type in kinds or a.type.__name__ == "choice list")]
    lists = importlib.import_module(f"tpsim.cli.{command}").LISTS
    assert list(dict.fromkeys(takes)) == list(lists)    # a Megatron-LM alias repeats its dest


def test_the_step_fields_are_layout_fields():
    from tpsim.cli.predict import STEP_FIELDS
    assert set(STEP_FIELDS) <= set(Layout.flags())


def test_the_command_line_builds_the_same_layout():
    from tpsim.cli.layout_args import layout_from_args
    args = build_parser(["predict"]).parse_args(
        ["predict", "--tp", "4", "--pp", "2", "--global-batch", "8", "--seq", "1024",
         "--no-overlap-grad-reduce", "--dropout", "0"])
    (combo,) = [{k: v[0] for k, v in vars(args).items() if isinstance(v, tuple)}]
    lay = layout_from_args(args, given=combo)
    assert lay == Layout(tp=4, pp=2, global_batch=8, seq_len=1024, overlap_grad_reduce=False,
                         dropout=0.0)


def test_command_line_refuses_expert_flags_on_a_dense_model(capsys):
    assert main(["predict", "--model", "gpt3-1.3b", "--expert-tp", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--expert-tp" in err and "has no experts" in err
    assert main(["predict", "--model", "gpt3-1.3b", "--cp", "1", "--zero", "0"]) == 0


def test_serving_layout_and_keywords_infer_the_same():
    kw = dict(tp=4, pp=2, batch=8, prompt=256, gen=16, kv_dtype="fp8", allreduce="custom")
    by_settings = tpsim.infer("llama2-70b", "dgx-h100", settings=tpsim.ServingLayout(**kw))
    assert json.dumps(infer_json(by_settings)) == \
        json.dumps(infer_json(tpsim.infer("llama2-70b", "dgx-h100", **kw)))
    with pytest.raises(TpsimError, match="batch"):
        tpsim.infer("llama2-70b", "dgx-h100", settings=ServingLayout(**kw), batch=4)


@pytest.mark.parametrize("kw, flag", [
    (dict(tp=0), "--tp"), (dict(gen=1), "--gen"), (dict(batch=1.5), "--batch"),
    (dict(dtype="fp32"), "--dtype"), (dict(kv_dtype="int4"), "--kv-dtype"),
    (dict(allreduce="mpi"), "--allreduce"), (dict(eager="yes"), "--eager"),
])
def test_serving_layout_checks_its_values(kw, flag):
    with pytest.raises(ConfigError) as e:
        ServingLayout(**kw)
    assert e.value.source == flag
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServingLayout().tp = 2


def test_search_layouts_are_layouts_that_pass_the_checks():
    from tpsim.search.driver import Space, _run, enumerate_layouts
    run = _run("gpt3-1.3b", "dgx-a100-hdr-cluster", None, None, None, 32)
    layouts, _ = enumerate_layouts(run.model, run.topo, Space(16, 32), run.seq_len)
    assert len(layouts) > 100 and all(type(lay) is Layout for lay in layouts)
    for lay in layouts:
        assert Layout(**lay.predict_kwargs()) == lay      # made unchecked, valid all the same
        dataclasses.replace(lay, global_batch=32)         # with the run's batch too


def test_every_name_the_package_exports_resolves_and_bad_input_raises_its_error():
    for name in tpsim.__all__:
        assert getattr(tpsim, name) is not None, name
    from tpsim.base.errors import TpsimError
    assert tpsim.TpsimError is TpsimError
    with pytest.raises(tpsim.TpsimError, match="--nccl"):
        tpsim.predict(model="gpt3", tp=8, nccl="1.0")
