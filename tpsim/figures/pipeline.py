"""The numbers behind ``tpsim plot pipeline``: every op of one training step, per stage, as a
:class:`~tpsim.figures.data.Table` (read from ``predict()``'s step run, never re-derived)."""
from __future__ import annotations

import re

from .data import Table, _describe, _inputs, _predict
from ..cluster.topology import Topology
from ..report.trace import step_owner

PIPELINE_COLUMNS = ("stage", "stream", "name", "kind", "phase", "micro_batch", "chunk",
                    "start_s", "end_s", "time_s")
# a chunk's name as the step graph writes it (tpsim.training.pipeline: s{stage}.{F|B}{micro-batch}
# [.{model chunk}][.{piece}]; a p2p transfer: {activation|gradient}{micro-batch} {src}>{dst})
_CHUNK = re.compile(r"s\d+\.[FB](\d+)(?:\.(\d+))?(?:\.|$)")
_TRANSFER = re.compile(r"(?:activation|gradient)(\d+) ")


def micro_batch_of(name: str, kind: str) -> tuple:
    """(micro-batch, model chunk) of a compute chunk, (micro-batch, "") of a p2p transfer, and
    ("", "") of every other op (the DP collectives, the optimizer: a step's, not a
    micro-batch's)."""
    m = _CHUNK.match(name) if kind == "compute" else _TRANSFER.match(name) if kind == "p2p" \
        else None
    if m is None:
        return "", ""
    chunk = m.group(2) if kind == "compute" else None
    return int(m.group(1)), (int(chunk) if chunk else 0) if kind == "compute" else ""


def pipeline(model: str, topo: Topology, tp: int, **settings) -> Table:
    """Every op of one training step as ``predict()`` scheduled it, per stage (its compute
    stream, the p2p transfers it sends, its DP collectives) and the step's global ops (stage
    = pp). The bubble is the gaps between a stage's compute ops."""
    pred = _predict(model, topo, tp, settings)
    st, run = pred.step, pred.step_run.run
    tl, nodes = run.timeline, run.template.nodes
    rows = tuple({"stage": step_owner(stream, st.pp), "stream": stream, "name": tl.names[i],
                  "kind": run.kinds[i], "phase": nodes[i].phase,
                  **dict(zip(("micro_batch", "chunk"), micro_batch_of(tl.names[i], run.kinds[i]))),
                  "start_s": tl.start[i], "end_s": tl.end[i], "time_s": run.seconds[i]}
                 for i, stream in enumerate(tl.streams))
    totals = {k: getattr(st, k) for k in ("time_s", "bubble_s", "pp_comm_exposed_s",
                                          "dp_comm_exposed_s", "optimizer_s",
                                          "ideal_bubble_fraction")}
    totals.update(pp=st.pp, dp=st.dp, micro_batches=st.micro_batches, schedule=st.schedule)
    notes = ("times in s from the step's simulation; kind: compute (chunks), p2p, dp, "
             "optimizer, tp, pp; micro_batch and chunk: a compute chunk's micro-batch and model "
             "chunk (a transfer's micro-batch)", f"settings: tp={tp}, {_describe(settings)}")
    return Table(f"{_inputs(pred)}, TP={tp} PP={st.pp} DP={st.dp} on {topo.name}: one training "
                 f"step, {st.micro_batches} micro-batches, {st.schedule}", PIPELINE_COLUMNS, rows,
                 notes, totals)
