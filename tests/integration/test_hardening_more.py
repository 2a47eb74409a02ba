"""More bad input, each case once a traceback, a hang, unbounded work or a silently accepted
value: one line naming the flag or file, exit code 2; the Python API raises TpsimError."""
from __future__ import annotations

import pytest

from tpsim.cli import main
from tpsim.base.errors import ConfigError
from tpsim.base.schema import read_text
from tpsim.cluster.topology import load_topology
from tpsim.spec.model import load_model

from .test_hardening import fails


# --------------------------------------------------------------------------- directories

@pytest.mark.parametrize("argv", [
    ["predict", "--model", "{d}"], ["predict", "--model", "{d}/"],
    ["predict", "--topology", "{d}"], ["predict", "--topology", "{d}/"],
    ["plot", "validation", "--report", "{d}", "--out", "{t}/v.png"],
    ["plot", "collective", "--measured", "{d}", "--max-bytes", "1MiB", "--out", "{t}/c.png"],
])
def test_a_directory_is_not_a_file(capsys, tmp_path, argv):
    d = tmp_path / "dir"
    d.mkdir()
    fails(capsys, *[a.format(d=d, t=tmp_path) for a in argv], match="a directory")


def test_a_directory_from_the_api(tmp_path):
    with pytest.raises(ConfigError, match="a directory must hold config.json"):
        load_model(tmp_path)
    with pytest.raises(ConfigError, match="a directory"):
        load_topology(tmp_path)
    with pytest.raises(ConfigError, match="a directory"):
        read_text(tmp_path, "a file")


def test_a_directory_holding_config_json_is_still_a_model(tmp_path):
    import json
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 100,
        "n_positions": 128}))
    assert load_model(tmp_path).layers == 2


# --------------------------------------------------------------------------- search

@pytest.mark.parametrize("argv", [
    ["search", "--gpus", "13", "--global-batch", "64"],
    ["search", "--gpus", "512", "--global-batch", "3"],
    ["plot", "search", "--gpus", "13", "--global-batch", "64", "--out", "{t}/s.png"],
])
def test_search_with_no_layout_that_can_run_says_why(capsys, tmp_path, argv):
    fails(capsys, *[a.format(t=tmp_path) for a in argv],
          match="--gpus: expected a number of GPUs with a layout that can run")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- TP overlap

def test_tp_overlap_needs_a_row_per_gemm_chunk(capsys):
    import tpsim
    fails(capsys, "predict", "--model", "gpt3-350m", "--tp", "2", "--sequence-parallel",
          "--tp-comm-overlap", "--micro-batch", "1", "--seq", "2",
          match="--tp-comm-overlap: expected --micro-batch x --seq of at least 4")
    with pytest.raises(ConfigError, match="--tp-comm-overlap"):
        tpsim.predict("gpt3-350m", "dgx-h100", tp=2, seq_len=2, sequence_parallel=True,
                      tp_comm_overlap=True)
    assert main(["predict", "--model", "gpt3-350m", "--tp", "2", "--sequence-parallel",
                 "--tp-comm-overlap", "--micro-batch", "2", "--seq", "2"]) == 0


def test_search_drops_tp_overlap_with_too_few_rows(capsys):
    import json
    assert main(["search", "--model", "gpt3-125m", "--topology", "dgx-h100", "--gpus", "2",
                 "--global-batch", "1", "--seq", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dropped"]["overlap_rows"] > 0
    assert not any(c["tp_comm_overlap"] for c in out["candidates"])


# --------------------------------------------------------------------------- plot validation

def _report(tmp_path, **case):
    import json
    base = {"layer": "mlp", "phase": "forward", "shape": "s256", "measured_s": 0.01,
            "predicted_s": 0.011, "error_pct": 10.0}
    return str(tmp_path / "r.json") if (tmp_path / "r.json").write_text(
        json.dumps({"cases": [{**base, **case}]})) else ""


@pytest.mark.parametrize("key", ["measured_s", "predicted_s", "error_pct"])
@pytest.mark.parametrize("value", [1e-300, 1e300, -1e300])
def test_validation_report_numbers_beyond_a_figure(capsys, tmp_path, key, value):
    if key == "error_pct" and abs(value) < 1:
        return                                  # a tiny error is a good prediction
    fails(capsys, "plot", "validation", "--report", _report(tmp_path, **{key: value}),
          "--out", str(tmp_path / "v.png"), match=f"cases[0].{key}: expected a number")
    assert not (tmp_path / "v.png").exists()


def test_validation_report_at_the_ends_of_the_range_draws(capsys, tmp_path):
    assert main(["plot", "validation", "--report",
                 _report(tmp_path, measured_s=1e-12, predicted_s=1e6, error_pct=-1e6),
                 "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.png").stat().st_size > 0


# --------------------------------------------------------------------------- numbers on flags

@pytest.mark.parametrize("argv", [
    ["predict", "--tp", "\uff18"], ["predict", "--tp", "\u0663"], ["predict", "--tp", "1_0"],
    ["predict", "--tp", "2,\u0662"], ["predict", "--micro-batch", "1_000"],
    ["search", "--gpus", "1_6", "--global-batch", "8"], ["infer", "--batch", "\uff12"],
    ["plot", "pipeline", "--tp", "-1", "--out", "{t}/p.png"],
    ["predict", "--dropout", "\u0660.\u0661"], ["predict", "--dropout", "0_1"],
])
def test_integers_and_numbers_in_ascii_digits_only(capsys, tmp_path, argv):
    fails(capsys, *[a.format(t=tmp_path) for a in argv], match="argument --")


def test_dropout_minus_zero_is_zero(capsys):
    assert main(["predict", "--model", "gpt3-350m", "--tp", "2", "--dropout", "-0"]) == 0
    out = capsys.readouterr().out
    assert "dropout 0," in out and "-0" not in out.splitlines()[1]
    assert main(["predict", "--model", "gpt3-350m", "--tp", "+2", "--dropout", ".1"]) == 0


# --------------------------------------------------------------------------- output paths

@pytest.mark.parametrize("name", ["figs", "figs.png"])
def test_out_naming_a_directory_is_refused(capsys, tmp_path, name):
    (tmp_path / name).mkdir()
    fails(capsys, "plot", "collective", "--max-bytes", "1MiB", "--out", str(tmp_path / name),
          match="not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_trace_into_a_missing_directory_is_refused(capsys, tmp_path):
    fails(capsys, "predict", "--model", "gpt3-350m", "--tp", "2", "--trace",
          str(tmp_path / "no" / "such" / "t.json"), match="--trace: expected a file in an "
          "existing directory")
    assert list(tmp_path.iterdir()) == []
    assert main(["predict", "--model", "gpt3-350m", "--tp", "2", "--trace",
                 str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.json").is_file()


# --------------------------------------------------------------------------- collective

@pytest.mark.parametrize("flag, value", [("--min-bytes", "nan"), ("--max-bytes", "1MiB")])
def test_sweep_bounds_without_sweep_are_refused(capsys, flag, value):
    fails(capsys, "collective", flag, value, match=f"{flag}: expected --sweep with it")
    assert main(["collective", "--sweep", flag, value.replace("nan", "1MiB")]) == 0


# --------------------------------------------------------------------------- API types

@pytest.mark.parametrize("kwargs, flag", [
    ({"tp_across_nodes": "yes"}, "--tp-across-nodes"), ({"tp_across_nodes": 1}, "--tp-across-nodes"),
    ({"tp_across_nodes": None}, "--tp-across-nodes"), ({"progress": "x"}, "progress"),
])
def test_search_api_types(kwargs, flag):
    from tpsim.search.driver import best_by, search
    with pytest.raises(ConfigError) as e:
        search("gpt3-125m", "dgx-h100", 8, 8, **kwargs)
    assert e.value.source == flag
    with pytest.raises(ConfigError) as e:
        best_by("gpt3-125m", "dgx-h100", 8, 8, lambda lay: lay.tp, **kwargs)
    assert e.value.source == flag


def test_best_by_needs_a_function():
    from tpsim.search.driver import best_by
    with pytest.raises(ConfigError, match="key: expected a function"):
        best_by("gpt3-125m", "dgx-h100", 8, 8, "tp")


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", ['"gpt\\nx"', '"gpt\\tx"', '"gpt\\u2028x"', '"\\x1b[2Jgpt"'])
def test_a_name_is_one_line(capsys, tmp_path, name):
    from tests.conftest import REPO
    text = (REPO / "tpsim" / "spec" / "models" / "gpt3.yaml").read_text()
    assert "\nname: gpt3\n" in text
    path = tmp_path / "m.yaml"
    path.write_text(text.replace("\nname: gpt3\n", f"\nname: {name}\n"))
    fails(capsys, "predict", "--model", str(path), match="name: expected one line of text")


def test_a_config_json_in_a_directory_named_with_a_newline(tmp_path):
    import json
    d = tmp_path / "bad\nname"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 64, "vocab_size": 100,
        "n_positions": 128}))
    with pytest.raises(ConfigError, match="one line of text"):
        load_model(d)


def test_a_bound_a_rounding_above_its_step_prints_as_zero_gap():
    import dataclasses
    from tpsim.report.search import search_report
    from tpsim.search.driver import search
    result = search("gpt3-125m", "dgx-h100", 8, 8, top=1)
    text = search_report(dataclasses.replace(result, max_gap=-1e-16))
    assert "at least 100.0% of each one's simulated step" in text and "100.1%" not in text


# --------------------------------------------------------------------------- bounded work

def test_jobs_at_most_the_cores(capsys, monkeypatch):
    import os
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    fails(capsys, "search", "--gpus", "8", "--global-batch", "8", "--jobs", "3",
          match="--jobs: expected at most the 2 CPU cores")
    fails(capsys, "plot", "search", "--gpus", "8", "--global-batch", "8", "--jobs", "1000000",
          "--out", "s.png", match="--jobs: expected at most the 2 CPU cores")


def test_a_huge_label_makes_a_bounded_figure(capsys, tmp_path):
    import json
    import struct
    case = {"layer": "L" * 200_000, "phase": "P" * 200_000, "shape": {"s": "x" * 200_000},
            "measured_s": 0.01, "predicted_s": 0.011, "error_pct": 10.0}
    (tmp_path / "r.json").write_text(json.dumps({"cases": [case]}))
    assert main(["plot", "validation", "--report", str(tmp_path / "r.json"),
                 "--out", str(tmp_path / "v.png")]) == 0
    assert (tmp_path / "v.csv").stat().st_size < 2000

    def png_size(path):
        return struct.unpack(">II", path.read_bytes()[16:24])
    assert max(png_size(tmp_path / "v.png")) < 3000
    from tpsim.figures import plot
    from tpsim.figures.data import Table
    fig, ax = plot.plt.subplots()
    ax.set_title("T" * 20_000)
    image, _ = plot.save(fig, Table("t", ("a",), ()), tmp_path / "t.png")
    assert max(png_size(image)) <= plot.MAX_FIGURE_INCHES * 130


def test_a_wide_measured_csv_reads_in_linear_time(tmp_path):
    """100,000 columns: the header was indexed once per column (quadratic: hours)."""
    import subprocess
    import sys
    from tests.conftest import REPO
    cols = ",".join(f"c{i}" for i in range(100_000))
    ones = ",".join(["1"] * 100_000)
    (tmp_path / "w.csv").write_text(f"size_bytes,time_us,{cols}\n1024,5,{ones}\n2048,6,{ones}\n")
    r = subprocess.run([sys.executable, "-c", "from tpsim.calibrate.measured import "
                        f"read_measured; print(len(read_measured({str(tmp_path / 'w.csv')!r}, "
                        "'all-reduce')))"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "2", r.stderr[-500:]


def test_top_is_bounded(capsys):
    from tpsim.search.driver import MAX_TOP, search
    fails(capsys, "search", "--gpus", "8", "--global-batch", "8", "--top", "2147483647",
          match="--top: expected at most 100 candidates")
    with pytest.raises(ConfigError, match="--top"):
        search("gpt3-125m", "dgx-h100", 8, 8, top=MAX_TOP + 1)
    assert main(["search", "--model", "gpt3-125m", "--topology", "dgx-h100", "--gpus", "8",
                 "--global-batch", "8", "--top", str(MAX_TOP)]) == 0


def test_comma_lists_are_counted_before_they_are_built(capsys, monkeypatch):
    import itertools
    hundred = ",".join(str(i) for i in range(1, 101))

    def no_product(*_):
        raise AssertionError("the cross product was built")
    monkeypatch.setattr(itertools, "product", no_product)
    fails(capsys, "predict", *[x for f in ("--tp", "--micro-batch", "--seq", "--pp", "--dp",
                                           "--global-batch") for x in (f, hundred)],
          match="--tp, --micro-batch, --seq, --pp, --dp, --global-batch: expected comma lists "
                "of at most 1000 combinations")
    fails(capsys, "collective", "--ranks", hundred, "--bytes", hundred, "--algo", "ring,tree",
          match="--ranks, --algo, --bytes: expected comma lists of at most 1000")


@pytest.mark.parametrize("kwargs, flag", [
    ({"global_batch": 10**400}, "--global-batch"),       # divisors() of it: a hang
    ({"gpus": 2**31}, "--gpus"), ({"topology": [1], "nodes": 2}, "--topology"),
])
def test_search_api_bounds_and_topology(kwargs, flag):
    from tpsim.search.driver import search
    args = {"model": "gpt3-125m", "topology": "dgx-h100", "gpus": 8, "global_batch": 8, **kwargs}
    with pytest.raises(ConfigError) as e:
        search(**args)
    assert e.value.source == flag


def test_search_takes_a_topology_path(tmp_path):
    from pathlib import Path
    from tests.conftest import REPO
    from tpsim.search.driver import search
    assert search("gpt3-125m", Path(REPO / "topologies" / "dgx-h100.yaml"), 8, 8,
                  top=1).candidates


@pytest.mark.parametrize("argv", [
    ["predict", "--model", "gpt3-125m", "--tp", "1", "--pp", "2", "--global-batch", "2147483647"],
    ["predict", "--model", "gpt3-125m", "--tp", "1", "--pp", "2", "--global-batch", "131072"],
])
def test_a_step_of_too_many_micro_batches_is_one_line(argv, capsys):
    """--global-batch 2^31-1 was simulated micro-batch by micro-batch (hours): now bounded."""
    import time
    from tpsim.cli import main
    t0 = time.process_time()
    assert main(argv) == 2
    assert time.process_time() - t0 < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "micro-batches per step" in err[0], err


def test_the_search_drops_layouts_of_too_many_micro_batches():
    from tpsim.search.driver import search
    r = search("gpt3-125m", "dgx-a100", 8, 2 ** 20, top=1)
    assert r.dropped.get("micro_batches", 0) > 0
    assert r.candidates, "layouts of few enough micro-batches run"
    assert all(2 ** 20 // (c.layout.micro_batch * c.layout.dp) <= 65536 for c in r.candidates)
