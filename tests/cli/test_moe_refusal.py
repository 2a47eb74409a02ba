"""A mixture-of-experts model is refused by every pricing command with one line and exit 2,
never priced as a dense model (its experts are not priced yet)."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import TpsimError
from tpsim.cli import main


@pytest.mark.parametrize("argv", [
    ["predict", "--model", "mixtral-8x7b", "--tp", "8"],
    ["predict", "--model", "mixtral-8x7b", "--tp", "8", "--layers", "2"],   # overrides keep experts
    ["infer", "--model", "qwen3-30b-a3b", "--tp", "2"],
    ["search", "--model", "deepseek-v3", "--gpus", "8", "--global-batch", "8"],
    ["predict", "--model", "gpt-oss-120b", "--tp", "4", "--json"],
])
def test_moe_model_is_refused_in_one_line(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert "mixture-of-experts layers are not priced yet" in captured.err


def test_python_api_refuses_too():
    with pytest.raises(TpsimError, match="not priced yet"):
        tpsim.predict("mixtral-8x22b", tp=8)
    with pytest.raises(TpsimError, match="not priced yet"):
        tpsim.infer("qwen3-235b-a22b", tp=8)


def test_dense_models_still_price():
    assert main(["predict", "--model", "llama3-8b", "--tp", "2"]) == 0
