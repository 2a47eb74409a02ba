"""``tpsim plot pipeline``'s Gantt chart (drawing only: every number comes from
:func:`tpsim.figures.pipeline.pipeline`'s table).

One band per stage: its compute stream on top, forward chunks blue and backward chunks green,
each chunk a box of its own (a white edge between neighbours) labelled by its micro-batch
(``3``; ``3.1`` for model chunk 1 with virtual stages) where the box is wide enough to hold
it; the p2p transfers it sends and its DP collectives below. The white gaps on a compute lane
are the bubble.
"""
from __future__ import annotations

from .data import Table
from .plot import Patch      # matplotlib's, imported (or refused in one line) there
from .plot import BACKGROUND, COMM, COMPUTE, plt, save  # noqa: F401 (save: re-export)

BACKWARD = "#228833"     # backward chunks (forward: COMPUTE)
DP = "#AA3377"
LABEL_WIDTH = 0.012      # a chunk is labelled when it spans this share of the step, at least
MIN_WIDTH = 0.002        # the narrowest a global op is drawn, as a share of the step
LEGEND_IN = 0.35         # inches below the axes for the legend, under the x-axis label


def _lane(stream: str) -> float:
    """Vertical offset inside a stage's band: compute on top, then p2p sends, then DP."""
    if stream.startswith("p2p "):
        return 0.5
    return 0.66 if ("." in stream or not stream.startswith("stage")) else 0.0


def chunk_label(row: dict) -> str:
    """A compute chunk's micro-batch (and model chunk, when not the first): "3", "3.1"; ""
    for any other op."""
    if row["kind"] != "compute" or row["micro_batch"] == "":
        return ""
    return f"{row['micro_batch']}" + (f".{row['chunk']}" if row["chunk"] else "")


def _bars(ax, table: Table, pp: int) -> None:
    bars: dict[tuple, list] = {}
    span = max((r["end_s"] for r in table.rows), default=0.0) or 1.0
    for r in table.rows:
        color = {"compute": COMPUTE if r["phase"] == "forward" else BACKWARD,
                 "p2p": COMM, "dp": DP}.get(r["kind"], BACKGROUND)
        lane = 0.0 if r["stage"] >= pp else _lane(r["stream"])   # the step's global ops: one lane
        height = {0.0: 0.45, 0.5: 0.12}.get(lane, 0.2)
        y = r["stage"] + lane
        # the step's global ops (a gradient norm's all-reduce of microseconds) drawn at least
        # MIN_WIDTH of the step wide, or their row would look empty
        width = max(r["time_s"], MIN_WIDTH * span if r["stage"] >= pp and r["time_s"] else 0.0)
        bars.setdefault((y, height, color), []).append((r["start_s"] * 1e3, width * 1e3))
        label = chunk_label(r) if lane == 0.0 and r["stage"] < pp else ""
        if label and r["time_s"] >= LABEL_WIDTH * span:
            ax.text((r["start_s"] + r["time_s"] / 2) * 1e3, y + height / 2, label,
                    ha="center", va="center", fontsize=6, color="white")
    for (y, height, color), spans in bars.items():
        ax.broken_barh(spans, (y, height), facecolors=color, edgecolors="white",
                       linewidth=0.6)


def lane_ticks(table: Table, pp: int) -> list[tuple[float, str]]:
    """The labelled rows of the chart, (y, label): each stage's compute lane, its DP lane and
    the step's global ops ("all stages") only where some op takes time there (DP 1 has no DP
    lane; one GPU's gradient-norm all-reduce takes none)."""
    used = {(min(r["stage"], pp), 0.0 if r["stage"] >= pp else _lane(r["stream"]))
            for r in table.rows if r["time_s"] > 0}
    ticks = [(r + 0.22, f"stage {r}") for r in range(pp)]
    ticks += [(pp + 0.22, "all stages")] if (pp, 0.0) in used else []
    return ticks + [(r + 0.76, "DP") for r in range(pp) if (r, 0.66) in used]


def pipeline_figure(table: Table):
    """The step's schedule as a Gantt chart (module docstring)."""
    pp = table.totals["pp"]
    ticks = lane_ticks(table, pp)
    bands = pp + any(label == "all stages" for _, label in ticks)
    fig, ax = plt.subplots(figsize=(14, 1.8 + 0.8 * bands))
    _bars(ax, table, pp)
    # each stage's band: its compute lane, the p2p it sends, its DP stream; lines between bands
    ax.set_yticks([y for y, _ in ticks], [label for _, label in ticks])
    for r in range(1, bands):
        ax.axhline(r - 0.08, color="#dddddd", linewidth=0.8)
    ax.set_ylim(bands - 0.05, -0.15)
    ax.set_xlabel("time in the step (ms)")
    ax.legend(handles=[Patch(color=COMPUTE, label="forward chunk (its micro-batch)"),
                       Patch(color=BACKWARD, label="backward chunk (its micro-batch)"),
                       Patch(color=COMM, label="p2p transfer (sent)"),
                       Patch(color=DP, label="DP gradient scale / collective"),
                       Patch(color=BACKGROUND, label="optimizer, gradient norm, other")],
              fontsize=8, loc="lower center", ncol=5,
              bbox_to_anchor=(0.5, 0.0), bbox_transform=fig.transFigure)
    t = table.totals
    ax.set_title(f"{table.title}\nstep {t['time_s'] * 1e3:.1f} ms, bubble "
                 f"{t['bubble_s'] * 1e3:.1f} ms per GPU (closed form for equal stages "
                 f"(p-1)/(m v) = {t['ideal_bubble_fraction'] * 100:.1f}% of the compute); "
                 "chunks labelled by micro-batch (.c: model chunk c)", fontsize=9)
    fig.tight_layout(rect=(0, LEGEND_IN / fig.get_figheight(), 1, 1))
    return fig
