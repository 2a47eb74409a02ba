"""`tpsim serve-search`: the table, JSON and CSV of one search agree; bad flags are one line
and exit 2."""
from __future__ import annotations

import csv
import io
import json

import pytest

from tpsim.cli import main

ARGS = ["serve-search", "--model", "llama2-7b", "--gpus", "1", "--ttft-p99", "0.5",
        "--tpot-p99", "0.03", "--requests", "60", "--prompt", "300", "--gen", "24",
        "--max-num-seqs", "64"]


def test_table_json_and_csv_agree(capsys):
    assert main(ARGS + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert main(ARGS + ["--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert main(ARGS) == 0
    text = capsys.readouterr().out.splitlines()
    cands = out["candidates"]
    assert cands and len(rows) == len(cands)
    for c, row in zip(cands, rows):
        assert c["ttft_s_p99"] <= 0.5 and c["tpot_s_p99"] <= 0.03
        assert float(row["output_tokens_per_s_per_gpu"]) == pytest.approx(
            c["output_tokens_per_s_per_gpu"])
    assert len(text) == 8 + len(cands) and all(len(x) <= 120 for x in text)
    assert f"{cands[0]['requests_per_s']:8.2f}" in text[5]


@pytest.mark.parametrize("extra, flag", [
    (["--gpus", "0"], "--gpus"), (["--ttft-p99", "0"], "--ttft-p99"), (["--pp", "2"], "--pp"),
    (["--tpot-p99", "inf"], "--tpot-p99"), (["--gpus", "9", "--topology", "dgx-h100"], "--gpus"),
    (["--max-num-seqs", "a"], "--max-num-seqs"), (["--json", "--csv"], "--csv")])
def test_bad_flags_are_one_line_and_exit_2(extra, flag, capsys):
    assert main(ARGS + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_every_engine_knob_of_serve_applies(capsys):
    """Each of `tpsim serve`'s engine settings the search does not vary is a flag here too,
    held for every run: a slower host loop serves fewer tokens."""
    from tpsim.cli.serve_search import SETTINGS
    from tpsim.spec.serve import ServeSettings
    from tpsim.spec.settings import declared
    assert set(SETTINGS) == {f.name for f in declared(ServeSettings)} - {
        "rate", "max_num_seqs", "users"}
    best = []
    for extra in ([], ["--host-step-us", "3000"]):
        assert main(ARGS + extra + ["--json"]) == 0
        best.append(json.loads(capsys.readouterr().out)["candidates"][0])
    assert best[1]["output_tokens_per_s_per_gpu"] < best[0]["output_tokens_per_s_per_gpu"]
