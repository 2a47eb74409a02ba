"""--cp and --cp-comm on the command line: the rows, the JSON keys, one-line errors."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_cp_rows_and_inputs(capsys):
    code, out, _ = _run(capsys, "predict", "--model", "llama2-7b", "--cp", "2", "--tp", "4",
                        "--seq", "16384", "--cp-comm-type", "all-gather", "--json")
    assert code == 0
    d = json.loads(out)
    assert (d["inputs"]["cp"], d["inputs"]["cp_comm"], d["inputs"]["gpus"]) == (2, "all-gather", 8)
    assert {c["group"] for c in d["collectives"]} == {"tp", "cp"}


@pytest.mark.parametrize("argv, flag", [
    (("predict", "--model", "llama2-7b", "--cp", "3", "--seq", "4096"), "--seq"),
    (("predict", "--model", "llama2-7b", "--cp", "2", "--attention", "unfused"), "--attention"),
    (("predict", "--model", "llama2-7b", "--cp", "2", "--cp-comm", "ring"), "--cp-comm"),
    (("predict", "--model", "deepseek-v3", "--tp", "4", "--sequence-parallel", "--cp", "2"),
     "--cp"),
    (("search", "--model", "llama2-7b", "--gpus", "8", "--global-batch", "8", "--cp", "3"),
     "--cp"),
])
def test_bad_cp_is_one_line(capsys, argv, flag):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and flag in err, err
