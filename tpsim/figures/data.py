"""The numbers behind each figure of ``tpsim plot``, as tables of rows. No matplotlib here.

Every number in a table is read from what :func:`tpsim.training.predict.predict` or
:func:`tpsim.cost.collectives.collective_time` returned, or from a measured file, never re-derived:
the CSV beside a figure is the figure. Units are SI and ride in the column name (``time_s``,
``size_bytes``), except ``*_GBps`` columns, which are nccl-tests' GB/s (1e9 bytes per second).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..training import data_parallel as dpm
from ..cost.collectives import applicable_algorithms, bus_factor, collective_time
from ..base.errors import ConfigError, TpsimError, clip
from ..calibrate.measured import finite, read_measured
from ..base.schema import load_json
from ..cluster.nccl import Topology, topology_of
from ..spec.layout import Layout

TP_DEGREES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Table:
    """Rows of one figure, and what its caption says: ``notes`` and ``totals``. Its CSV is
    plain (the header, then the rows), so any CSV reader takes it as it is."""
    title: str
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    notes: tuple[str, ...] = field(default=())
    totals: dict = field(default_factory=dict)

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: _clean(v) for k, v in row.items()} for row in self.rows)


RESIDUE = 1e-15   # seconds, shares, bytes: no quantity drawn is this small; a difference that
                  # should be 0 comes out as 1.5e-18 in floating point


def _clean(value):
    """A float residue written as 0, so a CSV reads as the figure does."""
    return 0.0 if isinstance(value, float) and abs(value) < RESIDUE else value


# --------------------------------------------------------------------------- output files

FORMATS = ("png", "svg", "pdf")


def output_paths(out: str | Path, fmt: str | None) -> tuple[Path, Path]:
    """``--out`` -> (image, csv beside it). The format is ``--format``, else the suffix (png,
    svg, pdf), else png for a name without one; another suffix needs --format. Missing
    directories are created when the files are written."""
    if not isinstance(out, (str, Path)):
        raise ConfigError("--out", "", "an image file name such as fig.png", out)
    text = str(out)
    p = Path(text)
    if not text.strip() or text.endswith(("/", "\\")) or p.name in ("", ".", "..") or \
            "\0" in text:
        raise ConfigError("--out", "", "an image file name such as fig.png (its CSV goes "
                          "beside it)", text)
    if _is_dir(p):
        raise ConfigError("--out", "", "an image file name, not a directory", text)
    suffix = p.suffix.lower().lstrip(".")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError("--format", "", f"one of {', '.join(FORMATS)}", fmt)
    if fmt is None and suffix not in (*FORMATS, "csv", ""):
        raise ConfigError("--out", "", f"a name ending in .{', .'.join(FORMATS)} (or --format)",
                          text)
    fmt = fmt or (suffix if suffix in FORMATS else "png")
    image = p.with_suffix(f".{fmt}") if suffix in (*FORMATS, "csv", "") else \
        p.with_name(f"{p.name}.{fmt}")
    if _is_dir(image):
        raise ConfigError("--out", "", "an image file name, not a directory", str(image))
    return image, image.with_suffix(".csv")


def _is_dir(p: Path) -> bool:
    """``--out figs`` naming a directory: refused, not written as figs.png beside it."""
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- collective

COLLECTIVE_COLUMNS = ("topology", "requested", "algorithm", "protocol", "op", "ranks", "size_bytes", "time_us",
                      "algbw_GBps", "busbw_GBps", "launch_us", "latency_us", "transfer_us",
                      "copy_us", "bound")


def collective_sweep(topologies: list[Topology], op: str, ranks: int, algorithms: list[str],
                     sizes: list[int], measured: str | Path | None = None) -> Table:
    """One line per (topology, algorithm): ``collective_time`` at every size.

    ``bound`` says which half of ``t = (launch + hops*alpha) + (bus_factor*S/B + copy)`` is larger
    at that size; the knee of a line is the first size from which every row is ``bandwidth``. ``measured`` points (see
    :func:`read_measured`) become rows with ``requested = measured``, their busbw as nccl-tests
    computes it: ``size / time * bus_factor(op, ranks)``.
    """
    rows, notes = [], []
    for topo in topologies:
        wanted = algorithms
        if "all" in algorithms:
            wanted = ["auto", *applicable_algorithms(op, ranks, topo)]
        for algo in wanted:
            if algo not in ("auto", *applicable_algorithms(op, ranks, topo)):
                notes.append(f"skipped {algo} on {topo.name}: not available for {op} on {ranks} ranks")
                continue
            for size in sizes:
                cost = collective_time(op, size, ranks, topo, algo)
                fixed = cost.launch_s + cost.latency_s
                rows.append({"topology": topo.name, "requested": algo, **cost.as_dict(),
                             "bound": "bandwidth" if cost.transfer_s + cost.copy_s >= fixed
                             else "latency"})
    if not rows:
        raise TpsimError("plot collective: no algorithm applies: " + "; ".join(notes))
    if measured is not None:
        label = f"measured: {Path(measured).name}"
        for size, time_s in read_measured(measured, op, ranks):
            rows.append({"topology": label, "requested": "measured", "algorithm": "measured",
                         "op": op, "ranks": ranks, "size_bytes": int(size), "time_us": time_s * 1e6,
                         "algbw_GBps": size / time_s / 1e9,
                         "busbw_GBps": size / time_s * bus_factor(op, ranks) / 1e9, "bound": ""})
    notes.insert(0, "size_bytes as nccl-tests counts it; algbw = size/time; busbw = algbw * bus "
                    "factor; GB/s = 1e9 B/s; time = launch + latency + transfer + copy")
    return Table(f"{op} on {ranks} ranks: time and bus bandwidth against message size",
                 COLLECTIVE_COLUMNS, tuple(rows), tuple(notes))


# --------------------------------------------------------------------------- validation

VALIDATION_COLUMNS = ("layer", "phase", "shape", "measured_s", "predicted_s", "error_pct")
MIN_CASE_S, MAX_CASE_S = 1e-12, 1e6   # a validated layer's time: a picosecond to 11 days
MAX_ERROR_PCT = 1e6                   # 10,000 times off: beyond, the figure's axes overflow
MAX_LABEL = 80                        # characters of a case's layer, phase or shape drawn


def validation_table(report_path: str | Path) -> Table:
    """The cases of a ``validate/run.py`` report.json: predicted and measured time per layer."""
    p = Path(report_path)
    report = load_json(p, "a readable validate/ report.json")
    cases = report.get("cases") if isinstance(report, dict) else None
    if not isinstance(cases, list) or not cases:
        raise ConfigError(str(p), "cases", "a non-empty list of validated layers")
    rows = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise ConfigError(str(p), f"cases[{i}]", "a mapping", type(case).__name__)
        for key in ("measured_s", "predicted_s"):
            if not finite(case.get(key), lo=0) or not \
                    MIN_CASE_S <= case[key] <= MAX_CASE_S:
                raise ConfigError(str(p), f"cases[{i}].{key}", f"a number of seconds from "
                                  f"{MIN_CASE_S:g} to {MAX_CASE_S:g}", case.get(key))
        error = case.get("error_pct")
        if not finite(error) or abs(error) > MAX_ERROR_PCT:
            raise ConfigError(str(p), f"cases[{i}].error_pct", f"a number from "
                              f"{-MAX_ERROR_PCT:g} to {MAX_ERROR_PCT:g}", error)
        shape = case.get("shape", "")
        shape = json.dumps(shape) if isinstance(shape, (dict, list)) else str(shape)
        rows.append({"layer": clip(str(case.get("layer", f"case {i}")), MAX_LABEL),
                     "phase": clip(str(case.get("phase", "")), MAX_LABEL),
                     "shape": clip(shape, MAX_LABEL),
                     "measured_s": case["measured_s"], "predicted_s": case["predicted_s"],
                     "error_pct": error})
    summary = report.get("summary")
    notes = [f"report: {p}", "measured_s, predicted_s and error_pct as the report gives them"]
    totals = {}
    if isinstance(summary, dict):       # what the report says, where it is a plain value
        totals = {k: v for k, v in summary.items() if finite(v) or isinstance(v, str)}
    return Table("predicted against measured time per validated layer", VALIDATION_COLUMNS,
                 tuple(rows), tuple(notes), totals)


def load_topologies(names: list[str], nccl: str | None = None) -> list[Topology]:
    """``names`` loaded, each as NCCL release ``nccl`` runs it (:func:`topology_of`)."""
    return [topology_of(n, nccl) for n in names]


# --------------------------------------------------------------------------- from predict()

def _predict(model: str, topo: Topology, tp: int, settings: dict):
    """``predict()`` of the :class:`~tpsim.spec.layout.Layout` of ``tp`` and ``settings``."""
    from ..training.predict import predict     # networkx and the op graph: only for the figures that need them
    return predict(model, topo, layout=Layout(tp=tp, **settings))


def _predict_or_skip(model: str, topo: Topology, tp: int, settings: dict):
    """(prediction, "ok"), or (None, why) when this TP degree cannot run (heads % tp, GPUs)."""
    try:
        return _predict(model, topo, tp, settings), "ok"
    except TpsimError as e:
        return None, f"skipped: {e}"


INTRA_INTER_COLUMNS = ("topology", "tp", "gpus_per_node", "crosses_node", "status", "layer_s",
                       "compute_s", "exposed_comm_s", "host_wait_s", "comm_s", "comm_share",
                       "exposed_comm_share")


def intra_vs_inter(model: str, topologies: list[Topology], degrees: tuple[int, ...] = TP_DEGREES,
                   **settings) -> Table:
    """Per-layer time (compute + exposed communication) and comm share against TP degree."""
    rows, priced = [], None
    for topo in topologies:
        for tp in degrees:
            base = {"topology": topo.name, "tp": tp, "gpus_per_node": topo.devices_per_node,
                    "crosses_node": tp > topo.devices_per_node}
            pred, status = _predict_or_skip(model, topo, tp, settings)
            if pred is None:
                rows.append({**base, "status": status})
                continue
            layer, priced = pred.layer, pred
            rows.append({**base, "status": status, "layer_s": layer.total_s,
                         "compute_s": layer.compute_s, "exposed_comm_s": layer.exposed_comm_s,
                         "host_wait_s": layer.host_wait_s,
                         "comm_s": layer.comm_s, "comm_share": layer.comm_share,
                         "exposed_comm_share": layer.exposed_comm_share})
    notes = ("one transformer layer, forward + backward, per GPU, from tpsim predict; times in s;"
             " layer_s = compute_s + exposed_comm_s + host_wait_s (GPU idle, waiting for the host)",
             "comm_share = comm_s / layer_s; exposed_comm_share = exposed_comm_s / layer_s",
             f"settings: {_describe(settings)}")
    if priced is None:
        raise TpsimError(f"plot intra-vs-inter: no TP degree runs: {rows[0]['status']}")
    return Table(f"{_inputs(priced)}: one layer against TP degree", INTRA_INTER_COLUMNS,
                 tuple(rows), notes)


def _describe(settings: dict) -> str:
    """The settings given (None: the model's own, left unsaid)."""
    return ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None) or \
        "predict defaults"


def _inputs(pred) -> str:
    """What a figure priced, as predict() resolved it: model, micro-batch, tokens, dtype."""
    i = pred.inputs
    return (f"{i.model}, micro-batch {i.micro_batch} x {i.seq_len} tokens, {i.dtype}"
            + (", sequence parallel" if i.sequence_parallel else "")
            + (f", recompute {i.recompute}" if i.recompute != "none" else ""))


BREAKDOWN_COLUMNS = ("phase", "name", "kind", "stream", "block", "shape", "flops", "bytes",
                     "comm_bytes", "collective", "algorithm", "time_s", "start_s", "end_s", "share")


def breakdown(model: str, topo: Topology, tp: int, **settings) -> Table:
    """Every op of one layer as ``predict()`` scheduled it, forward then backward."""
    pred = _predict(model, topo, tp, settings)
    rows = [{k: getattr(op, k) for k in BREAKDOWN_COLUMNS} for op in pred.ops]
    layer = pred.layer
    totals = {"forward_s": layer.forward_s, "backward_s": layer.backward_s,
              "total_s": layer.total_s, "compute_s": layer.compute_s, "comm_s": layer.comm_s,
              "exposed_comm_s": layer.exposed_comm_s}
    notes = ("ops in schedule order; times in s; share = time_s / layer total_s; "
             "comm ops run on their own stream and may overlap compute",
             f"settings: {_describe(settings)}")
    return Table(f"{_inputs(pred)}, TP={tp} on {topo.name}: where one layer's time goes",
                 BREAKDOWN_COLUMNS, tuple(rows), notes, totals)


def _tp_per_step(pred, tp: int, micro_batches: int) -> dict:
    """A layer's collectives (predict()'s rows) times layers times micro-batches per step."""
    per = pred.model.layers * micro_batches
    coll = pred.collectives
    return {"collectives_per_step": per * sum(c.count for c in coll),
            "collective_bytes_per_step": per * sum(c.count * c.bytes for c in coll),
            "sent_bytes_per_gpu_per_step": per * sum(c.count * bus_factor(c.op, tp) * c.bytes
                                                     for c in coll),
            "time_per_step_s": per * pred.layer.comm_s,
            "exposed_time_per_step_s": per * pred.layer.exposed_comm_s}


TP_DP_COLUMNS = ("strategy", "degree", "crosses_node", "status", "moves", "collectives_per_step",
                 "collective_bytes_per_step", "sent_bytes_per_gpu_per_step", "time_per_step_s",
                 "exposed_time_per_step_s")


def tp_vs_dp(model: str, topo: Topology, degrees: tuple[int, ...] = TP_DEGREES[1:],
             micro_batches: int = 1, **settings) -> Table:
    """Bytes and time per training step, per GPU: TP's activation collectives against DP's
    gradient reduction, on groups of ``degree`` GPUs of ``topo`` (inside a node, then across).

    TP (per step): layers * micro_batches * the layer's collectives (count, nccl-tests bytes,
    comm_s and exposed_comm_s of ``predict()``); transformer layers only.
    DP (per step): :func:`tpsim.training.data_parallel.sync_collectives` of every parameter: one
    all-reduce of the main gradients (fp32 for bf16 training, as Megatron reduces them), the
    step's DP model; DP replicates the whole model, as the chapter's table assumes.
    sent bytes: what one GPU puts on its links, bus_factor(op, degree) * nccl-tests bytes.
    """
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ConfigError("--micro-batches", "", "a positive integer", micro_batches)
    from ..training.predict import default_dtype
    dtype = settings.get("dtype") or default_dtype(topo)
    single = _predict(model, topo, 1, settings)
    params = single.model.params
    grad_bytes = dpm.grad_bytes(params, dtype)
    rows = []
    for g in degrees:
        base = {"degree": g, "crosses_node": g > topo.devices_per_node}
        pred, status = _predict_or_skip(model, topo, g, settings)
        tp = {**base, "strategy": "TP", "status": status,
              "moves": "activations: every layer, forward and backward"}
        if pred is not None:
            tp.update(_tp_per_step(pred, g, micro_batches))
        if g > topo.max_ranks:
            rows.append(tp)
            rows.append({**base, "strategy": "DP", "status": status, "moves": "gradients"})
            continue
        sync = dpm.sync_collectives(params, dtype, g, topo)
        rows += [tp, {**base, "strategy": "DP", "status": "ok",
                      "moves": "gradients: once per step, one all-reduce",
                      "collectives_per_step": len(sync),
                      "collective_bytes_per_step": sum(c.nbytes for c in sync),
                      "sent_bytes_per_gpu_per_step": sum(c.bus_bytes for c in sync),
                      "time_per_step_s": sum(c.time_s for c in sync)}]
    notes = (f"per GPU per training step of {micro_batches} micro-batch(es); bytes in B, times in s",
             f"DP gradients: {params} parameters x {grad_bytes / params:g} B (main gradients for "
             f"{dtype}), one all-reduce (tpsim.training.data_parallel.sync_collectives; unbucketed, its "
             "overlap with the backward is in tpsim predict --dp, not here: no exposed time)",
             "collective_bytes: nccl-tests size; sent_bytes: bus_factor * size, what one GPU sends",
             f"settings: {_describe(settings)}")
    return Table(f"{_inputs(single)} on {topo.name}: TP moves activations every layer, DP "
                 "moves gradients once per step", TP_DP_COLUMNS, tuple(rows), notes,
                 {"params": params, "gradient_bytes": grad_bytes,
                  "gpus_per_node": topo.devices_per_node, "micro_batches": micro_batches})


# --------------------------------------------------------------------------- infer

INFER_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INFER_COLUMNS = ("topology", "tp", "batch", "status", "fits", "time_per_token_s",
                 "tokens_per_s", "tokens_per_s_per_gpu", "ttft_s", "decode_bound",
                 "weights_bytes", "kv_cache_bytes", "max_batch")


def infer_sweep(model: str, topologies: list[Topology], degrees=(1, 2, 4, 8),
                batches=INFER_BATCHES, **settings) -> Table:
    """Time per output token and tokens/s against batch, one line per (topology, TP degree),
    read from :func:`tpsim.serving.infer.infer` (``settings``: prompt, gen, dtype, kv_dtype,
    allreduce, eager). A degree the model or topology cannot split is a ``skipped`` row; a
    batch that does not fit in memory keeps its times with ``fits`` False."""
    from ..serving.infer import infer
    rows, seen = [], None
    for topo in topologies:
        for tp in degrees:
            for b in batches:
                base = {"topology": topo.name, "tp": tp, "batch": b}
                try:
                    p = infer(model, topo, tp=tp, batch=b, **settings)
                except TpsimError as e:
                    rows.append({**base, "status": f"skipped: {e}"})
                    break
                seen = p
                rows.append({**base, "status": "ok", "fits": p.memory.fits,
                             "time_per_token_s": p.decode.time_per_token_s,
                             "tokens_per_s": p.decode.tokens_per_s,
                             "tokens_per_s_per_gpu": p.decode.tokens_per_s / (tp * p.inputs.pp),
                             "ttft_s": p.prefill.time_s, "decode_bound": p.decode.cost.bound,
                             "weights_bytes": p.memory.weights_bytes,
                             "kv_cache_bytes": p.memory.kv_cache_bytes,
                             "max_batch": p.memory.max_batch})
    if seen is None:
        raise TpsimError(f"plot infer: no TP degree runs: {rows[0]['status']}")
    i = seen.inputs
    notes = ("decode: mean time per output token over the generated tokens; tokens/s over all "
             "sequences; per GPU: divided by tp x pp; times in s, bytes in B",
             f"prompt {i.prompt}, gen {i.gen}, GEMMs {i.dtype}, KV cache {i.kv_dtype}, "
             f"all-reduce {i.allreduce}, {'CUDA graphs' if i.cuda_graphs else 'eager'}",
             "fits: weights + KV cache + prefill activations within the device's memory")
    return Table(f"{i.model}: time per output token against batch", INFER_COLUMNS,
                 tuple(rows), notes)
