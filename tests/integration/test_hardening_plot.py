"""`tpsim plot` and the CLI around it, as a new user meets them: measured files with impossible
numbers, odd --out names, PDF, legends clear of the labels, help with defaults and choices,
bare `tpsim`, sorted listings, and references in the docs to files that exist."""
from __future__ import annotations

import json
import re

import pytest

from tpsim.cost.collectives import ALGORITHMS

from tpsim.cli import main
from tpsim.figures.data import Table, breakdown, intra_vs_inter, output_paths
from tpsim.sim.memory import OPTIMIZER_BYTES
from tpsim.cluster.topology import load_topology

from tests.conftest import REPO
from .test_hardening import LONG, fails, write

DTYPES = "{" + ",".join(OPTIMIZER_BYTES) + "}"     # the training dtypes, as --help lists them
REPORT = {"cases": [{"layer": "mlp", "phase": "forward", "shape": "s256", "measured_s": 0.01,
                     "predicted_s": 0.011, "error_pct": 10.0}]}


def _report(tmp_path, **case):
    return write(tmp_path, "r.json", json.dumps({"cases": [{**REPORT["cases"][0], **case}]})
                 .replace('"INF"', "Infinity").replace('"NAN"', "NaN"))


# --------------------------------------------------------------------------- measured numbers

@pytest.mark.parametrize("value", ["-5", "nan", "inf", "0", "1e400"])
def test_measured_csv_refuses_impossible_times(capsys, tmp_path, value):
    csv = write(tmp_path, "m.csv", f"size_bytes,time_us\n1024,5\n2048,{value}\n")
    fails(capsys, "plot", "collective", "--measured", csv, "--max-bytes", "1MiB",
          "--out", str(tmp_path / "c.png"), match="m.csv: line 3: time_us: expected a positive")


def test_measured_json_refuses_negative_sizes(capsys, tmp_path):
    rep = write(tmp_path, "m.json", json.dumps({"collectives": [
        {"op": "all-reduce", "ranks": 8, "size_bytes": -1024, "time_s": 1e-5}]}))
    fails(capsys, "plot", "collective", "--measured", rep, "--max-bytes", "1MiB",
          "--out", str(tmp_path / "c.png"), match="collectives[0].size_bytes")


@pytest.mark.parametrize("case, key", [
    ({"measured_s": "INF"}, "measured_s"), ({"predicted_s": "NAN"}, "predicted_s"),
    ({"measured_s": -0.01}, "measured_s"), ({"error_pct": "INF"}, "error_pct"),
    ({"measured_s": 10**400}, "measured_s"),
])
def test_validation_report_refuses_impossible_numbers(capsys, tmp_path, case, key):
    fails(capsys, "plot", "validation", "--report", _report(tmp_path, **case),
          "--out", str(tmp_path / "v.png"), match=f"cases[0].{key}")


def test_out_may_not_overwrite_the_measured_file(capsys, tmp_path):
    csv = write(tmp_path, "m.csv", "size_bytes,time_us\n1024,5\n")
    fails(capsys, "plot", "collective", "--measured", csv, "--max-bytes", "1MiB",
          "--out", str(tmp_path / "m.png"), match="overwrite")
    assert (tmp_path / "m.csv").read_text() == "size_bytes,time_us\n1024,5\n"


# --------------------------------------------------------------------------- --out

@pytest.mark.parametrize("out, match", [("", "an image file name"), ("/", "an image file name"),
                                        (".", "an image file name"), ("x.jpg", ".png, .svg, .pdf"),
                                        (LONG + ".png", "File name too long")])
def test_bad_out_names(capsys, tmp_path, monkeypatch, out, match):
    monkeypatch.chdir(tmp_path)
    fails(capsys, "plot", "collective", "--max-bytes", "1MiB", "--out", out, match=match)
    assert list(tmp_path.iterdir()) == []


def test_out_pdf_writes_a_pdf_and_missing_directories_are_created(capsys, tmp_path):
    out = tmp_path / "new" / "dir" / "c.pdf"
    assert main(["plot", "collective", "--max-bytes", "1MiB", "--out", str(out)]) == 0
    assert out.read_bytes()[:5] == b"%PDF-" and out.with_suffix(".csv").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.about.json", "c.csv", "c.pdf"]   # no c.pdf.png
    assert output_paths("fig", None)[0].name == "fig.png"
    assert output_paths("run.v2", "svg")[0].name == "run.v2.svg"


def test_out_a_directory_is_refused(capsys, tmp_path):
    (tmp_path / "d.png").mkdir()
    fails(capsys, "plot", "collective", "--max-bytes", "1MiB", "--out", str(tmp_path / "d.png"),
          match="not a directory")


# --------------------------------------------------------------------------- CSV and figures

def test_csv_has_no_none_and_no_float_residue(tmp_path):
    """host_wait_s comes out of a subtraction as 1.5e-18 s; the CSV says 0, as the figure does.
    A setting left to the model (seq_len=None) is not written as None."""
    table = intra_vs_inter("gpt3", [load_topology("dgx-h100")], micro_batch=1, seq_len=None)
    table.write_csv(tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text()
    assert "None" not in text and not re.search(r"\de-1[5-9]", text)
    t = Table("t", ("a", "b"), ({"a": 1.5e-18, "b": 2e-6},))
    t.write_csv(tmp_path / "u.csv")
    assert (tmp_path / "u.csv").read_text().splitlines()[-1] == "0.0,2e-06"


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_intra_vs_inter_legends_clear_the_plots_with_three_topologies():
    from tpsim.figures import plot
    topos = [load_topology(n) for n in ("dgx-h100", "dgx-h100-ndr-cluster", "dgx-a100-hdr-cluster")]
    fig = plot.intra_vs_inter_figure(intra_vs_inter("gpt3", topos))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert not _overlaps(legend, ax.get_window_extent(renderer))
        for other in fig.axes:
            assert not _overlaps(legend, other.get_window_extent(renderer))
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} >= \
        {"dgx-h100", "dgx-h100-ndr-cluster", "dgx-a100-hdr-cluster"}
    plot.plt.close(fig)


def test_breakdown_names_the_recompute_mode():
    table = breakdown("gpt3-350m", load_topology("dgx-h100"), 2, recompute="full")
    assert "recompute full" in table.title
    assert "recompute" not in breakdown("gpt3-350m", load_topology("dgx-h100"), 2).title


# --------------------------------------------------------------------------- the CLI itself

def test_bare_tpsim_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: tpsim")
    for command in ("predict", "collective", "models", "topologies", "plot"):
        assert command in err


@pytest.mark.parametrize("argv, shown", [
    (["predict"], [DTYPES, "(default: the first of these the device",
                   "{fused,unfused,flash2,flash3,triton}",
                   "{none,selective,full,op}", "(default: gpt3)", "(default: dgx-h100, or",
                   "(default: 8)"]),
    (["collective"], ["{auto," + ",".join(ALGORITHMS) + "}", "{auto,simple,ll,ll128}",
                      "(default: all-reduce)", "(default: 64MiB"]),
    (["plot", "collective"], ["{auto," + ",".join(ALGORITHMS) + ",all}", "{png,svg,pdf}"]),
    (["plot", "breakdown"], [DTYPES, "{none,selective,full,op}"]),
])
def test_help_shows_defaults_and_choices(capsys, argv, shown):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for s in shown:
        assert s in text, s


def test_models_are_listed_by_family_then_size(capsys):
    assert main(["models"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:]]
    gpt3 = [n for n in names if n.startswith("gpt3")]
    assert gpt3 == ["gpt3-125m", "gpt3-350m", "gpt3-760m", "gpt3-1.3b", "gpt3-2.7b",
                    "gpt3-6.7b", "gpt3-13b", "gpt3"]
    assert names.index("gpt2-xl") < names.index("gpt3-125m") < names.index("llama2-7b")


def test_repeated_single_value_flags_are_errors(capsys, tmp_path):
    fails(capsys, "plot", "breakdown", "--topology", "dgx-h100", "--topology", "dgx-a100",
          "--out", str(tmp_path / "b.png"), match="given twice")


# --------------------------------------------------------------------------- references

def test_scripts_named_in_the_docs_exist():
    """Every `bench/*.py` a README, doc or topology comment names is in the repository."""
    texts = [REPO / "README.md", *REPO.glob("docs/**/*.md"), *REPO.glob("topologies/*"),
             *REPO.glob("tests/data/**/README.md"), REPO / "bench" / "README.md"]
    named = {m for p in texts if p.is_file()
             for m in re.findall(r"bench/[\w.-]+\.py", p.read_text())}
    assert named and all((REPO / m).is_file() for m in named), sorted(named)
