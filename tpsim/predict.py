"""tpsim's main job: time, communication and memory of a tensor-parallel transformer.

Glue only: build the op graph (:mod:`tpsim.graph`, :mod:`tpsim.embedding`), price it
(:mod:`tpsim.price`), schedule it on a compute and a comm stream (:mod:`tpsim.schedule`) and
collect a :class:`~tpsim.result.Prediction`. Model FLOPs and MFU use the conventional counts
of Narayanan et al. 2021 summed over the ops (GEMMs 2mnk, attention 4bs^2h/tp forward with
the full square, backward twice forward). Activation recomputation (``recompute``, see
:mod:`tpsim.recompute`) adds its ops to the backward: they count in the time and in the
hardware FLOPs (HFU), not in the model FLOPs (MFU).
"""
from __future__ import annotations

import math

import networkx as nx

from .embedding import embedding_graph, output_graph
from .errors import ConfigError
from .graph import collectives_in, layer_dims, layer_graph
from .memory import OPTIMIZER_BYTES, training_memory
from .model import ATTENTIONS, ModelConfig, load_model
from .price import price_graph
from .recompute import RECOMPUTE
from .result import (BlockPrediction, CollectiveRow, Inputs, LayerTimes, ModelTimes, OpRow,
                     Prediction)
from .schedule import Timeline, schedule
from .topology import Topology, load_topology
from .units import GB

DTYPES = tuple(OPTIMIZER_BYTES)   # bf16, fp16, fp32


def _resolve(model, topology) -> tuple[ModelConfig, Topology]:
    m = model if isinstance(model, ModelConfig) else load_model(model)
    t = topology if isinstance(topology, Topology) else load_topology(topology)
    return m, t


def _check(topo: Topology, tp, micro_batch, seq_len, dtype, dropout, attention,
           recompute="none") -> None:
    """Bad run settings raise ConfigError naming the flag (model sizes: ModelConfig.check_tp)."""
    for flag, v in (("--micro-batch", micro_batch), ("--seq", seq_len), ("--tp", tp)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(flag, "", "a positive integer", v)
    if tp > topo.max_ranks:
        raise ConfigError("--tp", "", f"at most the {topo.max_ranks} GPUs of {topo.name}", tp)
    if dtype not in DTYPES:
        raise ConfigError("--dtype", "", f"one of {', '.join(DTYPES)}", dtype)
    topo.device.peak(dtype)
    if dropout is not None and (isinstance(dropout, bool) or not 0 <= dropout < 1):
        raise ConfigError("--dropout", "", "a probability in [0, 1)", dropout)
    if attention is not None and attention not in ATTENTIONS:
        raise ConfigError("--attention", "", f"one of {', '.join(ATTENTIONS)}", attention)
    if recompute not in RECOMPUTE:
        raise ConfigError("--recompute", "", f"one of {', '.join(RECOMPUTE)}", recompute)


def run_graph(graph: nx.DiGraph, topo: Topology, tp: int, dtype: str) -> Timeline:
    """Price ``graph`` in place and schedule it."""
    price_graph(graph, topo, tp, dtype)
    return schedule(graph, topo.device.host_dispatch_s, topo.device.comm_compute_interference)


def op_rows(graph: nx.DiGraph, tl: Timeline) -> tuple[OpRow, ...]:
    """One row per op in schedule order (start time, then graph order)."""
    total = tl.makespan_s or 1.0
    attrs, start, end = graph._node, tl.start_s, tl.end_s   # read-only: networkx's node dict
    order = sorted((start[n], i, n) for i, n in enumerate(attrs))
    rows = []
    for t0, _, n in order:
        a = attrs[n]
        rows.append(OpRow(n, a["kind"], a["phase"], a["stream"], a["block"], a["shape"],
                          a["flops"], a["bytes"], a["comm_bytes"], a["time_s"], t0, end[n],
                          a["time_s"] / total, a["collective"], a.get("algorithm"),
                          a["forward_of"]))
    return tuple(rows)


def phase_split(graph: nx.DiGraph, tl: Timeline) -> tuple[float, float]:
    """(forward_s, backward_s): the forward ends with its last op; backward is the rest."""
    fwd = max((tl.end_s[n] for n, a in graph._node.items() if a["phase"] == "forward"),
              default=0.0)
    return fwd, tl.makespan_s - fwd


def _layer_times(graph: nx.DiGraph, tl: Timeline) -> LayerTimes:
    fwd, bwd = phase_split(graph, tl)
    total = tl.makespan_s
    comm, exposed = tl.busy_s("comm"), tl.exposed_s("comm", "compute")
    ops = graph._node.values()
    flops = sum(a["flops"] for a in ops if "recomputes" not in a)
    hardware = sum(a["flops"] for a in ops)
    compute = tl.busy_s("compute")
    nominal = sum(a["time_s"] for a in ops if a["stream"] == "compute")
    return LayerTimes(fwd, bwd, total, compute, comm, exposed,
                      comm / total if total else 0.0, exposed / total if total else 0.0, flops,
                      max(0.0, total - compute - exposed), max(0.0, compute - nominal), hardware)


def _collective_rows(graph: nx.DiGraph) -> tuple[CollectiveRow, ...]:
    """Collectives grouped by (phase, op, bytes), in issue order."""
    groups: dict[tuple, list] = {}
    for n, a in graph.nodes(data=True):
        if a["kind"] == "collective":
            groups.setdefault((a["phase"], a["collective"], int(a["comm_bytes"])), []).append(a)
    return tuple(CollectiveRow(op, phase, len(v), nbytes, v[0]["time_s"], v[0]["algorithm"])
                 for (phase, op, nbytes), v in groups.items())


def _saved(graph: nx.DiGraph) -> float:
    return sum(a["saved_bytes"] for a in graph._node.values())


def _warnings(topo, tp, mem, recompute="none") -> tuple[str, ...]:
    out = []
    if not mem.fits:
        rcp = ", " if recompute == "full" else ", activation recomputation "
        out.append(f"does not fit: {mem.total_bytes / GB:.1f} GB per GPU needed, "
                   f"{topo.device.name} has {mem.capacity_bytes / GB:.0f} GB (add pipeline "
                   f"parallelism, a distributed optimizer{rcp}or more TP)")
    nodes = math.ceil(tp / topo.devices_per_node)
    if nodes > 1:
        out.append(f"the TP group of {tp} spans {nodes} nodes: its collectives cross "
                   f"{topo.levels[1].name}")
    return tuple(out)


def _layer(m: ModelConfig, topo: Topology, tp, micro_batch, seq_len, dtype, sequence_parallel,
           dropout, attention, recompute="none"):
    """The priced, scheduled graph of one layer and its times (defaults already resolved)."""
    g = layer_graph(m, tp, micro_batch, seq_len, dtype, sequence_parallel, dropout=dropout,
                    attention=attention, recompute=recompute)
    tl = run_graph(g, topo, tp, dtype)
    return g, tl, _layer_times(g, tl)


def predict_layer(model, topology="dgx-h100", tp: int = 8, micro_batch: int = 1,
                  seq_len: int | None = None, dtype: str = "bf16", sequence_parallel: bool = False,
                  dropout: float | None = None, attention: str | None = None,
                  recompute: str = "none") -> LayerTimes:
    """One transformer layer only (what sweeps over TP degrees and sizes need): the same
    LayerTimes as ``predict(...).layer``, without the whole-model, memory and per-op rows."""
    m, topo = _resolve(model, topology)
    s = m.seq_len if seq_len is None else seq_len
    _check(topo, tp, micro_batch, s, dtype, dropout, attention, recompute)
    p = m.dropout if dropout is None else dropout
    return _layer(m, topo, tp, micro_batch, s, dtype, sequence_parallel, p,
                  attention or m.attention, recompute)[2]


def predict(model, topology="dgx-h100", tp: int = 8, micro_batch: int = 1,
            seq_len: int | None = None, dtype: str = "bf16", sequence_parallel: bool = False,
            dropout: float | None = None, attention: str | None = None,
            recompute: str = "none") -> Prediction:
    """Predict one layer and the whole model (one micro-batch, forward + backward) per GPU.

    ``model`` and ``topology`` are shipped names, YAML paths or loaded objects; ``seq_len``,
    ``dropout`` and ``attention`` default to the model's. ``recompute``: activation
    recomputation, none | selective | full (:mod:`tpsim.recompute`).
    """
    m, topo = _resolve(model, topology)
    s = m.seq_len if seq_len is None else seq_len
    _check(topo, tp, micro_batch, s, dtype, dropout, attention, recompute)
    p = m.dropout if dropout is None else dropout
    att = attention or m.attention
    g, tl, layer = _layer(m, topo, tp, micro_batch, s, dtype, sequence_parallel, p, att,
                          recompute)
    dims = g.graph["dims"]
    emb = embedding_graph(dims, dropout=p > 0)
    out = output_graph(dims, m.padded_vocab(tp) // tp)
    emb_s = run_graph(emb, topo, tp, dtype).makespan_s
    out_s = run_graph(out, topo, tp, dtype).makespan_s
    step = m.layers * layer.total_s + emb_s + out_s
    out_flops = sum(a["flops"] for _, a in out.nodes(data=True))
    flops = m.layers * layer.flops + out_flops
    hardware = m.layers * layer.hardware_flops + out_flops
    achieved, peak = flops / step, topo.device.peak(dtype)
    times = ModelTimes(m.layers, layer.total_s, emb_s, out_s, step, flops, achieved / 1e12,
                       achieved / peak, m.params(), hardware, hardware / step / peak)
    acts = m.layers * _saved(g) + _saved(emb) + _saved(out)
    mem = training_memory(m, tp, dtype, acts, topo.device.memory_bytes)
    inputs = Inputs(m.name, topo.name, topo.device.name, tp, micro_batch, s, dtype,
                    sequence_parallel, att, p, m.heads // tp, m.kv_heads // tp,
                    math.ceil(tp / topo.devices_per_node), recompute)
    return Prediction(inputs, op_rows(g, tl), _collective_rows(g), layer, times, mem,
                      _warnings(topo, tp, mem, recompute), g)


def predict_block(model, topology, tp: int, block: str, micro_batch: int = 1,
                  seq_len: int | None = None, dtype: str = "bf16",
                  sequence_parallel: bool = False, attention: str = "fused") -> BlockPrediction:
    """One bare ``block`` ("mlp" or "attention") as the validate harness's real layers run it.

    mlp: (SP all-gather) -> column-parallel linear(s) -> gelu or swiglu -> row-parallel linear
    -> all-reduce (SP: reduce-scatter); attention: QKV column-parallel -> fused causal
    attention (``attention="unfused"``: QK^T, softmax, AV as separate kernels) -> output
    row-parallel -> all-reduce; backward with dgrad/wgrad GEMMs and the
    conjugate collective of the input gradient. No norm, residual, dropout or bias.
    """
    if block not in ("mlp", "attention"):
        raise ConfigError("--block", "", "mlp or attention", block)
    m, topo = _resolve(model, topology)
    s = m.seq_len if seq_len is None else seq_len
    _check(topo, tp, micro_batch, s, dtype, None, attention)
    g = layer_graph(m, tp, micro_batch, s, dtype, sequence_parallel, blocks=(block,), bare=True,
                    attention=attention)
    tl = run_graph(g, topo, tp, dtype)
    fwd, bwd = phase_split(g, tl)
    return BlockPrediction(block, fwd, bwd, tl.makespan_s, tl.busy_s("compute"),
                           tl.busy_s("comm"), tl.exposed_s("comm", "compute"), op_rows(g, tl), g)


__all__ = ["predict", "predict_layer", "predict_block", "Prediction", "BlockPrediction", "collectives_in",
           "layer_dims"]
