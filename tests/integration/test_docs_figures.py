"""The figures committed under docs/img/ are what the commands the docs give for them draw today:
each CSV (every number drawn) regenerated and compared cell by cell."""
from __future__ import annotations

import csv
import math

import pytest

from tpsim.cli import main

from tests.conftest import REPO

IMG = REPO / "docs" / "img"
FIGURES = {   # the command docs/training-step.md or docs/search.md gives for each
    "intra-vs-inter-gpt3": ["plot", "intra-vs-inter", "--model", "gpt3"],
    "pipeline-gpt3-pp4": ["plot", "pipeline", "--model", "gpt3", "--tp", "8", "--pp", "4", "--dp", "4",
                          "--global-batch", "32", "--virtual-stages", "2", "--sequence-parallel",
                          "--distributed-optimizer"],
    "search-gpt3-512": ["plot", "search", "--model", "gpt3", "--topology", "dgx-a100-hdr-cluster",
                        "--gpus", "512", "--global-batch", "1536"],
}


def _rows(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _same(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    except ValueError:
        return a == b


def test_every_committed_figure_has_its_command():
    assert sorted(p.stem for p in IMG.glob("*.csv")) == sorted(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_committed_figure_is_what_its_command_draws(name, tmp_path, capsys):
    assert main([*FIGURES[name], "--out", str(tmp_path / f"{name}.png")]) == 0
    capsys.readouterr()
    now, committed = _rows(tmp_path / f"{name}.csv"), _rows(IMG / f"{name}.csv")
    assert now[0] == committed[0] and len(now) == len(committed), name
    for i, (a, b) in enumerate(zip(now[1:], committed[1:]), 2):
        assert all(_same(x, y) for x, y in zip(a, b)), (
            f"docs/img/{name}.csv line {i} is stale: rerun `tpsim {' '.join(FIGURES[name])} "
            f"--out docs/img/{name}.png`\nnow:       {a}\ncommitted: {b}")
