"""`tpsim infer` and `tpsim serve` with comma lists: one row (or JSON object) per combination,
each the single run's; an error names its combination."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import main

INFER = ["infer", "--model", "llama3-8b", "--prompt", "512", "--gen", "32"]
SERVE = ["serve", "--model", "llama3-8b", "--tp", "1", "--requests", "60", "--prompt", "256",
         "--gen", "16"]


def _json(argv, capsys):
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_infer_lists_are_the_single_runs(capsys):
    many = _json(INFER + ["--tp", "1,2", "--batch", "1,8"], capsys)
    assert [(d["inputs"]["tp"], d["inputs"]["batch"]) for d in many] == \
        [(1, 1), (1, 8), (2, 1), (2, 8)]
    one = _json(INFER + ["--tp", "2", "--batch", "8"], capsys)
    assert many[3]["decode"]["time_per_token_s"] == one["decode"]["time_per_token_s"]
    assert many[3]["energy"] == one["energy"]
    assert main(INFER + ["--tp", "1,2", "--batch", "1,8"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:2] == ["tp", "batch"] and len(rows) == 1 + 4 + 1 + 5
    assert f"{one['prefill']['time_s'] * 1e3:8.2f}ms" in rows[4]


def test_serve_lists_compare_rates(capsys):
    many = _json(SERVE + ["--rate", "2,inf"], capsys)
    assert [d["inputs"]["rate"] for d in many] == [2.0, "inf"]
    assert many[1]["throughput"]["output_tokens_per_s"] > \
        many[0]["throughput"]["output_tokens_per_s"]
    assert main(SERVE + ["--max-num-seqs", "8,64"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[0] == "max_num_seqs" and len(rows) == 1 + 2 + 1 + 2


def test_an_error_names_its_combination(capsys):
    assert main(INFER + ["--tp", "3,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tp" in err[0] and "tp=3" in err[0]
    assert main(SERVE + ["--rate", "1,0"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_a_bad_largest_graph_is_one_line(capsys):
    assert main(SERVE + ["--cuda-graph-max-bs", "-8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cuda-graph-max-bs" in err[0], err


@pytest.mark.parametrize("argv, said", [
    (["collective", "--bytes", "1MiB", "--nccl", "2.18,2.18.5"], "'2.18,2.18.5' (2.18 twice)"),
    (["predict", "--model", "gpt3-125m", "--tp", "2,2"], "'2,2' (2 twice)"),
    (["predict", "--model", "gpt3-125m", "--seq", "8k,8192"], "'8k,8192' (8192 twice)"),
    (["serve", "--model", "llama3-8b", "--rate", "2,2.0"], "'2,2.0' (2.0 twice)"),
])
def test_a_value_given_twice_in_a_comma_list_is_refused(argv, said, capsys):
    """--nccl 2.18,2.18.5 printed two rows alike with no column telling them apart (both
    are 2.18); a comma list now takes each value once, as read."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"expected a comma list of distinct values, got {said}" in err
