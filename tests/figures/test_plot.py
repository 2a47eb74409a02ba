"""`tpsim plot`: each figure is a real PNG whose CSV holds the numbers the model gives.

The CSV check is the point: a figure could draw anything, but its CSV must equal what
``collective_time`` / ``predict`` return for the same inputs, row for row.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tpsim.cli import main
from tpsim.cost.collectives import bus_factor, collective_time
from tpsim.cluster.topology import load_topology

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_csv(path):
    """Rows of a figure's CSV: plain, a header then the rows (no '#' lines)."""
    lines = path.read_text().splitlines()
    assert not any(ln.startswith("#") for ln in lines), lines[0]
    return list(csv.DictReader(lines))


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, f"{path} is not a drawn PNG"


def plot(*argv):
    assert main(["plot", *map(str, argv)]) == 0


# --------------------------------------------------------------------------- collective

def test_collective_csv_is_collective_time(tmp_path):
    out = tmp_path / "coll.png"
    plot("collective", "--topology", "dgx-h100-ndr-cluster", "--ranks", 16, "--algo", "all",
         "--min-bytes", "1KiB", "--max-bytes", "1GiB", "--out", out)
    assert_png(out)
    rows = read_csv(tmp_path / "coll.csv")
    topo = load_topology("dgx-h100-ndr-cluster")
    assert {r["requested"] for r in rows} == {"auto", "ring", "tree", "nvls_tree", "hierarchical"}
    assert len(rows) == 5 * 21                       # 2^10 .. 2^30 bytes
    for r in rows:
        cost = collective_time("all-reduce", int(r["size_bytes"]), 16, topo, r["requested"])
        assert float(r["time_us"]) == pytest.approx(cost.time_s * 1e6, rel=1e-9)
        assert float(r["busbw_GBps"]) == pytest.approx(cost.busbw_Bps / 1e9, rel=1e-9)
        assert r["algorithm"] == cost.algorithm
        fixed = cost.launch_s + cost.latency_s
        assert r["bound"] == ("bandwidth" if cost.transfer_s + cost.copy_s >= fixed else "latency")
    # the knee lies inside the sweep: small messages latency-bound, large ones bandwidth-bound
    for algo in ("ring", "tree"):
        bounds = [r["bound"] for r in rows if r["requested"] == algo]
        assert bounds[0] == "latency" and bounds[-1] == "bandwidth"


def test_collective_measured_overlay_is_the_file(tmp_path):
    """nccl-tests-style CSV (vTrain's columns): 4 MiB in 100 us on 8 ranks ->
    algbw = 4194304 B / 1e-4 s = 41.94 GB/s, busbw = algbw * 2*7/8 = 73.40 GB/s."""
    measured = tmp_path / "ar.csv"
    measured.write_text("size(B),count,type,time(ns),busbw(GB/s),time(ns),busbw(GB/s)\n"
                        "4194304,1048576,float,100000,0,99000,0\n"
                        "1048576,262144,float,50000,0,49000,0\n")
    out = tmp_path / "m.png"
    plot("collective", "--topology", "dgx-a100", "--ranks", 8, "--max-bytes", "8MiB",
         "--measured", measured, "--out", out)
    rows = [r for r in read_csv(tmp_path / "m.csv") if r["requested"] == "measured"]
    assert [int(r["size_bytes"]) for r in rows] == [1048576, 4194304]
    assert float(rows[1]["time_us"]) == pytest.approx(100.0)
    assert float(rows[1]["busbw_GBps"]) == pytest.approx(4194304 / 1e-4 * 1.75 / 1e9)
    assert bus_factor("all-reduce", 8) == 1.75


def test_collective_measured_from_a_validate_report(tmp_path):
    """report.json's `collectives` rows: only those of the plotted op and rank count are drawn."""
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"cases": [], "collectives": [
        {"op": "all-reduce", "ranks": 2, "size_bytes": 1048576, "time_s": 2e-4},
        {"op": "all-reduce", "ranks": 4, "size_bytes": 1048576, "time_s": 3e-4},
        {"op": "all-gather", "ranks": 2, "size_bytes": 1048576, "time_s": 1e-4}]}))
    plot("collective", "--topology", "dgx-a100", "--ranks", 2, "--max-bytes", "4MiB",
         "--measured", report, "--out", tmp_path / "r.png")
    rows = [r for r in read_csv(tmp_path / "r.csv") if r["requested"] == "measured"]
    assert [(int(r["size_bytes"]), float(r["time_us"])) for r in rows] == [(1048576, 200.0)]


def test_svg_format(tmp_path):
    plot("collective", "--max-bytes", "1MiB", "--format", "svg", "--out", tmp_path / "c.png")
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "c.csv").is_file()


# --------------------------------------------------------------------------- validation

REPORT = {
    "cases": [
        {"layer": "mlp", "shape": {"tokens": 2048, "hidden": 4096}, "phase": "forward",
         "measured_s": 1.0e-3, "predicted_s": 1.1e-3, "error_pct": 10.0},
        {"layer": "attention", "shape": {"tokens": 2048, "hidden": 4096}, "phase": "forward_backward",
         "measured_s": 4.0e-3, "predicted_s": 3.0e-3, "error_pct": -25.0},
    ],
    "summary": {"cases": 2, "mean_abs_error_pct": 17.5},
}


def test_validation_csv_is_the_report(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT))
    plot("validation", "--report", report, "--out", tmp_path / "v.png")
    assert_png(tmp_path / "v.png")
    rows = read_csv(tmp_path / "v.csv")
    assert [(r["layer"], r["phase"]) for r in rows] == [("mlp", "forward"),
                                                         ("attention", "forward_backward")]
    for row, case in zip(rows, REPORT["cases"]):
        for key in ("measured_s", "predicted_s", "error_pct"):
            assert float(row[key]) == case[key]


# --------------------------------------------------------------------------- from predict()

def test_intra_vs_inter_csv_is_predict(tmp_path):
    from tpsim.training.predict import predict
    plot("intra-vs-inter", "--model", "gpt3", "--out", tmp_path / "ivi.png")
    assert_png(tmp_path / "ivi.png")
    rows = read_csv(tmp_path / "ivi.csv")
    assert [(r["topology"], int(r["tp"])) for r in rows] == [
        (t, tp) for t in ("dgx-h100", "dgx-h100-ndr-cluster") for tp in (1, 2, 4, 8, 16, 32)]
    for r in rows:
        if r["topology"] == "dgx-h100" and int(r["tp"]) > 8:    # 8 GPUs in one node
            assert r["status"].startswith("skipped") and r["layer_s"] == ""
            continue
        layer = predict("gpt3", r["topology"], tp=int(r["tp"])).layer
        assert r["status"] == "ok"
        for key in ("compute_s", "exposed_comm_s", "comm_s", "comm_share", "exposed_comm_share"):
            assert float(r[key]) == pytest.approx(getattr(layer, key), rel=1e-12)
        assert float(r["layer_s"]) == pytest.approx(layer.total_s, rel=1e-12)
        # the stacked bars are the whole layer: compute plus the comm it waits for
        assert float(r["compute_s"]) + float(r["exposed_comm_s"]) + float(r["host_wait_s"]) == \
            pytest.approx(layer.total_s)
        assert r["crosses_node"] == str(int(r["tp"]) > 8)


def test_intra_vs_inter_says_which_degrees_a_model_cannot_take(tmp_path):
    """gpt2 has 12 heads: TP 8, 16 and 32 do not divide them."""
    plot("intra-vs-inter", "--model", "gpt2", "--topology", "dgx-h100-ndr-cluster",
         "--out", tmp_path / "g.png")
    status = {int(r["tp"]): r["status"] for r in read_csv(tmp_path / "g.csv")}
    assert [tp for tp, s in status.items() if s == "ok"] == [1, 2, 4]
    assert all("heads" in status[tp] for tp in (8, 16, 32))


def test_breakdown_csv_is_the_schedule(tmp_path):
    from tpsim.training.predict import predict
    plot("breakdown", "--model", "gpt3", "--tp", 4, "--topology", "dgx-h100-ndr-cluster",
         "--out", tmp_path / "b.png")
    assert_png(tmp_path / "b.png")
    pred = predict("gpt3", "dgx-h100-ndr-cluster", tp=4)
    rows = read_csv(tmp_path / "b.csv")
    assert [r["name"] for r in rows] == [op.name for op in pred.ops]
    for r, op in zip(rows, pred.ops):
        assert (r["phase"], r["stream"]) == (op.phase, op.stream)
        for key in ("time_s", "start_s", "end_s", "share", "flops", "comm_bytes"):
            assert float(r[key]) == pytest.approx(getattr(op, key), rel=1e-12)
    assert (tmp_path / "b.csv").read_text().startswith("phase,name,")


def test_tp_vs_dp_csv(tmp_path):
    """gpt3 TP: 4 all-reduces of b*s*h*2 B per layer = 4 * 2048 * 12288 * 2 = 201326592 B,
    times 96 layers = 19327352832 B per micro-batch, times 3 micro-batches = 57982058496 B.
    DP: one all-reduce of params * 4 B (bf16 training reduces fp32 main gradients, as the
    memory model stores them)."""
    from tpsim.training.predict import predict
    topo = load_topology("dgx-h100-ndr-cluster")
    plot("tp-vs-dp", "--micro-batches", 3, "--out", tmp_path / "d.png")
    assert_png(tmp_path / "d.png")
    rows = {(r["strategy"], int(r["degree"])): r for r in read_csv(tmp_path / "d.csv")}
    assert set(rows) == {(s, g) for s in ("TP", "DP") for g in (2, 4, 8, 16, 32)}
    assert int(rows["TP", 8]["collective_bytes_per_step"]) == 57982058496
    params = predict("gpt3", topo, tp=1).model.params
    for g in (2, 4, 8, 16, 32):
        pred = predict("gpt3", topo, tp=g)
        tp, dp = rows["TP", g], rows["DP", g]
        assert float(tp["time_per_step_s"]) == pytest.approx(3 * 96 * pred.layer.comm_s)
        assert float(tp["exposed_time_per_step_s"]) == pytest.approx(
            3 * 96 * pred.layer.exposed_comm_s)
        cost = collective_time("all-reduce", params * 4, g, topo)
        assert int(dp["collective_bytes_per_step"]) == params * 4
        assert float(dp["time_per_step_s"]) == pytest.approx(cost.time_s, rel=1e-12)
        assert float(dp["sent_bytes_per_gpu_per_step"]) == pytest.approx(
            params * 4 * 2 * (g - 1) / g)
        assert tp["crosses_node"] == dp["crosses_node"] == str(g > 8)


def test_pipeline_csv_is_the_step(tmp_path):
    """Every op of the step's run, with its stage; the last op ends at the step's time."""
    from tpsim.training.predict import predict
    plot("pipeline", "--model", "gpt3-13b", "--tp", 4, "--pp", 4, "--dp", 2, "--global-batch", 16,
         "--topology", "dgx-a100-hdr-cluster",
         "--recompute", "full", "--out", tmp_path / "p.png")
    assert_png(tmp_path / "p.png")
    pred = predict("gpt3-13b", "dgx-a100-hdr-cluster", tp=4, pp=4, dp=2, global_batch=16,
                   recompute="full")
    rows = read_csv(tmp_path / "p.csv")
    tl = pred.step_run.run.timeline
    assert [r["name"] for r in rows] == list(tl.names)
    assert max(float(r["end_s"]) for r in rows) == pytest.approx(pred.step.time_s, rel=1e-12)
    assert {int(r["stage"]) for r in rows if r["kind"] == "compute"} == {0, 1, 2, 3}


# --------------------------------------------------------------------------- bad input -> exit 2

@pytest.mark.parametrize("argv", [
    ["collective", "--topology", "no-such-cluster"],
    ["collective", "--topology", "dgx-h100", "--ranks", "64"],  # more than one node holds
    ["collective", "--min-bytes", "1GiB", "--max-bytes", "1MiB"],
    ["collective", "--measured", "/nonexistent/ar.csv"],
    ["validation", "--report", "/nonexistent/report.json"],
    ["breakdown", "--model", "no-such-model"],
    ["breakdown", "--tp", "5"],                               # 96 heads do not split 5 ways
    ["intra-vs-inter", "--topology", "no-such-cluster"],
    ["tp-vs-dp", "--micro-batches", "0"],
    ["tp-vs-dp", "--topology", ""],                          # '' is no name: not the default
    ["breakdown", "--model", " "],
    ["pipeline", "--pp", "5"],                                # 96 layers do not split 5 ways
    ["pipeline", "--pp", "4", "--global-batch", "6", "--virtual-stages", "2"],
])
def test_bad_input_exits_2(tmp_path, capsys, argv):
    assert main(["plot", *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tpsim: error:") and "\n" not in err
    assert not (tmp_path / "x.png").exists()


def test_malformed_report_names_the_key(tmp_path, capsys):
    bad = {"cases": [dict(REPORT["cases"][0], measured_s="fast")]}
    (tmp_path / "r.json").write_text(json.dumps(bad))
    assert main(["plot", "validation", "--report", str(tmp_path / "r.json"),
                 "--out", str(tmp_path / "v.png")]) == 2
    assert "cases[0].measured_s" in capsys.readouterr().err


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["plot", "collective", "--max-bytes", "1MiB",
                 "--out", str(blocker / "fig.png")]) == 2
    assert "--out" in capsys.readouterr().err


def test_matplotlib_is_imported_only_by_plot():
    code = ("import sys, tpsim, tpsim.cli, tpsim.figures.data, tpsim.report.trace; "
            "tpsim.cli.build_parser(); assert 'matplotlib' not in sys.modules, 'matplotlib loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("lo, hi", [(12, 18), (12, 30), (3, 20), (3, 35), (0.55, 8.7),
                                    (0.2, 0.3), (1, 500)])
def test_infer_time_axis_reads_below_20_ms(lo, hi):
    """The time-per-token axis labels at least three values inside the drawn range, in ms
    (a log axis from 12 to 18 ms has no power of ten to label)."""
    from tpsim.figures.plot import ms_axis, plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [lo, hi])
    ms_axis(ax, lo, hi)
    fig.canvas.draw()
    labels = [t for t in ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()
              if t.get_text() and lo <= t.get_position()[1] <= hi]
    plt.close(fig)
    assert len(labels) >= 3
    assert all(float(t.get_text()) == pytest.approx(t.get_position()[1], rel=0.01)
               for t in labels)


def test_pipeline_chunks_carry_their_micro_batch(tmp_path):
    """Every forward and backward chunk of every stage is labelled by its micro-batch (and
    model chunk): each (micro-batch, chunk) runs forward and backward on every stage."""
    from tpsim.figures.pipeline_plot import chunk_label
    plot("pipeline", "--model", "gpt3-125m", "--tp", 2, "--pp", 2, "--dp", 2,
         "--global-batch", 8, "--virtual-stages", 2, "--out", tmp_path / "p.png")
    rows = read_csv(tmp_path / "p.csv")
    chunks = [r for r in rows if r["kind"] == "compute" and r["micro_batch"] != ""]
    for stage in ("0", "1"):
        for phase in ("forward", "backward"):
            seen = {(int(r["micro_batch"]), int(r["chunk"])) for r in chunks
                    if r["stage"] == stage and r["phase"] == phase}
            assert seen == {(m, c) for m in range(4) for c in range(2)}   # 8 / (1 x 2) = 4
    assert chunk_label({"kind": "compute", "micro_batch": 3, "chunk": 1}) == "3.1"
    assert chunk_label({"kind": "compute", "micro_batch": 3, "chunk": 0}) == "3"
    assert chunk_label({"kind": "dp", "micro_batch": "", "chunk": ""}) == ""


def test_plot_csv_is_plain_and_its_caption_beside_it(tmp_path):
    """No '#' line in the CSV; its title, notes and totals in NAME.about.json."""
    plot("pipeline", "--model", "gpt3-125m", "--tp", 2, "--pp", 2, "--dp", 2,
         "--global-batch", 8, "--out", tmp_path / "p.png")
    text = (tmp_path / "p.csv").read_text()
    assert not any(line.startswith("#") for line in text.splitlines())
    about = json.loads((tmp_path / "p.about.json").read_text())
    assert about["csv"] == "p.csv" and about["columns"] == text.splitlines()[0].split(",")
    assert "TP=2 PP=2 DP=2" in about["title"] and about["totals"]["pp"] == 2
    assert any("settings" in n for n in about["notes"])


@pytest.mark.parametrize("pp, dp, rows", [
    (2, 1, ["stage 0", "stage 1", "all stages"]),              # the embedding's all-reduce
    (2, 2, ["stage 0", "stage 1", "all stages", "DP", "DP"]),
    (1, 1, ["stage 0"]),                                       # nothing to reduce on one GPU
])
def test_pipeline_draws_only_the_rows_with_something_in_them(pp, dp, rows):
    from tpsim.figures.pipeline import pipeline
    from tpsim.figures.pipeline_plot import pipeline_figure
    table = pipeline("gpt3-125m", load_topology("dgx-h100"), 1, pp=pp, dp=dp, global_batch=8)
    fig = pipeline_figure(table)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == rows
