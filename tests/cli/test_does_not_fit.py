"""A layout that does not fit says by how much, and `try next` names what would cut it."""
from __future__ import annotations

import re

from tpsim.cli import main


def test_does_not_fit_says_by_how_much(capsys):
    assert main(["predict", "--model", "llama3-70b", "--tp", "2", "--dp", "4",
                 "--global-batch", "128"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"^DOES NOT FIT: ([\d.]+) GiB per GPU needed, ([\d.]+) GiB over the ([\d.]+) "
                  r"GiB usable of the H100-SXM5-80GB's 79.11 GiB$", out, re.M)
    assert m, out
    need, over, usable = map(float, m.groups())
    assert over > 0 and abs(need - usable - over) <= 0.11
    tried = out.split("try next:")[1]
    assert "--distributed-optimizer" in tried and "tpsim search" in tried


def test_fits_keeps_its_line(capsys):
    assert main(["predict", "--model", "llama3-8b", "--tp", "8"]) == 0
    assert re.search(r"^FITS: [\d.]+ GiB per GPU, [\d.]+ GiB usable of the ", capsys.readouterr().out,
                     re.M)
