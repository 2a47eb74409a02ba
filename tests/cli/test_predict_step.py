"""`tpsim predict` with a pipeline, data parallelism and an optimizer step: the step section,
its JSON keys, one line and exit 2 for bad step flags, and the step's trace."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.training.predict import predict

ARGS = ("predict", "--model", "gpt3-13b", "--topology", "dgx-a100-hdr-cluster", "--tp", "4",
        "--pp", "4", "--dp", "2", "--global-batch", "64", "--recompute", "full")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_step_keys_match_the_api(capsys):
    code, out, err = run(capsys, *ARGS, "--virtual-stages", "2", "--distributed-optimizer",
                         "--json")
    assert code == 0 and err == ""
    d = json.loads(out)
    p = predict("gpt3-13b", "dgx-a100-hdr-cluster", tp=4, pp=4, dp=2, global_batch=64,
                recompute="full", virtual_stages=2, distributed_optimizer=True)
    for key in ("time_s", "tokens_per_s", "tflops_per_gpu", "mfu", "hfu", "bubble_s",
                "pp_comm_exposed_s", "dp_comm_exposed_s", "optimizer_s"):
        assert d["step"][key] == pytest.approx(getattr(p.step, key)), key
    assert d["memory"]["fits"] is True
    assert d["memory"]["total_bytes"] == max(m.total_bytes for m in p.stage_memory)
    assert len(d["step"]["stages"]) == 4 and d["inputs"]["gpus"] == 32


def test_text_has_the_step_section(capsys):
    code, out, _ = run(capsys, *ARGS, "--no-overlap-grad-reduce", "--ops")
    assert code == 0
    for text in ("one training step: TP 4 x PP 4 x DP 2 = 32 GPUs", "tokens/s", "MFU", "HFU",
                 "bubble", "exposed PP", "exposed DP", "optimizer", "per stage",
                 "DP reduce after the backward", "fullest stage"):
        assert text in out, text


@pytest.mark.parametrize("argv, flag", [
    (("--dp", "2", "--global-batch", "3"), "--global-batch"),
    (("--pp", "3"), "--pp"),
    (("--dp", "64"), "--topology"),
    (("--virtual-stages", "2", "--global-batch", "6"), "--global-batch"),
])
def test_bad_step_flags_are_one_line(capsys, argv, flag):
    code, out, err = run(capsys, *ARGS[:9], *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and flag in err


def test_step_trace_shows_every_stage(tmp_path, capsys):
    path = tmp_path / "step.json"
    code, _, _ = run(capsys, *ARGS, "--trace", str(path))
    assert code == 0
    trace = json.loads(path.read_text())
    procs = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert {f"pipeline stage {r}" for r in range(4)} <= procs
    p = predict("gpt3-13b", "dgx-a100-hdr-cluster", tp=4, pp=4, dp=2, global_batch=64,
                recompute="full")
    chunks = {e["name"].split(".")[1] for e in trace["traceEvents"] if e["ph"] == "X"
              and e["args"].get("kind") == "compute" and e["name"].startswith("s0.")}
    assert chunks == {f"{k}{i}" for k in "FB" for i in range(32)}    # every chunk of stage 0
    end = max(e["ts"] + e["dur"] for e in trace["traceEvents"] if e["ph"] == "X")
    assert end == pytest.approx(p.step.time_s * 1e6)
    for tid_events in _by_thread(trace).values():       # no two events overlap on a thread
        tid_events.sort()
        assert all(b0 >= a1 - 1e-6 for (_, a1), (b0, _) in zip(tid_events, tid_events[1:]))


def _by_thread(trace):
    out = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            out.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    return out
