"""Figures for ``tpsim plot``: each one drawn from a :class:`~tpsim.figures.data.Table`.

Imported only by the plot command (matplotlib is slow to import and needs no display here: the
Agg backend). Drawing only: every number comes from the table, which comes from
``predict()``/``collective_time()``; :func:`save` writes the figure and that table as CSV beside it.
Human units (ms, us, GB, GB/s with GB = 1e9 bytes) appear only on the axes.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..base.errors import ConfigError, TpsimError

try:
    import matplotlib
except ModuleNotFoundError:     # a dependency this environment lacks: one line, not a traceback
    raise TpsimError("tpsim plot draws with matplotlib, a dependency of tpsim this Python "
                     "does not have: pip install 'matplotlib>=3.5'") from None

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (FuncFormatter, LogFormatter, LogLocator, MaxNLocator,  # noqa: E402
                               PercentFormatter)

from .about import write_about  # noqa: E402
from .data import FORMATS, Table, output_paths  # noqa: E402,F401 (FORMATS: re-export)
from ..base.units import format_size  # noqa: E402

COMPUTE, COMM, BACKGROUND = "#4477AA", "#EE6677", "#BBBBBB"
HOST = "#CCBB44"     # GPU idle, waiting for the host to issue the next op
LINE_COLORS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377")
HATCHES = ("", "//", "..", "xx")
MAX_FIGURE_INCHES = 40   # a side of a saved figure drawn tight (5,200 px); beyond, its own size


def save(fig, table: Table, out: str | Path, fmt: str | None = None) -> tuple[Path, Path]:
    """Write the figure (PNG, SVG or PDF), its table as plain CSV and what the CSV does not
    say beside it (:mod:`tpsim.figures.about`), creating missing directories; an unwritable
    ``--out`` is a ConfigError (exit 2)."""
    image, csv_path = output_paths(out, fmt)
    try:
        image.parent.mkdir(parents=True, exist_ok=True)
        table.write_csv(csv_path)
        write_about(table, csv_path)
        box = fig.get_tightbbox(fig.canvas.get_renderer())   # a huge label: the figure's size,
        fig.savefig(image, format=image.suffix[1:], dpi=130,   # not an image of gigabytes
                    bbox_inches="tight" if max(box.width, box.height) <= MAX_FIGURE_INCHES else None)
    except OSError as e:
        raise ConfigError("--out", "", "a path tpsim can write", f"{image}: {e.strerror}") from None
    finally:
        plt.close(fig)
    return image, csv_path


def _size_axis(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=30))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: format_size(x) if x > 0 and round(math.log2(x)) % 3 == 0 else ""))


def ms_axis(ax, lo: float, hi: float) -> None:
    """A y axis of milliseconds from ``lo`` to ``hi`` with numbers a reader can read off: log
    over a decade or more (1, 2, 3, 4, 6, 10, ...), every minor tick labelled across less than
    one (3 to 20 ms has one power of ten to mark), linear within a factor of three (12 to
    30 ms: 12, 15, 18, ...)."""
    if hi < 3 * lo:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    within = hi < 10 * lo
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=30))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        (lambda v, _: f"{v:.3g}") if within else _minor_label))


def _minor_label(v: float, _pos=None) -> str:
    """Label the 2, 3, 4 and 6 minor ticks of a log axis plainly ("0.3", "400")."""
    lead = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
    return f"{v:g}" if lead in (2, 3, 4, 6) else ""


def _degree_axes(axes, degrees: list[int], gpus_per_node: int, xlabel: str) -> None:
    """Categorical GPU-count x axes with the node boundary dashed between the last degree that
    fits one node and the first that does not."""
    for ax in axes:
        ax.set_xticks(range(len(degrees)), [str(g) for g in degrees])
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        inside = [i for i, g in enumerate(degrees) if g <= gpus_per_node]
        if inside and inside[-1] + 1 < len(degrees):
            edge = inside[-1] + 0.5
            ax.axvline(edge, color="black", linestyle="--", linewidth=1)
            ax.text(edge, 0.98, f" node boundary\n ({gpus_per_node} GPUs/node)",
                    transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=8)


# --------------------------------------------------------------------------- collective

def collective_figure(table: Table):
    """Time (log-log) and busbw (log-x) against size; one line per topology and algorithm."""
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(12, 4.8))
    lines: dict[tuple[str, str], list[dict]] = {}
    for row in table.rows:
        lines.setdefault((row["topology"], row["requested"]), []).append(row)
    topologies = list(dict.fromkeys(topo for topo, _ in lines))
    for i, ((topo, algo), rows) in enumerate(lines.items()):
        sizes = [r["size_bytes"] for r in rows]
        if algo == "measured":
            for ax, key in ((ax_t, "time_us"), (ax_b, "busbw_GBps")):
                ax.plot(sizes, [r[key] for r in rows], "k.", markersize=3, label=topo)
            continue
        # the knee: from here on every size is bandwidth-bound (protocol switches can flip
        # the regime back and forth below it)
        latency_bound = [i for i, r in enumerate(rows) if r["bound"] == "latency"]
        knee = rows[latency_bound[-1] + 1] if latency_bound and latency_bound[-1] + 1 < len(rows) \
            else None
        label = f"{topo}, {algo}" + (f" (= {rows[-1]['algorithm']} at large sizes)"
                                     if algo == "auto" else "")
        label += f", knee {format_size(knee['size_bytes'])}" if knee is not None else ""
        # beside the algorithms it picks from, auto is a wide pale band, so both stay visible
        pale = algo == "auto" and sum(t == topo for t, _ in lines) > 1
        style = dict(color=LINE_COLORS[i % len(LINE_COLORS)],
                     linestyle=("-", "--", ":", "-.")[topologies.index(topo) % 4],
                     linewidth=5 if pale else 1.8, alpha=0.35 if pale else 1)
        ax_t.plot(sizes, [r["time_us"] for r in rows], label=label, **style)
        ax_b.plot(sizes, [r["busbw_GBps"] for r in rows], label=label, **style)
        if knee is not None:
            ax_t.plot([knee["size_bytes"]], [knee["time_us"]], "o", color=style["color"])
    ax_t.text(0.02, 0.98, "o  knee: above it the bandwidth term\n    outweighs launch + latency",
              transform=ax_t.transAxes, va="top", fontsize=8)
    ax_t.set_yscale("log")
    ax_t.set_ylabel("time per collective (us)")
    ax_t.set_title("time: flat while latency-bound, then linear in size")
    ax_b.set_ylabel("bus bandwidth (GB/s, 1e9 B/s)")
    ax_b.set_title("bus bandwidth (nccl-tests busbw)")
    for ax in (ax_t, ax_b):
        _size_axis(ax)
        ax.set_xlabel("message size (bytes, as nccl-tests counts them)")
        ax.grid(True, which="major", alpha=0.3)
    ax_b.legend(fontsize=8, loc="upper left")
    fig.suptitle(table.title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- validation

def validation_figure(table: Table):
    """Predicted against measured (log-log), y = x and +-10 % bands, each point's error labelled."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ms = [r["measured_s"] * 1e3 for r in table.rows]
    ps = [r["predicted_s"] * 1e3 for r in table.rows]
    lo, hi = min(ms + ps) / 1.5, max(ms + ps) * 1.5
    ax.plot([lo, hi], [lo, hi], "k-", linewidth=1, label="y = x (exact)")
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color=BACKGROUND,
                    alpha=0.4, label="within 10 %")
    phases = sorted({r["phase"] for r in table.rows})
    for i, phase in enumerate(phases):
        rows = [r for r in table.rows if r["phase"] == phase]
        ax.plot([r["measured_s"] * 1e3 for r in rows], [r["predicted_s"] * 1e3 for r in rows],
                "os^D"[i % 4], color=LINE_COLORS[i % len(LINE_COLORS)], label=phase or "layer",
                linestyle="none")
        for r in rows:
            ax.annotate(f"{r['layer']} {r['error_pct']:+.1f}%",
                        (r["measured_s"] * 1e3, r["predicted_s"] * 1e3),
                        textcoords="offset points", xytext=(5, -10), fontsize=7)
    for axis in (ax.xaxis, ax.yaxis):   # plain 2, 3, 5 labels while the range is short
        axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("measured time (ms)")
    ax.set_ylabel("predicted time, tpsim (ms)")
    worst = max(abs(r["error_pct"]) for r in table.rows)
    median = table.totals.get("median_abs_error_pct")
    ax.set_title(f"{table.title}\n{len(table.rows)} cases"
                 + (f", median |error| {median:.1f} %" if isinstance(median, (int, float)) else "")
                 + f", largest |error| {worst:.1f} %", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- intra vs inter

def intra_vs_inter_figure(table: Table):
    """Stacked per-layer time (compute, exposed comm) and comm share against TP degree."""
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    topologies = list(dict.fromkeys(r["topology"] for r in table.rows))
    degrees = sorted({r["tp"] for r in table.rows})
    x = {tp: i for i, tp in enumerate(degrees)}
    width = 0.8 / len(topologies)
    ok = [r for r in table.rows if r["status"] == "ok"]
    top = max(r["layer_s"] for r in ok) * 1e3 * 1.08
    for k, topo in enumerate(topologies):
        offset = (k - (len(topologies) - 1) / 2) * width
        for r in (r for r in table.rows if r["topology"] == topo):
            pos = x[r["tp"]] + offset
            if r["status"] != "ok":
                ax_t.text(pos, top * 0.02, f"n/a on {topo}", ha="center", va="bottom",
                          fontsize=7, rotation=90)
                continue
            compute, exposed = r["compute_s"] * 1e3, r["exposed_comm_s"] * 1e3
            host = r["host_wait_s"] * 1e3
            ax_t.bar(pos, compute, width, color=COMPUTE, hatch=HATCHES[k % 4], edgecolor="white")
            ax_t.bar(pos, exposed, width, bottom=compute, color=COMM, hatch=HATCHES[k % 4],
                     edgecolor="white")
            ax_t.bar(pos, host, width, bottom=compute + exposed, color=HOST,
                     hatch=HATCHES[k % 4], edgecolor="white")
            ax_t.text(pos, compute + exposed + host, f"{compute + exposed + host:.1f}",
                      ha="center", va="bottom", fontsize=7)
        mine = [r for r in ok if r["topology"] == topo]
        color = LINE_COLORS[k % len(LINE_COLORS)]
        xs = [x[r["tp"]] for r in mine]
        # the first topology is drawn wide and pale, so an identical second one stays visible
        wide = dict(linewidth=5, alpha=0.4) if k == 0 and len(topologies) > 1 else {}
        ax_s.plot(xs, [r["comm_share"] for r in mine], marker="o", color=color, linestyle="-",
                  label=f"{topo}: all communication", **wide)
        ax_s.plot(xs, [r["exposed_comm_share"] for r in mine], marker="s", color=color,
                  linestyle=":", label=f"{topo}: exposed (not hidden)", **wide)
    ax_t.set_ylim(0, top)
    handles = [Patch(color=COMPUTE, label="compute"), Patch(color=COMM, label="exposed comm"),
               Patch(color=HOST, label="waiting for the host")]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=HATCHES[k % 4], label=topo)
                for k, topo in enumerate(topologies)]
    # legends below the axes: bars, value labels and the node-boundary label stay uncovered
    # however many topologies are compared
    below = dict(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax_t.legend(handles=handles, ncol=min(3, len(handles)), **below)
    ax_t.set_ylabel("time per layer, forward + backward (ms)")
    ax_t.set_title("per-layer time: compute shrinks with TP, communication does not", fontsize=11)
    ax_s.set_ylabel("share of layer time")
    ax_s.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_s.set_ylim(0, max(0.5, max(r["comm_share"] for r in ok) * 1.15))
    ax_s.set_title("communication share", fontsize=11)
    ax_s.legend(ncol=2, **below)
    _degree_axes((ax_t, ax_s), degrees, min(r["gpus_per_node"] for r in table.rows),
                 "TP degree (GPUs one layer is split over)")
    fig.suptitle(table.title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- breakdown

def breakdown_figure(table: Table):
    """One horizontal bar per op, forward above backward, coloured by stream, share labelled."""
    phases = list(dict.fromkeys(r["phase"] for r in table.rows))
    counts = [sum(r["phase"] == p for r in table.rows) for p in phases]
    fig, axes = plt.subplots(len(phases), 1, figsize=(10, 1.2 + 0.24 * sum(counts)), sharex=True,
                             gridspec_kw={"height_ratios": counts}, squeeze=False)
    for ax, phase in zip(axes[:, 0], phases):
        rows = [r for r in table.rows if r["phase"] == phase]
        ys = range(len(rows))
        times = [r["time_s"] * 1e6 for r in rows]
        ax.barh(ys, times, color=[COMM if r["stream"] == "comm" else COMPUTE for r in rows])
        for y, t, r in zip(ys, times, rows):
            ax.text(t, y, f" {t:,.0f} us  {r['share']:.1%}", va="center", fontsize=7)
        ax.set_yticks(list(ys), [f"{r['name']} ({r['kind']})" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{phase}: {table.totals[f'{phase}_s'] * 1e3:.2f} ms of the layer's "
                     f"{table.totals['total_s'] * 1e3:.2f} ms", fontsize=10, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.15)
    axes[-1, 0].set_xlabel("op time (us); share = op time / layer time (forward + backward)")
    axes[0, 0].legend(handles=[Patch(color=COMPUTE, label="compute stream"),
                               Patch(color=COMM, label="comm stream (may overlap compute)")],
                      fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2,
                      frameon=False)     # above the bars, beside the phase title: no label covered
    fig.suptitle(table.title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- TP vs DP

def tp_vs_dp_figure(table: Table):
    """Bytes sent per GPU per step (bars) and communication time per step (lines) by degree."""
    fig, (ax_b, ax_t) = plt.subplots(1, 2, figsize=(13, 5))
    degrees = sorted({r["degree"] for r in table.rows})
    x = {g: i for i, g in enumerate(degrees)}
    styles = {"TP": (COMM, "activations, every layer"), "DP": (COMPUTE, "gradients, once")}
    for k, (strategy, (color, what)) in enumerate(styles.items()):
        ok = [r for r in table.rows if r["strategy"] == strategy and r["status"] == "ok"]
        ax_b.bar([x[r["degree"]] + (k - 0.5) * 0.4 for r in ok],
                 [r["sent_bytes_per_gpu_per_step"] / 1e9 for r in ok], 0.4, color=color,
                 label=f"{strategy}: {what}")
        for r in ok:
            ax_b.text(x[r["degree"]] + (k - 0.5) * 0.4, r["sent_bytes_per_gpu_per_step"] / 1e9,
                      f"{r['sent_bytes_per_gpu_per_step'] / 1e9:.0f}", ha="center", va="bottom",
                      fontsize=7)
        ax_t.plot([x[r["degree"]] for r in ok], [r["time_per_step_s"] for r in ok], "o-",
                  color=color, label=f"{strategy}: all {'collectives' if k == 0 else 'all-reduce'}")
        if strategy == "TP":
            ax_t.plot([x[r["degree"]] for r in ok], [r["exposed_time_per_step_s"] for r in ok],
                      "o--", color=color, alpha=0.6, label="TP: exposed (not hidden by compute)")
        for r in table.rows:
            if r["strategy"] == strategy and r["status"] != "ok":
                ax_b.text(x[r["degree"]] + (k - 0.5) * 0.4, 0, f"{strategy} n/a", rotation=90,
                          ha="center", va="bottom", fontsize=7)
    _degree_axes((ax_b, ax_t), degrees, table.totals["gpus_per_node"],
                 "GPUs in the group (TP degree, or DP degree)")
    for ax in (ax_b, ax_t):
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 4)     # headroom for the legend and the boundary label
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.legend(fontsize=8, loc="upper left")
    ax_b.set_ylabel("bytes sent per GPU per step (GB, 1e9 B)")
    ax_b.set_title("communication volume")
    ax_t.set_ylabel("communication time per step (s)")
    ax_t.set_title("communication time")
    mb = table.totals["micro_batches"]
    gb = table.totals["gradient_bytes"] / 1e9
    fig.suptitle(f"{table.title}\n(per step of {mb} micro-batch{'es' if mb > 1 else ''}: TP's "
                 f"volume grows with micro-batches per step, DP's {gb:.0f} GB of gradients does not)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- infer

def infer_figure(table: Table):
    """Left: time per output token against batch. Right: the latency-throughput curve, tokens/s
    per GPU against time per token (each point a batch). Colour: TP degree; line style:
    topology; only batches that fit in memory are drawn."""
    fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(13, 5.2))
    rows = [r for r in table.rows if r["status"] == "ok" and r["fits"]]
    topologies = list(dict.fromkeys(r["topology"] for r in table.rows))
    degrees = sorted({r["tp"] for r in table.rows})
    for r_key in sorted({(r["topology"], r["tp"]) for r in rows},
                        key=lambda k: (topologies.index(k[0]), k[1])):
        line = [r for r in rows if (r["topology"], r["tp"]) == r_key]
        style = dict(color=LINE_COLORS[degrees.index(r_key[1]) % len(LINE_COLORS)],
                     linestyle=("-", "--", ":", "-.")[topologies.index(r_key[0]) % 4],
                     marker="o", markersize=3.5, label=f"{r_key[0]}, TP={r_key[1]}")
        ms = [r["time_per_token_s"] * 1e3 for r in line]
        ax_l.plot([r["batch"] for r in line], ms, **style)
        ax_r.plot([r["tokens_per_s_per_gpu"] for r in line], ms, **style)
        ax_r.annotate(f"b={line[-1]['batch']}", (line[-1]["tokens_per_s_per_gpu"], ms[-1]),
                      fontsize=7, xytext=(3, 0), textcoords="offset points")
    missing = sorted({f"{r['topology']} TP={r['tp']}" for r in table.rows
                      if r["status"] != "ok" or not r.get("fits")} -
                     {f"{r['topology']} TP={r['tp']}" for r in rows})
    if missing:
        ax_l.text(0.02, 0.98, "no batch fits or runs: " + ", ".join(missing),
                  transform=ax_l.transAxes, va="top", fontsize=7)
    ax_l.set_xscale("log", base=2)
    ax_l.set_xlabel("batch (sequences decoded together)")
    ax_l.set_title("time per output token: flat while the weights' reads dominate", fontsize=11)
    ax_r.set_xlabel("decode throughput per GPU (output tokens/s)")
    ax_r.set_title("latency against throughput (each point a batch)", fontsize=11)
    every_ms = [r["time_per_token_s"] * 1e3 for r in rows]
    for ax in (ax_l, ax_r):
        ms_axis(ax, min(every_ms, default=1.0), max(every_ms, default=1.0))
        ax.set_ylabel("time per output token (ms)")
        ax.grid(True, which="both", alpha=0.3)
    ax_r.set_xscale("log")
    ax_l.legend(fontsize=8, loc="lower right")
    fig.suptitle(table.title)
    fig.tight_layout()
    return fig
