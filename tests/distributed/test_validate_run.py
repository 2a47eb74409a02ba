"""validate/run.py end to end under torchrun (tiny shapes), and its failures: bad flags, bad --out,
shapes that do not split, a topology that cannot hold the run, a rank that dies or hangs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import REPO
from tests.dist_helpers import free_port

from tpsim.cluster.topology import load_topology

RUN = str(REPO / "validate" / "run.py")


def _torchrun(*args, timeout=120):
    pytest.importorskip("torch")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), RUN, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _direct(*args, world="2"):
    """The pre-flight only: no torch import, no process group."""
    env = {**os.environ, "WORLD_SIZE": world, "RANK": "0"}
    return subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


def test_smoke_run_writes_report_and_calibrated_topology(tmp_path):
    out = tmp_path / "out"
    res = _torchrun("--smoke", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["cases"], report
    for case in report["cases"]:
        assert case["layer"] in ("mlp", "attention")
        assert case["phase"] in ("forward", "forward_backward")
        assert case["shape"] and case["measured_s"] > 0 and case["predicted_s"] > 0
        assert isinstance(case["error_pct"], float)
        assert 0 <= case["comm_share"] <= 1 and case["matmul_s"] > 0
    assert {"median_abs_error_pct", "max_abs_error_pct"} <= set(report["summary"])
    env = report["environment"]
    assert (env["backend"], env["world_size"], env["threads_per_rank"]) == ("gloo", 2, 1)
    assert env["torch"] and env["device"].startswith("CPU")
    assert report["correctness"]["failures"] == []
    assert report["baseline"] and {c["op"] for c in report["collectives"]} == \
        {"all-reduce", "all-gather", "reduce-scatter", "all-to-all"}
    topo = load_topology(out / "calibrated.yaml")
    assert [lv.size for lv in topo.levels] == [2] and list(topo.device.peak_flops) == ["fp32"]
    kernels = {k["op_name"] for k in report["kernels"]}
    assert {"bwd.mlp_in.wgrad", "bwd.act", "bwd.attn.softmax", "bwd.attn.scores.dk"} <= kernels
    fitted = {p["parameter"] for p in report["fit"]["parameters"]}
    assert {"device.gemm_max_efficiency", "levels[0].latency_s"} <= fitted
    md = (out / "report.md").read_text()
    assert "Median |error|" in md and "std. error" in md


def test_two_nodes_fit_each_level_on_its_own_group(tmp_path):
    """Two torchrun agents of two ranks each (two "nodes" on this host): the calibrated file has
    the node level, fitted on 2-rank collectives, and the network level, on 4-rank ones."""
    pytest.importorskip("torch")
    port, out = free_port(), tmp_path / "out"
    cmd = lambda n: [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",  # noqa
                     "--node-rank", str(n), "--nproc_per_node", "2", "--master_addr",
                     "127.0.0.1", "--master_port", str(port), RUN, "--smoke", "--out", str(out)]
    procs = [subprocess.Popen(cmd(n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO) for n in (0, 1)]
    errs = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:]
    topo = load_topology(out / "calibrated.yaml")
    assert [(lv.name, lv.size, bool(lv.inter_node)) for lv in topo.levels] == \
        [("node", 2, False), ("network", 2, True)]
    text = (out / "calibrated.yaml").read_text()
    assert "collectives on 2 ranks in one node" in text
    assert "collectives on 4 ranks across 2 nodes" in text
    report = json.loads((out / "report.json").read_text())
    assert {c["group"] for c in report["collectives"]} == {"local", "world"}
    assert report["environment"]["nnodes"] == 2


def test_unwritable_out_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = _direct("--smoke", "--out", str(blocker / "sub"))
    assert res.returncode != 0
    assert "--out" in res.stderr and "cannot write" in res.stderr


def test_world_size_that_does_not_split_the_shapes_fails_before_any_work(tmp_path):
    res = _direct("--quick", "--out", str(tmp_path), world="3")
    assert res.returncode != 0
    assert "cannot be split over 3 ranks" in res.stderr and "not divisible" in res.stderr


@pytest.mark.parametrize("mode,ranks", [("full", (1, 2, 4, 8)), ("quick", (1, 2)),
                                        ("smoke", (2,))])
def test_shapes_split_over_the_ranks_they_are_for(mode, ranks):
    """The full shapes (the default, for GPU nodes) split over up to 8 GPUs, as a DGX runs them;
    no EVAL shape is a FIT shape."""
    sys.path.insert(0, str(REPO / "validate"))
    import shapes
    for tp in ranks:
        for shape in shapes.FIT[mode] + shapes.EVAL[mode]:
            assert not shape.unsplittable(tp), (mode, tp, shape)
    assert not set(shapes.FIT[mode]) & set(shapes.EVAL[mode])


@pytest.mark.parametrize("flag,value", [("--timeout", "nan"), ("--timeout", "inf"),
                                        ("--timeout", "-1"), ("--timeout", "0"),
                                        ("--threads", "-1"), ("--threads", "0"),
                                        ("--timeout", "1e300"), ("--timeout", "1_0"),
                                        ("--threads", "9" * 30), ("--threads", "1_0"),
                                        ("--threads", "\u0663"), ("--threads", "100000")])
def test_bad_flag_is_one_line_exit_2_before_any_work(tmp_path, flag, value):
    res = _direct("--smoke", "--out", str(tmp_path), flag, value)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and value in lines[0], res.stderr
    assert not any(tmp_path.iterdir())


def test_bad_flag_under_torchrun_prints_once(tmp_path):
    res = _torchrun("--smoke", "--out", str(tmp_path), "--timeout", "nan", timeout=60)
    assert res.returncode != 0
    assert res.stderr.count("validate/run.py: error: argument --timeout") == 1, res.stderr[-2000:]


def test_help_prints_once_under_torchrun():
    res = _torchrun("--help", timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("usage: validate/run.py") == 1 and "--topology" in res.stdout


def test_topology_too_small_for_the_run_fails_before_any_work(tmp_path, write_yaml):
    topo = write_yaml({"name": "one", "description": "one device", "device": {
        "name": "x", "peak_tflops": {"fp32": 1.0}, "memory_GiB": 1, "memory_bandwidth_GBps": 1},
        "levels": [{"name": "l", "size": 1, "bandwidth_GBps": 1, "latency_us": 1}]})
    res = _direct("--smoke", "--out", str(tmp_path / "o"), "--topology", str(topo))
    assert res.returncode == 2 and "--topology" in res.stderr and "room for 2 ranks" in res.stderr


def test_a_directory_as_topology_fails_before_any_work(tmp_path):
    res = _direct("--smoke", "--out", str(tmp_path / "o"), "--topology", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--topology" in res.stderr and "a directory" in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("attention", ["unfused", "fused"])
def test_every_priced_compute_op_has_a_microbenchmark(attention):
    """Each compute op tpsim's graph prices for the blocks of every shape (GELU and SwiGLU,
    MHA and GQA, forward and backward) maps to a kernel that runs; the fit cannot miss one."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "validate"))
    import kernels
    import shapes
    for shape in shapes.FIT["smoke"] + shapes.EVAL["smoke"]:
        for block in ("mlp", "attention"):
            items = kernels.block_items(shape, block, 1, "fp32", attention, torch.float32,
                                        torch.device("cpu"))
            names = [it.info["op_name"] for it in items]
            assert names and any(n.startswith("bwd.") for n in names)
            assert any(it.info["op"].kind != "gemm" for it in items)
            for it in items:
                it.fn()


def test_stopped_ranks_names_the_one_behind():
    """Rank 1 stopped at step 3 while ranks 0 and 2 wait at step 7: rank 1 alone is named."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "validate"))
    from harness import stopped_ranks
    seen = [(7, 100.0, 0, "fit"), (3, 90.0, 1, "correctness"), (7, 100.0, 2, "fit")]
    text = stopped_ranks(seen, 130.0)
    assert text.startswith("stopped: rank 1 last reported 40 s ago in 'correctness'")
    assert "rank 0 last" not in text and "rank(s) 0, 2" in text
    assert stopped_ranks([(2, 1.0, 0, "failed: fit: ValueError"), (2, 1.0, 1, "fit")],
                         5.0).startswith("rank 0 failed first, in its step 2: fit: ValueError")


def test_stopped_ranks_names_the_first_failure_and_the_dead_not_the_waiting():
    """Two ranks failed: the earlier one is named first with its exception. A rank killed in
    step with the others (equal beats) is named alone, not beside the ranks waiting for it."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "validate"))
    from harness import stopped_ranks
    seen = [(4, 9.0, 0, "failed: fit: RuntimeError: late"), (4, 8.0, 1, "failed: fit: E: first")]
    assert stopped_ranks(seen, 10.0).startswith("rank 1 failed first, in its step 4: fit: E: "
                                                "first; then rank 0 failed: fit: RuntimeError")
    seen = [(5, 100.0, 0, "fit"), (5, 100.2, 1, "fit"), (5, 100.1, 2, "fit")]
    text = stopped_ranks(seen, 101.0, [2])
    assert text.startswith("rank 2 died") and "rank 0" not in text and "rank 1" not in text


def _last_word(stderr: str) -> str:
    """The line the surviving rank ends the run with."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("validate: rank 0: ended") or
             ln.startswith("validate: a peer rank")]
    assert lines, stderr[-3000:]
    return lines[-1]


def test_dead_rank_ends_the_run_naming_it(tmp_path):
    """Rank 1 exits in step with rank 0 (equal heartbeats, no word left): rank 1 alone is named,
    as dead, not every rank as stopped."""
    res = _torchrun("--smoke", "--out", str(tmp_path), "--fault", "1:die", "--timeout", "20",
                    timeout=90)
    assert res.returncode != 0
    line = _last_word(res.stderr)
    assert "rank 1 died" in line and "last in 'correctness'" in line, res.stderr[-2000:]
    assert "stopped: rank 0" not in res.stderr and "collective timeout" not in res.stderr


def test_rank_that_raises_is_named_first_with_its_exception(tmp_path):
    """Rank 1 raises: rank 0's last word names rank 1 and its exception, not a timeout."""
    res = _torchrun("--smoke", "--out", str(tmp_path), "--fault", "1:raise", "--timeout", "20",
                    timeout=90)
    assert res.returncode != 0
    line = _last_word(res.stderr)
    assert ("rank 1 failed first, in its step 2: correctness: ValueError: injected failure on "
            "rank 1") in line, res.stderr[-3000:]
    assert "collective timeout" not in res.stderr and "stopped: rank" not in res.stderr


def test_hung_rank_times_out_with_a_message_naming_it(tmp_path):
    res = _torchrun("--smoke", "--out", str(tmp_path), "--fault", "1:hang", "--timeout", "5",
                    timeout=90)
    assert res.returncode != 0
    assert "stage 'correctness' failed" in res.stderr, res.stderr[-3000:]
    assert "stopped: rank 1 last reported" in res.stderr and "stopped: rank 0" not in res.stderr


def test_empty_out_is_refused_before_any_work(tmp_path):
    """--out '' would write calibrated.yaml and the reports into the working directory."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    res = subprocess.run([sys.executable, RUN, "--smoke", "--out", ""], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--out" in res.stderr and "empty" in res.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["calibrated.yaml", "report.json"])
def test_out_that_would_overwrite_the_topology_is_refused(tmp_path, write_yaml, name):
    """--topology DIR/calibrated.yaml --out DIR (spelled another way) would overwrite the input."""
    topo = write_yaml({"name": "two", "description": "two devices", "device": {
        "name": "x", "peak_tflops": {"fp32": 1.0}, "memory_GiB": 1, "memory_bandwidth_GBps": 1},
        "levels": [{"name": "l", "size": 2, "bandwidth_GBps": 1, "latency_us": 1}]})
    target = tmp_path / "d" / name
    target.parent.mkdir()
    target.write_text(topo.read_text())
    before = target.read_text()
    res = _direct("--smoke", "--out", str(tmp_path / "d" / ".." / "d"), "--topology", str(target))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--out" in res.stderr and "overwrite" in res.stderr and "--topology" in res.stderr
    assert target.read_text() == before and sorted(os.listdir(target.parent)) == [name]


def test_results_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A crash before the final move leaves the earlier report.json / calibrated.yaml intact and
    no temporary file behind (write to a sibling, then os.replace)."""
    sys.path.insert(0, str(REPO / "validate"))
    import report
    import topology_file

    def crash(src, dst):
        raise OSError("killed mid-write")
    old_json, old_yaml = tmp_path / "report.json", tmp_path / "calibrated.yaml"
    old_json.write_text('{"old": 1}\n')
    old_yaml.write_text("name: old\n")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="mid-write"):
        report.write_json(old_json, {"new": 2})
    with pytest.raises(OSError, match="mid-write"):
        topology_file.write_calibrated("name: new\n", None, [], ["h"], old_yaml)
    assert old_json.read_text() == '{"old": 1}\n' and old_yaml.read_text() == "name: old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.yaml", "report.json"]
    monkeypatch.undo()
    report.write_json(old_json, {"new": 2})
    assert json.loads(old_json.read_text()) == {"new": 2}
    assert oct(old_json.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
