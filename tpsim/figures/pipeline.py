"""The numbers behind ``tpsim plot pipeline``: every op of one training step, per stage, as a
:class:`~tpsim.figures.data.Table` (read from ``predict()``'s step run, never re-derived)."""
from __future__ import annotations

from .data import Table, _describe, _inputs, _predict
from ..cluster.topology import Topology
from ..report.trace import step_owner

PIPELINE_COLUMNS = ("stage", "stream", "name", "kind", "phase", "start_s", "end_s", "time_s")


def pipeline(model: str, topo: Topology, tp: int, **settings) -> Table:
    """Every op of one training step as ``predict()`` scheduled it, per stage (its compute
    stream, the p2p transfers it sends, its DP collectives) and the step's global ops (stage
    = pp). The bubble is the gaps between a stage's compute ops."""
    pred = _predict(model, topo, tp, settings)
    st, run = pred.step, pred.step_run.run
    tl, nodes = run.timeline, run.template.nodes
    rows = tuple({"stage": step_owner(stream, st.pp), "stream": stream, "name": tl.names[i],
                  "kind": run.kinds[i], "phase": nodes[i].phase, "start_s": tl.start[i],
                  "end_s": tl.end[i], "time_s": run.seconds[i]}
                 for i, stream in enumerate(tl.streams))
    totals = {k: getattr(st, k) for k in ("time_s", "bubble_s", "pp_comm_exposed_s",
                                          "dp_comm_exposed_s", "optimizer_s",
                                          "ideal_bubble_fraction")}
    totals.update(pp=st.pp, dp=st.dp, micro_batches=st.micro_batches, schedule=st.schedule)
    notes = ("times in s from the step's simulation; kind: compute (chunks), p2p, dp, "
             "optimizer, tp, pp", f"settings: tp={tp}, {_describe(settings)}")
    return Table(f"{_inputs(pred)}, TP={tp} PP={st.pp} DP={st.dp} on {topo.name}: one training "
                 f"step, {st.micro_batches} micro-batches, {st.schedule}", PIPELINE_COLUMNS, rows,
                 notes, totals)
