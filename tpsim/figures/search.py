"""The numbers behind ``tpsim plot search``: the fastest fitting layout of each (TP, PP) cell,
its step time from ``predict()`` (the search's branch and bound inside each cell)."""
from __future__ import annotations

from .data import Table
from ..report.search import layout_label
from ..search.driver import best_by

SEARCH_COLUMNS = ("tp", "pp", "dp", "step_time_s", "tokens_per_s", "mfu", "memory_bytes",
                  "layout")


def search_grid(model, topology, gpus: int, global_batch: int, **settings) -> Table:
    """One row per (tp, pp) with a layout that can run: the best of the other knobs (virtual
    stages, micro-batch, SP, recompute, distributed optimizer, TP overlap, uneven stages);
    ``step_time_s`` empty where none of them fits in memory."""
    run, best = best_by(model, topology, gpus, global_batch, lambda lay: (lay.tp, lay.pp),
                        **settings)
    rows = []
    for (tp, pp), cand in sorted(best.items()):
        row = {"tp": tp, "pp": pp, "dp": gpus // (tp * pp)}
        if cand is not None:
            st = cand.step
            row.update(step_time_s=st.time_s, tokens_per_s=st.tokens_per_s, mfu=st.mfu,
                       memory_bytes=cand.memory.total_bytes, layout=layout_label(cand.layout))
        rows.append(row)
    fastest = min((r for r in rows if "step_time_s" in r), key=lambda r: r["step_time_s"],
                  default=None)
    notes = ("step_time_s: predict()'s step of the fastest layout of the cell that fits; "
             "empty: none fits", "layout: TP PP VP DP mb and flags as tpsim search prints them")
    totals = {"fastest": fastest["layout"] if fastest else "none fits",
              "dtype": run.dtype, "seq_len": run.seq_len,
              "fixed": " ".join(f"{k}={v}" for k, v in run.fixed) or "none"}
    return Table(f"{run.model.name} on {gpus} GPUs of {run.topo.name} ({run.topo.device.name}), "
                 f"global batch {global_batch}: the fastest layout per TP x PP", SEARCH_COLUMNS,
                 tuple(rows), notes, totals)
