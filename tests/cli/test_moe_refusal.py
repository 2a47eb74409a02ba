"""A mixture-of-experts model that tpsim does not price is refused by every pricing command
with one line and exit 2, never priced as a dense model; what is priced (the training step at
expert parallelism folded, sequence parallel with TP) prints a result."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import TpsimError
from tpsim.cli import main


@pytest.mark.parametrize("argv, says", [
    (["predict", "--model", "mixtral-8x7b", "--tp", "8"], "--sequence-parallel"),
    (["predict", "--model", "deepseek-v3", "--tp", "8", "--sequence-parallel",
      "--attention", "unfused"], "--attention"),
    (["predict", "--model", "gpt-oss-120b", "--tp", "1", "--attention", "unfused", "--json"],
     "--attention"),
])
def test_unpriced_moe_is_refused_in_one_line(argv, says, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert says in captured.err


def test_moe_training_step_prices_with_layer_overrides(capsys):
    """--layers keeps the experts: two MoE layers priced as MoE layers."""
    assert main(["predict", "--model", "mixtral-8x7b", "--tp", "8", "--layers", "2",
                 "--sequence-parallel", "--seq", "4096"]) == 0
    assert "one layer (x2)" in capsys.readouterr().out


def test_python_api_refuses_what_is_not_priced():
    with pytest.raises(TpsimError, match="sliding-window attention"):
        tpsim.predict("gpt-oss-120b", tp=1, attention="unfused")
    assert tpsim.predict("mixtral-8x22b", tp=8, sequence_parallel=True, seq_len=4096).step.mfu > 0


def test_dense_models_still_price():
    assert main(["predict", "--model", "llama3-8b", "--tp", "2"]) == 0
