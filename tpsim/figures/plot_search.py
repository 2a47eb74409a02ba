"""``tpsim plot search``: step time over TP x PP, each cell the best choice of the other knobs
(drawing only: every number comes from :func:`tpsim.figures.search.search_grid`'s table)."""
from __future__ import annotations

import numpy as np

from .data import Table
from .plot import plt, save  # noqa: F401 (save: re-export for the command)


def search_figure(table: Table):
    """A heat map: TP across, PP down, the cell's step time (s) and its layout written in it;
    grey where no layout of the cell fits in memory."""
    tps = sorted({r["tp"] for r in table.rows})
    pps = sorted({r["pp"] for r in table.rows})
    grid = np.full((len(pps), len(tps)), np.nan)
    for r in table.rows:
        if "step_time_s" in r:
            grid[pps.index(r["pp"]), tps.index(r["tp"])] = r["step_time_s"]
    fig, ax = plt.subplots(figsize=(2.3 * len(tps) + 2, 0.75 * len(pps) + 1.6))
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#DDDDDD")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    best = np.nanmin(grid) if np.isfinite(grid).any() else None
    present = {(r["pp"], r["tp"]) for r in table.rows}
    for y, pp in enumerate(pps):
        for x, tp in enumerate(tps):
            if (pp, tp) not in present:
                ax.text(x, y, "no layout", ha="center", va="center", fontsize=7, color="#777777")
    for r in table.rows:
        y, x = pps.index(r["pp"]), tps.index(r["tp"])
        if "step_time_s" not in r:
            ax.text(x, y, "does not fit", ha="center", va="center", fontsize=7, color="#555555")
            continue
        bold = "bold" if r["step_time_s"] == best else "normal"
        label = r["layout"].split(" ", 2)[-1]           # the cell names TP and PP
        ax.text(x, y, f"{r['step_time_s']:.2f} s\n{label}", ha="center", va="center",
                fontsize=6.5, fontweight=bold, color="white" if _dark(grid, y, x) else "black")
    ax.set_xticks(range(len(tps)), [f"TP {t}" for t in tps])
    ax.set_yticks(range(len(pps)), [f"PP {p}" for p in pps])
    fig.colorbar(image, ax=ax, label="step time (s)")
    ax.set_title(f"{table.title}\nfastest: {table.totals['fastest']} (predict's step; the other "
                 "knobs chosen per cell)", fontsize=9)
    fig.tight_layout()
    return fig


def _dark(grid, y: int, x: int) -> bool:
    """Whether the cell's colour is dark (viridis reversed: short times are light)."""
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    return hi > lo and (grid[y, x] - lo) / (hi - lo) > 0.55
