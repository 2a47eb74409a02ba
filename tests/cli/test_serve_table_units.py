"""`tpsim serve --rate 2,inf`: the table's rate column says what it counts."""
from __future__ import annotations

from tpsim.cli import main


def test_a_varied_rate_is_explained_under_the_table(capsys):
    assert main(["serve", "--model", "llama3-8b", "--rate", "2,inf", "--requests", "20",
                 "--prompt", "1k", "--gen", "32"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["rate", "out"]
    assert "(rate: requests per second, Poisson arrivals (inf: all at once); out tok/s" in "\n".join(out)


def test_a_table_without_a_rate_keeps_its_note(capsys):
    assert main(["serve", "--model", "llama3-8b", "--tp", "1,2", "--requests", "20",
                 "--prompt", "1k", "--gen", "32"]) == 0
    assert "\n(out tok/s over the run;" in capsys.readouterr().out
