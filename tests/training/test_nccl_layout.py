"""The NCCL release is a field of the run's layout (tpsim.spec.release: Layout and ServingLayout
inherit it): a Layout with ``nccl="2.18"`` reaches the pricing of predict's collectives (its
NVLS all-reduces pay NCCL 2.18's 23 us of latency, not the shipped file's 25), a release tpsim
does not know is a TpsimError naming ``--nccl``, and every command's ``--nccl`` is that one
field's flag."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import TpsimError
from tpsim.cli import build_parser
from tpsim.cluster.nccl import NCCL_NVLS
from tpsim.spec.layout import Layout
from tpsim.spec.release import NCCL_HELP
from tpsim.spec.serving import ServingLayout


def _nvls_all_reduces(pred) -> dict:
    """Each NVLS all-reduce of the layer's ops: name -> its time alone, s."""
    return {o.name: o.alone_s for o in pred.ops
            if o.collective == "all-reduce" and o.algorithm.startswith("nvls")}


def test_a_layout_s_release_prices_predict_s_nvls_all_reduces():
    """TP 8 on one H100 node (dgx-h100): 48 MiB all-reduces on NVLS, above one loop of chunks,
    so the releases differ only in the latency paid once: 25 us (the file, 2.21-2.27) against
    2.18's 23 us (tuning.cc baseLat[NVLS][Simple], v2.18.5-1)."""
    plain = tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=8))
    old = tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=8, nccl="2.18"))
    new, then = _nvls_all_reduces(plain), _nvls_all_reduces(old)
    assert new and new.keys() == then.keys()
    latency_s = (25.0 - NCCL_NVLS["2.18"][0]) * 1e-6
    assert latency_s == pytest.approx(2e-6)
    for name in new:
        assert new[name] - then[name] == pytest.approx(latency_s, rel=1e-9), name
    assert old.layer.total_s < plain.layer.total_s
    assert (old.inputs.nccl, plain.inputs.nccl) == ("2.18", "topology")
    assert "nccl" not in old.inputs.layout          # echoed apart, as before
    keyword = tpsim.predict("gpt3", "dgx-h100", tp=8, nccl="v2.18.5-1")
    assert keyword.layer == old.layer and keyword.inputs == old.inputs


def test_a_serving_layout_s_release_reaches_infer():
    plain = tpsim.infer("llama2-70b", settings=ServingLayout(tp=8))
    old = tpsim.infer("llama2-70b", settings=ServingLayout(tp=8, nccl="2.18"))
    assert old.inputs.nccl == "2.18" and old.prefill.time_s != plain.prefill.time_s


@pytest.mark.parametrize("call", [
    lambda: tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=8, nccl="2.17")),
    lambda: tpsim.predict_layer("gpt3", "dgx-h100", tp=8, nccl="3.0"),
    lambda: tpsim.infer("llama2-70b", settings=ServingLayout(tp=8, nccl="latest")),
])
def test_a_release_tpsim_does_not_know_names_the_field(call):
    with pytest.raises(TpsimError, match=r"^--nccl: expected an NCCL release tpsim knows "
                                         r"\(topology, 2\.18, .*2\.30\)"):
        call()


def test_a_release_that_is_no_string_is_refused_when_made():
    for cls in (Layout, ServingLayout):
        with pytest.raises(TpsimError, match="^--nccl: expected an NCCL release"):
            cls(nccl=2.18)


def test_the_keyword_beside_a_layout_must_agree():
    with pytest.raises(TpsimError, match="nccl"):
        tpsim.serve_search("llama3-8b", gpus=8, ttft_p99_s=1.0, tpot_p99_s=0.1,
                           layout=ServingLayout(nccl="2.18"), nccl="2.19")
    with pytest.raises(TpsimError, match="nccl"):
        tpsim.predict("gpt3", "dgx-h100", layout=Layout(tp=8, nccl="2.18"), nccl="2.19")


@pytest.mark.parametrize("argv", [["predict"], ["infer"], ["serve"], ["serve-search"],
                                  ["search"], ["collective"], ["plot", "collective"],
                                  ["plot", "search"], ["plot", "pipeline"]])
def test_every_command_s_nccl_flag_is_the_layout_s_field(argv):
    parser = build_parser(argv)._subparsers._group_actions[0].choices[argv[0]]
    if len(argv) > 1:
        parser = parser._subparsers._group_actions[0].choices[argv[1]]
    (action,) = [a for a in parser._actions if "--nccl" in a.option_strings]
    assert action.dest == "nccl" and action.help.startswith(NCCL_HELP)


@pytest.mark.parametrize("value", [2.18, 3, None])
def test_a_release_that_is_no_string_says_a_string_is_wanted(value):
    """Layout(nccl=2.18) said "expected an NCCL release such as 2.18 (got 2.18)": it now
    says the release is a string, as 2.20 as a float would be 2.2."""
    with pytest.raises(TpsimError, match=r"^--nccl: expected an NCCL release, a string such "
                                         r"as '2\.18'"):
        Layout(nccl=value)


@pytest.mark.parametrize("call, says", [
    (lambda: tpsim.infer("llama2-70b", settings=ServingLayout(tp=8), nccl=2.18),
     "--nccl: expected an NCCL release, a string"),
    (lambda: tpsim.predict("gpt3", layout=Layout(tp=8), nccl=3), "--nccl: expected an NCCL"),
    (lambda: tpsim.predict("gpt3", layout=Layout(tp=8), tp="8"), "--tp: expected a positive"),
])
def test_a_bad_keyword_beside_a_layout_is_refused_as_bad_not_as_disagreeing(call, says):
    """infer(settings=..., nccl=2.18) said the keyword "disagrees" with the layout's
    'topology'; a value the field never takes is now refused for what it is."""
    with pytest.raises(TpsimError, match="^" + says):
        call()
