"""tpsim's training-step prediction against vTrain's measured Megatron-DeepSpeed iterations.

The vTrain repository (Bang et al., MICRO 2024) publishes 1,440 measured iteration times on one
A100 node (2-8 GPUs, every TP x PP x DP split, GPT models of hidden 1024/2048) and 109 on 64-512
A100s (3.6B to 175B GPT), copied in tests/data/vtrain/. Each row is predicted with
``tpsim.predict`` as those runs were configured and as Megatron-DeepSpeed ran in 2023:

* the model: GPT with biases, LayerNorm, GeLU, tied embeddings, vocabulary 50257 (vTrain's
  default), dropout 0.1, Megatron's unfused attention (vTrain's own model);
* fp16, full activation recomputation (``use_checkpoint: true``), 1F1B;
* Megatron-DeepSpeed's query-key layer scaling, on by default (``megatron/arguments.py``:
  ``--no-query-key-layer-scaling``): where Megatron's fused softmax does not apply (TP 8 at
  micro-batch 1: 2 heads a rank; the 18.4B model's TP 16, 3) its fallback runs in fp32
  (:mod:`tpsim.layer.unfused`);
* DP all-reduce after the whole backward, not overlapped (``overlap_grad_reduce=False``:
  DeepSpeed's pipeline engine reduces gradients at the end of the schedule);
* activations between stages split over the TP ranks and all-gathered by the receiver
  (``scatter_gather_p2p=True``: DeepSpeed's pipe_partitioned / grad_partitioned defaults);
* single node on dgx-a100; multi-node on dgx-a100-hdr-cluster with the network vTrain states for
  these runs: 800 Gb/s a node (its validation configurations, ``config/validation/multi/*.json``,
  set ``inter_node_bandwidth: 800``, "total bandwidth of inter-node communication in Gbps" in
  ``src/config.py``), 4 of the preset's 8 HDR 200 Gb/s NICs (:func:`measured_cluster`; the NIC
  count is not stated, and 8 x HDR100 prices every row the same: a group is charged its share
  ``min(nics, members, nics x members / active)`` of the node's NICs).

Nothing is fitted on the multi-node rows. The 800 Gb/s is the data's own statement of the
cluster, not a fit: with the preset's 1,600 Gb/s (``--shipped-network``) TP 16 across two nodes
comes out 25-33% fast, with 800 Gb/s within 6%. ``--breakdown`` prints tpsim's step breakdown
(compute, exposed TP/PP/DP communication, bubble) beside each measured time.

One shipped parameter was fitted on some of these rows: dgx-a100's ``host_dispatch_us`` (the
host's time to issue one op), on the 120 single-node runs of hidden 1024 with TP only (PP = DP =
1). The single-node error is reported on all rows, on that subset, and on the 1,320 rows used in
no fit; ``--fit-host-dispatch`` re-runs the fit with the step prediction (a grid over
host_dispatch_us on that subset) and reports the held-out error. vTrain's own reported mean
absolute errors: 8.37% (single node), 14.73% (multi-node).

    python bench/vtrain_megatron.py [--rows] [--breakdown] [--decompose] [--shipped-network]
                                    [--fit-host-dispatch]
"""
from __future__ import annotations

import csv
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict
from tpsim.cluster.topology import load_topology

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "vtrain"
VTRAIN_OWN = {"single": 0.0837, "multi": 0.1473}
TOPOLOGY = {"single": "dgx-a100", "multi": "dgx-a100-hdr-cluster"}
# vTrain's validation configs (VIA-Research/vTrain f8dda84, config/validation/multi/*.json, all
# 108): "inter_node_bandwidth": 800, Gb/s a node (src/config.py) = 4 x HDR 200 Gb/s (ConnectX-6
# datasheet); the NIC count is not stated, and 8 x HDR100 prices the same (module docstring)
MULTI_NICS_PER_NODE = 4
BREAKDOWN = ("compute_s", "tp_comm_exposed_s", "pp_comm_exposed_s", "dp_comm_exposed_s",
             "bubble_s", "host_wait_s", "optimizer_s")
# the columns a configuration is not told apart by: its split a + n t (--decompose) has one a per
# configuration, and one t per configuration but the DP degree (and so the GPU count)
NOT_IN_A = ("global batch", "iteration time (ms)")
NOT_IN_T = NOT_IN_A + ("# GPUs", "data parallelism")
SETTINGS = dict(dtype="fp16", recompute="full", overlap_grad_reduce=False,
                scatter_gather_p2p=True, query_key_layer_scaling=True)


def rows(name: str) -> list[dict]:
    with open(DATA / f"ground_truth_{name}.csv", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def model_of(r: dict) -> ModelConfig:
    h, layers = int(r["hidden size"]), int(r["# layers"])
    return ModelConfig(name=f"gpt-h{h}-l{layers}", layers=layers, hidden=h,
                       heads=int(r["attention heads"]), vocab=50257,
                       seq_len=int(r["sequence length"]), dropout=0.1, attention="unfused",
                       bias=True, tie_embeddings=True)


def fitted_on(r: dict) -> bool:
    """The rows dgx-a100's host_dispatch_us was fitted on: single node, hidden 1024, TP only."""
    return (r["hidden size"] == "1024" and r["pipeline parallelism"] == "1"
            and r["data parallelism"] == "1")


def measured_cluster(topo):
    """``topo`` (dgx-a100-hdr-cluster) with the network vTrain's multi-node runs had: 800 Gb/s a
    node, MULTI_NICS_PER_NODE of its 200 Gb/s NICs (see the module docstring)."""
    levels = tuple(dataclasses.replace(lv, nics_per_node=MULTI_NICS_PER_NODE)
                   if lv.inter_node else lv for lv in topo.levels)
    new = dataclasses.replace(topo, levels=levels)
    object.__setattr__(new, "path", topo.path)
    return new


def topology(name: str, shipped: bool = False):
    """The topology a file's rows are priced on: dgx-a100 for one node, the measured cluster
    (or, with ``shipped``, dgx-a100-hdr-cluster as shipped) across nodes."""
    topo = load_topology(TOPOLOGY[name])
    return topo if name == "single" or shipped else measured_cluster(topo)


def with_host(topo, host_us: float):
    return dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                               host_dispatch_s=host_us * 1e-6))


def prediction(r: dict, topo):
    """tpsim's prediction of row ``r`` on ``topo``, run as vTrain's runs were (SETTINGS)."""
    return predict(model_of(r), topo, tp=int(r["tensor parallelism"]),
                   pp=int(r["pipeline parallelism"]), dp=int(r["data parallelism"]),
                   micro_batch=int(r["micro batch"]), global_batch=int(r["global batch"]),
                   **SETTINGS)


def predicted_s(r: dict, topo) -> float:
    return prediction(r, topo).step.time_s


def errors(name: str, data=None, topo=None) -> tuple[list[dict], np.ndarray, float]:
    """Every row of one file, its relative error (predicted / measured - 1), CPU seconds."""
    topo = topo or topology(name)
    data = rows(name) if data is None else data
    t0 = time.process_time()
    pred = np.array([predicted_s(r, topo) for r in data])
    cpu = time.process_time() - t0
    measured = np.array([float(r["iteration time (ms)"]) / 1e3 for r in data])
    return data, pred / measured - 1, cpu


def summary(label: str, e: np.ndarray) -> str:
    return (f"{label}: mean |error| {np.abs(e).mean():.1%}, median signed {np.median(e):+.1%}, "
            f"max |error| {np.abs(e).max():.0%} ({len(e)} runs)")


def by_group(data, e, key) -> list[str]:
    groups = defaultdict(list)
    for r, x in zip(data, e):
        groups[key(r)].append(x)
    return [f"    {k}: mean |error| {np.abs(v).mean():5.1%}, mean signed {np.mean(v):+6.1%} "
            f"({len(v)} runs)" for k, v in sorted(groups.items())]


def split(r: dict) -> str:
    return (f"tp {r['tensor parallelism']:>2s} pp {r['pipeline parallelism']:>2s} "
            f"dp {r['data parallelism']:>2s}")


def fit_host_dispatch() -> None:
    """Grid-fit host_dispatch_us on the fit subset; the error on the other single-node rows."""
    base = load_topology(TOPOLOGY["single"])
    data = rows("single")
    fit = [r for r in data if fitted_on(r)]
    rest = [r for r in data if not fitted_on(r)]
    grid = np.arange(30.0, 101.0, 2.0)
    scores = [np.abs(errors("single", fit, with_host(base, h))[1]).mean() for h in grid]
    best = float(grid[int(np.argmin(scores))])
    print(f"host_dispatch_us fitted on the {len(fit)} hidden-1024 TP-only runs: {best:g} "
          f"(shipped dgx-a100: {base.device.host_dispatch_s * 1e6:g})")
    print(summary("  held out, the other single-node runs", errors("single", rest,
                                                                   with_host(base, best))[1]))


def row_line(r: dict, x: float) -> str:
    return (f"    {split(r)} mb {r['micro batch']:>2s} gb {r['global batch']:>4s} "
            f"h {r['hidden size']} L {r['# layers']}: "
            f"{float(r['iteration time (ms)']):9.1f} ms measured, {x:+.1%}")


def breakdown(r: dict, topo) -> str:
    """The step's parts as tpsim prices them (seconds), beside the measured time."""
    step = prediction(r, topo).step
    parts = " ".join(f"{k[:-2].replace('_comm_exposed', '')} {getattr(step, k):6.2f}"
                     for k in BREAKDOWN)
    return (f"      measured {float(r['iteration time (ms)']) / 1e3:6.2f} s, tpsim "
            f"{step.time_s:6.2f} s = {parts} ({step.micro_batches} micro-batches)")


def micro_batches(r: dict) -> int:
    """The run's micro-batches per step: global batch / (DP x micro-batch)."""
    return int(r["global batch"]) // int(r["data parallelism"]) // int(r["micro batch"])


def config(r: dict, left_out: tuple[str, ...]) -> tuple:
    """Row ``r``'s values but the columns ``left_out``: the configuration it is a run of."""
    return tuple(v for k, v in r.items() if k not in left_out)


def linear_parts(data, seconds: np.ndarray) -> dict:
    """Per configuration (every column but the global batch) with two or more runs, the least-
    squares split of ``seconds`` into a per-step part a and a per-micro-batch part t,
    seconds = a + n t (n: :func:`micro_batches`): {key: (row indices, a, t, max residual)}."""
    groups = defaultdict(list)
    for i, r in enumerate(data):
        groups[config(r, NOT_IN_A)].append(i)
    out = {}
    for key, idx in groups.items():
        n = np.array([micro_batches(data[i]) for i in idx], dtype=float)
        if len(set(n)) < 2:
            continue
        design = np.vstack([np.ones_like(n), n]).T
        (a, t), *_ = np.linalg.lstsq(design, seconds[idx], rcond=None)
        out[key] = (idx, a, t, float(np.max(np.abs(design @ (a, t) - seconds[idx]))))
    return out


def per_parameter(data, meas: dict, pred: dict, topo) -> None:
    """PP 1: the per-step part a against the parameters a GPU holds, by DP (least squares,
    a = c0 + c1 P): at DP 1 the optimizer's step alone, above it with the DP all-reduce."""
    by_dp = defaultdict(list)
    for key, (idx, a, _, _) in meas.items():
        r = data[idx[0]]
        if r["pipeline parallelism"] == "1":
            params = prediction(r, topo).memory.params_per_gpu
            by_dp[int(r["data parallelism"])].append((params, a, pred[key][1]))
    print("  PP 1, a against the parameters a GPU holds, by DP (least squares): at DP 1 the "
          "optimizer's step, above it with the DP all-reduce")
    for dp, v in sorted(by_dp.items()):
        v = np.array(v)
        (m1, m0), (p1, p0) = np.polyfit(v[:, 0], v[:, 1], 1), np.polyfit(v[:, 0], v[:, 2], 1)
        print(f"    pp  1 dp {dp}: a = {m0 * 1e3:4.2f} ms + {m1 * 1e12:4.1f} ps a parameter, "
              f"tpsim {p0 * 1e3:4.2f} ms + {p1 * 1e12:4.1f} ps ({len(v)} configurations)")


def per_layer(data, meas: dict, pred: dict) -> None:
    """PP 1: t against the layers (by TP, hidden, micro-batch) and, at DP 1, a against them (by
    TP, hidden), least squares part = fixed + layers x per layer, measured beside tpsim, and the
    largest residual of the measured parts (t's is zero: the rows are sums of per-layer and fixed
    times; a's holds its spread over the micro-batch sizes, ~0.1 ms)."""
    fits = {"t": defaultdict(list), "a": defaultdict(list)}
    for key, (idx, a, t, _) in meas.items():
        r = data[idx[0]]
        if r["pipeline parallelism"] != "1":
            continue
        k = (int(r["tensor parallelism"]), int(r["hidden size"]))
        layers = int(r["# layers"])
        fits["t"][k + (int(r["micro batch"]),)].append((layers, t, pred[key][2]))
        if r["data parallelism"] == "1":
            fits["a"][k].append((layers, a, pred[key][1]))
    print("  PP 1, per layer and fixed, least squares over the layers: t by TP, hidden, "
          "micro-batch; a at DP 1 by TP, hidden (ms)")
    for part, groups in fits.items():
        for k, v in sorted(groups.items()):
            v = np.array(sorted(set(v)))
            if len(set(v[:, 0])) < 2:
                continue
            (m1, m0), (p1, p0) = np.polyfit(v[:, 0], v[:, 1], 1), np.polyfit(v[:, 0], v[:, 2], 1)
            res = np.abs(np.polyval((m1, m0), v[:, 0]) - v[:, 1]).max()
            label = " ".join(f"{n} {x}" for n, x in zip(("tp", "h", "mb"), k))
            print(f"    {part} {label}: {m1 * 1e3:6.3f} a layer + {m0 * 1e3:5.2f}, tpsim "
                  f"{p1 * 1e3:6.3f} (x{p1 / m1:.2f}) + {p0 * 1e3:5.2f}; residual {res:.0e} s")


def decompose(data, e: np.ndarray, topo) -> None:
    """The single-node runs split into their per-step and per-micro-batch parts, measured and
    predicted, by TP x PP; the error each part alone makes (the other part as measured)."""
    measured = np.array([float(r["iteration time (ms)"]) / 1e3 for r in data])
    meas, pred = linear_parts(data, measured), linear_parts(data, measured * (1 + e))
    rows = sum(len(v[0]) for v in meas.values())
    slopes = defaultdict(list)                   # t by configuration but DP (and GPUs)
    for idx, _, t, _ in meas.values():
        slopes[config(data[idx[0]], NOT_IN_T)].append(t)
    spread = max(max(v) - min(v) for v in slopes.values())
    print(f"  as a + n t (a per step: optimizer, DP all-reduce, pipeline fill; t per micro-batch;"
          f" n micro-batches): {rows} runs in {len(meas)} configurations of 2+ batch sizes, "
          f"max residual {max(v[3] for v in meas.values()):.0e} s; t the same at every DP "
          f"(spread {spread:.0e} s): {len(slopes)} t and {len(meas)} a make them")
    print("  by TP x PP: a measured (mean), a and t tpsim / measured (t: mean, range), mean "
          "signed error of tpsim's a alone and of its t alone (the other part as measured)")
    groups = defaultdict(list)
    for key, (idx, a, t, _) in meas.items():
        ap, tp_ = pred[key][1:3]
        for i in idx:
            n = micro_batches(data[i])
            groups[split(data[i])[:11]].append(
                (a, ap / a, tp_ / t, (ap + n * t) / measured[i] - 1,
                 (a + n * tp_) / measured[i] - 1))
    for k, v in sorted(groups.items()):
        v = np.array(v)
        print(f"    {k}: a {v[:, 0].mean() * 1e3:5.1f} ms, x{v[:, 1].mean():.2f}; t "
              f"x{v[:, 2].mean():.2f} ({v[:, 2].min():.2f}-{v[:, 2].max():.2f}); from a "
              f"{v[:, 3].mean():+5.1%}, from t {v[:, 4].mean():+6.1%} ({len(v)} runs)")
    per_parameter(data, meas, pred, topo)
    per_layer(data, meas, pred)


def stage_parts(data, e: np.ndarray) -> None:
    """Multi-node runs of one split and model at three or more micro-batch sizes: the step per
    slot of the pipeline, T / (m + p - 1) (m micro-batches, p stages), fitted as c + b x s
    (b the micro-batch size: c per micro-batch and stage whatever its size, s per sequence),
    measured beside tpsim (least squares; these runs are not exactly linear)."""
    groups = defaultdict(list)
    for r, x in zip(data, e):
        slots = micro_batches(r) + int(r["pipeline parallelism"]) - 1
        measured = float(r["iteration time (ms)"]) / 1e3
        groups[(float(r["Parameters (billion)"]), split(r))].append(
            (int(r["micro batch"]), measured / slots, measured * (1 + x) / slots))
    print("  per pipeline slot, T / (m + p - 1) = c + b s (b micro-batch size), 3+ sizes:")
    for (billions, k), v in sorted(groups.items()):
        v = np.array(sorted(v))
        if len(set(v[:, 0])) < 3:
            continue
        (ms, mc), (ps, pc) = np.polyfit(v[:, 0], v[:, 1], 1), np.polyfit(v[:, 0], v[:, 2], 1)
        print(f"    {billions:5.1f}B {k}: c {mc * 1e3:6.1f} ms, s {ms * 1e3:5.1f} ms; tpsim c "
              f"{pc * 1e3:5.1f}, s {ps * 1e3:5.1f} (b {v[0, 0]:.0f}-{v[-1, 0]:.0f})")


def report(name: str, argv: list[str]) -> None:
    shipped = "--shipped-network" in argv
    topo = topology(name, shipped)
    data, e, cpu = errors(name, topo=topo)
    network = ", 800 Gb/s a node" if name == "multi" and not shipped else ""
    print(summary(f"{name}-node ({TOPOLOGY[name]}{network})", e)
          + f"; vTrain's own: {VTRAIN_OWN[name]:.2%}; {cpu:.1f} CPU s")
    if name == "single":
        used = np.array([fitted_on(r) for r in data])
        print(summary("  rows used in no fit", e[~used]))
        print(summary("  rows host_dispatch_us was fitted on", e[used]))
        if "--decompose" in argv:
            decompose(data, e, topo)
    print("  by TP x PP x DP:")
    print("\n".join(by_group(data, e, split)))
    if name == "multi" and "--decompose" in argv:
        stage_parts(data, e)
    if name == "multi":
        print("  by model:")
        print("\n".join(by_group(data, e, lambda r: f"{float(r['Parameters (billion)']):6.1f}B")))
    if "--rows" in argv or ("--breakdown" in argv and name == "multi"):
        for r, x in zip(data, e):
            print(row_line(r, x))
            if "--breakdown" in argv:
                print(breakdown(r, topo))


def main(argv: list[str]) -> int:
    if "--fit-host-dispatch" in argv:
        fit_host_dispatch()
        return 0
    for name in ("single", "multi"):
        report(name, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
