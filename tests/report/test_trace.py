"""`tpsim predict --trace`: a Chrome trace of the scheduled layer that matches the schedule.

Valid JSON, one complete event per op, no two events overlapping on one stream, and every
event's begin and end equal to the op's start_s and end_s.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tpsim.base.errors import ConfigError
from tpsim.report.trace import chrome_trace, write_trace


def op(name, stream, start_us, end_us, phase="forward", kind="gemm"):
    return SimpleNamespace(name=name, kind=kind, phase=phase, stream=stream, shape=(4, 8),
                           flops=1.0, bytes=2.0, comm_bytes=0.0, time_s=(end_us - start_us) * 1e-6,
                           start_s=start_us * 1e-6, end_s=end_us * 1e-6, share=0.1,
                           formula="tpsim.cost.compute.gemm_time")


def op_events(trace):
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def assert_matches_schedule(trace, ops):
    """One X event per op, same order, begins/ends equal to the schedule, one thread per stream."""
    events = op_events(trace)
    assert [e["name"] for e in events] == [o.name for o in ops]
    tids = {}
    for e, o in zip(events, ops):
        assert e["ts"] == pytest.approx(o.start_s * 1e6, abs=1e-6)
        assert e["ts"] + e["dur"] == pytest.approx(o.end_s * 1e6, abs=1e-6)
        assert e["dur"] >= 0
        assert tids.setdefault(o.stream, e["tid"]) == e["tid"]
    assert len(set(tids.values())) == len(tids), "two streams share a thread"
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {names[t] for t in tids.values()} == {f"{s} stream" for s in tids}


def assert_no_overlap_per_stream(trace, tol_us=1e-6):
    by_tid = {}
    for e in op_events(trace):
        by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"], e["name"]))
    for spans in by_tid.values():
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            assert start >= end - tol_us, f"{a} and {b} overlap on one stream"


def test_stand_in_schedule_round_trips(tmp_path):
    """A hand-made two-stream schedule: the row-parallel all-reduce overlaps the wgrad GEMM."""
    ops = [op("fc2", "compute", 0, 10), op("fc2.all_reduce", "comm", 10, 16, kind="all-reduce"),
           op("fc2.dgrad", "compute", 16, 26, phase="backward"),
           op("fc1.all_reduce", "comm", 26, 30, phase="backward", kind="all-reduce"),
           op("fc2.wgrad", "compute", 26, 36, phase="backward")]
    path = write_trace(chrome_trace(ops, "stand-in"), tmp_path / "t.json")
    trace = json.loads(path.read_text())
    assert_matches_schedule(trace, ops)
    assert_no_overlap_per_stream(trace)
    assert op_events(trace)[0]["args"]["shape"] == [4, 8]


def test_overlap_check_catches_an_overlap():
    ops = [op("a", "compute", 0, 10), op("b", "compute", 9, 12)]
    with pytest.raises(AssertionError, match="overlap"):
        assert_no_overlap_per_stream(chrome_trace(ops))


def test_unwritable_trace_path(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="--trace"):
        write_trace(chrome_trace([op("a", "compute", 0, 1)]), tmp_path / "f" / "t.json")


@pytest.mark.parametrize("tp, sp", [(8, False), (4, True)])
def test_predicted_layer_trace_matches_its_schedule(tp, sp):
    """The real schedule: every op of predict() once, no overlap per stream, and the backward
    input-gradient all-reduce overlapping the weight-gradient GEMM, as Megatron runs it."""
    from tpsim.training.predict import predict
    from tpsim.report.trace import prediction_trace
    pred = predict("gpt3", "dgx-h100", tp=tp, sequence_parallel=sp)
    trace = json.loads(json.dumps(prediction_trace(pred)))
    assert_matches_schedule(trace, pred.ops)
    assert_no_overlap_per_stream(trace)
    assert trace["otherData"]["total_s"] == pred.layer.total_s
    end = max(e["ts"] + e["dur"] for e in op_events(trace))
    assert end == pytest.approx(pred.layer.total_s * 1e6)
    comm = [e for e in op_events(trace)
            if e["args"]["stream"] == "comm" and e["args"]["phase"] == "backward"]
    wgrad = [e for e in op_events(trace) if e["name"].endswith(".wgrad")]
    assert any(c["ts"] < w["ts"] + w["dur"] and w["ts"] < c["ts"] + c["dur"]
               for c in comm for w in wgrad), "no backward collective overlaps a wgrad GEMM"


def test_predict_trace_flag(tmp_path, capsys):
    """`tpsim predict --trace` writes the same trace as the library, and --json stays pure JSON."""
    from tpsim.cli import main
    from tpsim.training.predict import predict
    path = tmp_path / "layer.json"
    assert main(["predict", "--model", "gpt3", "--tp", "8", "--json", "--trace", str(path)]) == 0
    json.loads(capsys.readouterr().out)
    pred = predict("gpt3", "dgx-h100", tp=8)
    trace = json.loads(path.read_text())
    assert len(op_events(trace)) == len(pred.ops)
    assert_matches_schedule(trace, pred.ops)
    assert_no_overlap_per_stream(trace)
    (tmp_path / "f").write_text("")
    assert main(["predict", "--trace", str(tmp_path / "f" / "t.json")]) == 2
    assert "--trace" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    dict(model="gpt3-350m", topology="dgx-a100", tp=2, seq_len=1024),      # host-bound
    dict(model="gpt3-13b", topology="dgx-a100", tp=2),                      # GPU-bound
])
def test_op_rows_and_trace_end_at_the_layer_total(argv):
    """The op table and the trace run on the layer's clock: a host-bound phase ends with a
    host-wait row as long as its host wait, the backward starts at the forward's end, and the
    last row ends at the layer's total (gpt3-350m TP 2 on A100: the GPU's ops alone end near
    0.4 ms of a 2.1 ms layer); shares add up to 1 less the time no stream runs."""
    from tpsim import predict
    from tpsim.report.trace import chrome_trace
    p = predict(argv.pop("model"), argv.pop("topology"), **argv)
    lay, ops = p.layer, p.ops
    waits = [o for o in ops if o.kind == "host-wait"]
    assert sum(o.time_s for o in waits) == pytest.approx(lay.host_wait_s, rel=1e-12, abs=1e-15)
    assert max(o.end_s for o in ops) == pytest.approx(lay.total_s, rel=1e-12)
    assert min(o.start_s for o in ops if o.phase == "backward") >= lay.forward_s * (1 - 1e-12)
    assert max(o.end_s for o in ops if o.phase == "forward") <= lay.forward_s * (1 + 1e-12)
    events = [e for e in chrome_trace(ops)["traceEvents"] if e.get("ph") == "X"]
    assert max(e["ts"] + e["dur"] for e in events) == pytest.approx(lay.total_s * 1e6, rel=1e-9)
    assert bool(waits) == (lay.host_wait_s > 0)
