"""The scheduled op graph of one layer, and a whole training step, as a Chrome trace (Perfetto,
chrome://tracing).

Trace Event Format (the JSON object form, "Trace Event Format" doc by Google, 2016): one
complete event (``"ph": "X"``) per op, ``ts`` and ``dur`` in microseconds, one process for the
layer and one thread per stream (compute, comm) named by ``thread_name`` metadata events. The
times are the schedule's own ``start_s``/``end_s``; nothing is rescheduled here, so the overlap
of the backward all-reduce with the weight-gradient GEMM shows exactly as ``predict()`` found it.

A prediction with a pipeline, data parallelism or several micro-batches adds one process per
pipeline stage (:func:`step_events`): its compute stream (forward and backward chunks, gradient
scaling, optimizer), the p2p transfers it sends, its DP collectives; the gaps on a stage's compute
thread are the bubble. The step's global ops (gradient-norm all-reduce, tied-embedding
all-reduce) are one more process.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..base.errors import ConfigError

PID = 1
STREAM_TIDS = {"compute": 1, "comm": 2}


def _tid(stream: str) -> int:
    return STREAM_TIDS.get(stream, len(STREAM_TIDS) + 1)


def op_event(op) -> dict:
    """One op row -> one complete event on its stream's thread, naming the function that priced
    it (``formula``)."""
    return {"name": op.name, "cat": f"{op.phase},{op.kind}", "ph": "X", "pid": PID,
            "tid": _tid(op.stream), "ts": op.start_s * 1e6, "dur": (op.end_s - op.start_s) * 1e6,
            "args": {"phase": op.phase, "kind": op.kind, "stream": op.stream,
                     "shape": _plain(op.shape), "flops": op.flops, "bytes": op.bytes,
                     "comm_bytes": op.comm_bytes, "time_us": op.time_s * 1e6,
                     "share": op.share, "formula": op.formula}}


def _plain(value):
    """Shapes may be tuples or mappings of tuples; JSON wants lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def chrome_trace(ops, title: str = "tpsim layer", meta: dict | None = None) -> dict:
    """Trace events for ``ops`` (rows with name, kind, phase, stream, start_s, end_s, ...)."""
    streams = list(dict.fromkeys(op.stream for op in ops))
    events = [{"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": title}}]
    for stream in streams:
        tid = _tid(stream)
        events.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                       "args": {"name": f"{stream} stream"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
                       "args": {"sort_index": tid}})
    events.extend(op_event(op) for op in ops)
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": dict(meta or {})}


def write_trace(trace: dict, path: str | Path) -> Path:
    """Write ``trace`` as strict JSON (no NaN or Infinity) into an existing directory; an
    empty or unwritable path, a missing directory (never created: a typo would plant a tree
    anywhere) or a non-finite time is a ConfigError (exit 2)."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError("--trace", "", "a file name such as layer.json", path)
    p = Path(path)
    try:
        text = json.dumps(trace, indent=1, allow_nan=False)
    except ValueError:
        raise ConfigError("--trace", "", "finite times to write (JSON has no NaN or "
                          "infinity)") from None
    try:
        if not p.parent.is_dir():
            raise ConfigError("--trace", "", "a file in an existing directory",
                              f"{p.parent}: no such directory")
        p.write_text(text)
    except (OSError, ValueError) as e:       # ValueError: a NUL byte in the name
        raise ConfigError("--trace", "", "a path tpsim can write",
                          f"{p}: {getattr(e, 'strerror', None) or e}") from None
    return p


def step_owner(stream: str, pp: int) -> int:
    """The stage whose process shows ``stream`` (a p2p link: its sender), or pp (the step's)."""
    if stream.startswith("stage"):
        return int(stream[5:].split(".")[0])
    if stream.startswith("p2p "):
        return int(stream[4:].split(">")[0])
    return pp


def step_events(run, pp: int, first_pid: int = 2) -> list[dict]:
    """Trace events of a step's run (:class:`tpsim.training.step_graph.StepRun`), one process per stage."""
    tl, nodes = run.timeline, run.template.nodes
    threads: dict[tuple[int, str], int] = {}
    events = []
    for owner in range(pp + 1):
        name = f"pipeline stage {owner}" if owner < pp else "step (all stages)"
        events.append({"name": "process_name", "ph": "M", "pid": first_pid + owner, "tid": 0,
                       "args": {"name": name}})
    for i, stream in enumerate(tl.streams):
        owner = step_owner(stream, pp)
        key = (owner, stream)
        if key not in threads:
            threads[key] = tid = 1 + sum(1 for k in threads if k[0] == owner)
            for meta, arg in (("thread_name", {"name": stream}), ("thread_sort_index",
                                                                  {"sort_index": tid})):
                events.append({"name": meta, "ph": "M", "pid": first_pid + owner, "tid": tid,
                               "args": arg})
        events.append({"name": tl.names[i], "cat": f"{nodes[i].phase},{run.kinds[i]}", "ph": "X",
                       "pid": first_pid + owner, "tid": threads[key], "ts": tl.start[i] * 1e6,
                       "dur": (tl.end[i] - tl.start[i]) * 1e6,
                       "args": {"kind": run.kinds[i], "phase": nodes[i].phase,
                                "stream": stream, "time_us": run.seconds[i] * 1e6}})
    return events


def prediction_trace(pred) -> dict:
    """The trace of a :class:`~tpsim.sim.result.Prediction`: its op rows, titled by its inputs,
    with the inputs and the layer's totals (seconds) under ``otherData``."""
    i = pred.inputs
    title = f"{i.model}, TP={i.tp} on {i.topology}: one layer, forward + backward"
    layer = {k: getattr(pred.layer, k) for k in ("forward_s", "backward_s", "total_s",
                                                 "compute_s", "comm_s", "exposed_comm_s")}
    meta = {"model": i.model, "topology": i.topology, "tp": i.tp, "micro_batch": i.micro_batch,
            "seq_len": i.seq_len, "dtype": i.dtype, "sequence_parallel": i.sequence_parallel,
            **layer}
    trace = chrome_trace(pred.ops, title, meta)
    st = pred.step
    if st is not None and (st.pp > 1 or st.dp > 1 or st.micro_batches > 1):
        trace["traceEvents"] += step_events(pred.step_run.run, st.pp)
        trace["otherData"].update(pp=st.pp, dp=st.dp, micro_batches=st.micro_batches,
                                  step_s=st.time_s, bubble_s=st.bubble_s)
    return trace
