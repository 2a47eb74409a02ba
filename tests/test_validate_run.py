"""validate/run.py end to end under torchrun (tiny shapes), and its failures: bad --out, shapes
that do not split, a rank that dies or hangs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from dist_helpers import free_port

from tpsim.topology import load_topology

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
        {"all-reduce", "all-gather", "reduce-scatter"}
    topo = load_topology(out / "calibrated.yaml")
    assert topo.levels[0].size == 2 and "fp32" in topo.device.peak_flops
    assert "Median |error|" in (out / "report.md").read_text()


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


def test_dead_rank_ends_the_run_naming_it(tmp_path):
    res = _torchrun("--smoke", "--out", str(tmp_path), "--fault", "1:die", "--timeout", "20",
                    timeout=90)
    assert res.returncode != 0
    assert "rank      : 1" in res.stderr or "rank 1" in res.stderr, res.stderr[-2000:]


def test_hung_rank_times_out_with_a_message_naming_it(tmp_path):
    res = _torchrun("--smoke", "--out", str(tmp_path), "--fault", "1:hang", "--timeout", "5",
                    timeout=90)
    assert res.returncode != 0
    assert "stage 'correctness' failed" in res.stderr, res.stderr[-3000:]
    assert "rank 1 last reported" in res.stderr
