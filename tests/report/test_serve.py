"""tpsim serve's text and JSON (tpsim.report.serve): short, every section naming a function
that exists, strict JSON with an infinite rate as "inf"."""
from __future__ import annotations

import json

import pytest

from tpsim.base.formula import resolve
from tpsim.cli import main
from tpsim.report.serve import serve_json, serve_report
from tpsim.serving.engine import serve


@pytest.fixture(scope="module")
def pred():
    return serve("llama2-7b", "dgx-h100", tp=1, requests=50, prompt=400, gen=30)


def test_the_text_is_short(pred):
    lines = serve_report(pred).splitlines()
    assert len(lines) <= 30
    assert max(map(len, lines)) <= 120
    assert any("max_num_batched_tokens 8192" in x for x in lines)


def test_every_section_names_a_function(pred):
    out = serve_json(pred)
    for section in ("inputs", "engine", "throughput", "latency", "scheduler"):
        f = out[section]["formula"]
        for name in ([f] if isinstance(f, str) else f.values()):
            assert callable(resolve(name))
    assert out["inputs"]["rate"] == "inf"


def test_cli_json_round_trips(capsys):
    assert main(["serve", "--model", "llama2-7b", "--tp", "1", "--requests", "10", "--rate",
                 "2.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"]["rate"] == 2.5 and out["inputs"]["requests"] == 10
    assert out["latency"]["ttft_s"]["p50"] <= out["latency"]["ttft_s"]["p99"]


@pytest.mark.parametrize("argv, flag", [
    (["--rate", "0"], "--rate"), (["--rate", "fast"], "--rate"),
    (["--prompt-dist", "zipf"], "--prompt-dist"), (["--max-num-seqs", "0"], "--max-num-seqs"),
    (["--pp", "0"], "--pp"), (["--block-size", "x"], "--block-size")])
def test_bad_flags_are_one_line_and_exit_2(argv, flag, capsys):
    assert main(["serve", "--requests", "2", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_the_admission_is_named_where_it_is_not_vllms(pred):
    """The engine line names vLLM's knobs; SGLang's admission, which changes who runs, says so
    in the text and the JSON (a run under it otherwise reads as vLLM's)."""
    assert "admission" not in serve_report(pred)
    assert serve_json(pred)["inputs"]["admission"] == "vllm"
    sgl = serve("llama2-7b", "dgx-h100", tp=1, requests=4, admission="sglang-0.3")
    assert "  admission sglang-0.3: SGLang's PrefillAdder" in serve_report(sgl)
    assert serve_json(sgl)["inputs"]["admission"] == "sglang-0.3"
