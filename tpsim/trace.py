"""The scheduled op graph of one layer as a Chrome trace (Perfetto, chrome://tracing).

Trace Event Format (the JSON object form, "Trace Event Format" doc by Google, 2016): one
complete event (``"ph": "X"``) per op, ``ts`` and ``dur`` in microseconds, one process for the
layer and one thread per stream (compute, comm) named by ``thread_name`` metadata events. The
times are the schedule's own ``start_s``/``end_s``; nothing is rescheduled here, so the overlap
of the backward all-reduce with the weight-gradient GEMM shows exactly as ``predict()`` found it.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError

PID = 1
STREAM_TIDS = {"compute": 1, "comm": 2}


def _tid(stream: str) -> int:
    return STREAM_TIDS.get(stream, len(STREAM_TIDS) + 1)


def op_event(op) -> dict:
    """One op row -> one complete event on its stream's thread."""
    return {"name": op.name, "cat": f"{op.phase},{op.kind}", "ph": "X", "pid": PID,
            "tid": _tid(op.stream), "ts": op.start_s * 1e6, "dur": (op.end_s - op.start_s) * 1e6,
            "args": {"phase": op.phase, "kind": op.kind, "stream": op.stream,
                     "shape": _plain(op.shape), "flops": op.flops, "bytes": op.bytes,
                     "comm_bytes": op.comm_bytes, "time_us": op.time_s * 1e6,
                     "share": op.share}}


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
    """Write ``trace`` as strict JSON (no NaN or Infinity), creating missing directories; an
    empty or unwritable path, or a non-finite time, is a ConfigError (exit 2)."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise ConfigError("--trace", "", "a file name such as layer.json", path)
    p = Path(path)
    try:
        text = json.dumps(trace, indent=1, allow_nan=False)
    except ValueError:
        raise ConfigError("--trace", "", "finite times to write (JSON has no NaN or "
                          "infinity)") from None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    except (OSError, ValueError) as e:       # ValueError: a NUL byte in the name
        raise ConfigError("--trace", "", "a path tpsim can write",
                          f"{p}: {getattr(e, 'strerror', None) or e}") from None
    return p


def prediction_trace(pred) -> dict:
    """The trace of a :class:`~tpsim.result.Prediction`: its op rows, titled by its inputs,
    with the inputs and the layer's totals (seconds) under ``otherData``."""
    i = pred.inputs
    title = f"{i.model}, TP={i.tp} on {i.topology}: one layer, forward + backward"
    layer = {k: getattr(pred.layer, k) for k in ("forward_s", "backward_s", "total_s",
                                                 "compute_s", "comm_s", "exposed_comm_s")}
    meta = {"model": i.model, "topology": i.topology, "tp": i.tp, "micro_batch": i.micro_batch,
            "seq_len": i.seq_len, "dtype": i.dtype, "sequence_parallel": i.sequence_parallel,
            **layer}
    return chrome_trace(pred.ops, title, meta)
