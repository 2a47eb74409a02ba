"""--csv of predict, search and infer: plain CSV (a header, then one row per result, no '#'
lines) whose columns are the --json object's scalar keys, flattened with dots, with its values."""
import csv
import json

import pytest

from tpsim.cli import main
from tpsim.report.flat_csv import csv_text, flatten

SEARCH = ["search", "--model", "gpt3-125m", "--topology", "dgx-a100", "--gpus", "8",
          "--global-batch", "16", "--top", "3"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def rows(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines and not any(ln.startswith("#") for ln in lines)
    return list(csv.DictReader(lines))


def same(cell: str, value) -> bool:
    return cell == ("" if value is None else str(value))


@pytest.mark.parametrize("argv, count", [
    (["predict", "--model", "gpt3-1.3b", "--tp", "4", "--pp", "2", "--global-batch", "4"], 1),
    (["predict", "--model", "gpt3-1.3b", "--tp", "1,2", "--micro-batch", "1,2"], 4),
    (["infer", "--model", "llama2-7b", "--batch", "4"], 1),
])
def test_csv_rows_are_the_json(capsys, argv, count):
    js = json.loads(run(capsys, *argv, "--json"))
    objs = js if isinstance(js, list) else [js]
    got = rows(run(capsys, *argv, "--csv"))
    assert len(got) == len(objs) == count and list(got[0])[:len(flatten(objs[0]))] == \
        list(flatten(objs[0]))              # the columns in the first row's order, then others'
    for row, obj in zip(got, objs):
        flat = flatten(obj)
        assert set(flat) <= set(row) and "inputs.model" in row
        assert all(row[k] == "" for k in row if k not in flat)   # another row's key: empty
        assert all(same(row[k], v) for k, v in flat.items() if not isinstance(v, float))
        assert all(float(row[k]) == v for k, v in flat.items() if isinstance(v, float))


def test_search_csv_is_a_row_per_candidate(capsys):
    js = json.loads(run(capsys, *SEARCH, "--json"))
    got = rows(run(capsys, *SEARCH, "--csv"))
    assert len(got) == len(js["candidates"]) == 3
    for row, cand in zip(got, js["candidates"]):
        assert row["model"] == "gpt3-125m" and row["predict"] == cand["predict"]
        assert float(row["step_time_s"]) == cand["step_time_s"] and int(row["tp"]) == cand["tp"]
        assert row["formula.step_time_s"] == cand["formula"]["step_time_s"]


def test_csv_and_json_together_is_one_line(capsys):
    assert main(["predict", "--csv", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "--csv or --json" in err


def test_flatten_and_csv_text():
    """Nested keys joined by dots, lists left out, a missing key or null an empty cell."""
    assert flatten({"a": 1, "b": {"c": None, "d": [1]}, "e": [2]}) == {"a": 1, "b.c": None}
    assert csv_text([{"a": 1, "b": {"c": 2}}, {"a": "x,y", "d": True}]) == \
        'a,b.c,d\n1,2,\n"x,y",,True'
