"""tpsim plot where matplotlib cannot be imported (an environment without tpsim's dependency):
one line saying what to install and exit 2, not a traceback; the other commands never need it."""
from __future__ import annotations

import sys

import pytest

from tpsim.cli import main


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    import tpsim.figures
    for name in [n for n in sys.modules if n.startswith("tpsim.figures.")]:
        monkeypatch.delitem(sys.modules, name)          # imported afresh, and the package's
        monkeypatch.delattr(tpsim.figures, name.rsplit(".", 1)[1], raising=False)   # name


@pytest.mark.parametrize("argv", [
    ["plot", "infer", "--model", "gpt3-125m"],
    ["plot", "pipeline", "--model", "gpt3-125m", "--tp", "2", "--pp", "2", "--global-batch", "4"],
])
def test_plot_without_matplotlib_is_one_line(capsys, tmp_path, no_matplotlib, argv):
    assert main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        "tpsim: error: tpsim plot draws with matplotlib, a dependency of tpsim this Python does "
        "not have: pip install 'matplotlib>=3.5'"]


def test_predict_never_needs_it(capsys, no_matplotlib):
    assert main(["predict", "--model", "gpt3-125m", "--tp", "2"]) == 0
