"""The step of many layouts at once: a lower bound of the simulated step time, and the exact
memory of the fullest stage, from the layer simulated once per layer configuration.

A layout's layer, embedding and output layer depend on (tp, micro-batch, sequence parallelism,
recomputation, TP overlap) only, so each such configuration is simulated once
(:func:`layer_parts`, the same templates and pricing as :func:`tpsim.predict.predict`) and
shared by every pipeline and data-parallel layout that runs it.

The step time is bounded below as the simulation runs it (:mod:`tpsim.step`):

    T >= N + max_r (optimizer_r + all-gather_r)
    N  = max_r (max(L_r, ready_r) + grad-norm_r) + norm all-reduce
    ready_r: the stage's DP reductions on its in-order DP stream, each bucket (chunk) starting
             once its pre-scale kernel has run: t <- max(t, end of bucket j) + reduce_j, the
             bucket ends read back from L_{r,c} (the last backward's pieces run back to back);
             then the TP all-reduce of the norm gradients (SP) and, between the first and last
             stage, the tied-embedding all-reduce
    L_{r,c}: the lower bound of the end of stage r's last backward of chunk c
             (:func:`tpsim.step_bound.bound_ends`)

over the first stage, the latest-ending middle stage and the last (the middle stages are
alike). Every term is a duration the step graph contains, on a chain of its dependencies, so T
never exceeds the simulated step (a test); for the layouts that matter it is within a fraction
of a percent of it (:mod:`tpsim.step_bound`). The arithmetic over many layouts at once is
:mod:`tpsim.search_price`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import data_parallel as dpm
from .collectives import send_recv_time
from .compute import elementwise_time
from .embedding import embedding_template, output_template
from .memory import stage_memory
from .parallel import Parallelism
from .pipeline import split_layers
from .predict import simulate_layer
from .price import group_collective
from .simulate import simulate
from .step import (FP32, Part, activation_bytes_per_element, dp_group, grad_norm_group,
                   pair_group)
from .step_bound import end_stages


@dataclass(frozen=True, eq=False)
class Run:
    """What every layout of one search shares: the model, topology and resolved settings."""
    model: object
    topo: object
    seq_len: int
    dtype: str
    dropout: float
    attention: str
    global_batch: int


@dataclass(frozen=True)
class Parts:
    """The simulated layer, embedding and output layer of one layer configuration."""
    layer: Part
    embedding: Part
    output: Part

    @property
    def saved(self) -> tuple[float, ...]:
        """Activations one micro-batch keeps: layer, embedding, output layer, bytes."""
        return (self.layer.saved_bytes, self.embedding.saved_bytes, self.output.saved_bytes)

    @property
    def times(self) -> tuple[float, ...]:
        """The bound's first variables (:data:`tpsim.step_bound.FIXED`)."""
        return (self.layer.forward_s, self.layer.backward_s, self.embedding.forward_s,
                self.embedding.backward_s, self.output.forward_s, self.output.backward_s)


@dataclass(frozen=True)
class Layout:
    """One way to run the job: the settings :func:`tpsim.predict.predict` takes."""
    tp: int
    pp: int
    dp: int
    virtual_stages: int
    micro_batch: int
    sequence_parallel: bool
    recompute: str
    distributed_optimizer: bool
    tp_comm_overlap: bool
    first_stage_layers: int | None = None
    last_stage_layers: int | None = None

    def predict_kwargs(self) -> dict:
        """The keyword arguments of :func:`tpsim.predict.predict` for this layout."""
        return {"tp": self.tp, "pp": self.pp, "dp": self.dp, "micro_batch": self.micro_batch,
                "virtual_stages": self.virtual_stages,
                "sequence_parallel": self.sequence_parallel, "recompute": self.recompute,
                "distributed_optimizer": self.distributed_optimizer,
                "tp_comm_overlap": self.tp_comm_overlap,
                "first_stage_layers": self.first_stage_layers,
                "last_stage_layers": self.last_stage_layers}


_PARTS: dict = {}


def _memo(key, make):
    hit = _PARTS.get(key)
    if hit is None or hit[0] is not key[0]:
        if len(_PARTS) > 8192:
            _PARTS.clear()
        hit = _PARTS[key] = (key[0], make())
    return hit[1]


def layer_parts(run: Run, tp: int, micro_batch: int, sp: bool, recompute: str,
                overlap: bool) -> Parts:
    """The layer, embedding and output layer as predict simulates them, memoised: the ends
    per (tp, micro-batch, SP), which is all they depend on; selective recomputation with
    fused attention is the layer without recomputation (:mod:`tpsim.recompute`)."""
    hit = _PARTS.get((run, "parts", tp, micro_batch, sp, recompute, overlap))
    if hit is not None and hit[0] is run:
        return hit[1]
    if recompute == "selective" and run.attention != "unfused":
        recompute = "none"

    def layer():
        return simulate_layer(run.model, run.topo, tp, micro_batch, run.seq_len, run.dtype,
                               sp, run.dropout, run.attention, recompute, overlap)

    sim, pricing = _memo((run, "layer", tp, micro_batch, sp, recompute, overlap), layer)

    def ends():
        emb = simulate(embedding_template(tp > 1, sp, run.dropout > 0), sim.dims, pricing)
        out = simulate(output_template(tp > 1, sp), sim.dims, pricing)
        return Part.of(emb), Part.of(out)

    emb, out = _memo((run, "ends", tp, micro_batch, sp), ends)
    return _memo((run, "parts", tp, micro_batch, sp, recompute, overlap),
                 lambda: Parts(Part.of(sim), emb, out))


def stage_layers(run: Run, pp: int, v: int, first, last) -> tuple[int, ...]:
    return tuple(split_layers(run.model.layers, pp, v, first, last))


@dataclass(frozen=True)
class Stages:
    """Per virtual stage g: layers, parameters (the chunk's gradient units) and, on the
    stages the bound covers, the bucket composition of the last backward."""
    layers: tuple[int, ...]
    stage_params: tuple[int, ...]
    chunk_params: tuple[int, ...]
    buckets: tuple            # per g: ((layers, embedding?, output?, params), ...) in order


@lru_cache(maxsize=4096)
def _stages(model, tp: int, pp: int, v: int, layers: tuple[int, ...], dp: int) -> Stages:
    """As :func:`tpsim.step.make_setup` and :func:`tpsim.step._buckets` split the model."""
    V = pp * v
    emb = model.embedding_params(tp)
    out = model.norm_params + (0 if model.tie_embeddings and pp == 1 else emb)
    per = model.layer_params(tp)
    per_stage = [sum(layers[c * pp + r] for c in range(v)) for r in range(pp)]
    stage = tuple(model.stage_params(tp, n, r == 0, r == pp - 1) for r, n in enumerate(per_stage))
    chunk, buckets = [], []
    for g, n in enumerate(layers):
        units = ([(0, False, True, out, 1)] if g == V - 1 else []) + \
            ([(1, False, False, per, n)] if n else []) + \
            ([(0, True, False, emb, 1)] if g == 0 else [])
        size = dpm.bucket_params(dp) if g == 0 else None
        groups = dpm.buckets([(u[3], u[4]) for u in units], size)
        buckets.append(tuple((sum(units[i][0] * k for i, k in pieces),
                              any(units[i][1] for i, _ in pieces),
                              any(units[i][2] for i, _ in pieces),
                              sum(units[i][3] * k for i, k in pieces)) for pieces in groups))
        chunk.append(sum(u[3] * u[4] for u in units))
    return Stages(layers, stage, tuple(chunk), tuple(buckets))


@dataclass(frozen=True)
class Tail:
    """The step end's durations that do not depend on the layer's times (module docstring),
    one row per stage of :func:`tpsim.step_bound.end_stages`. The DP stream's buckets as
    events: the column of the bounded end they follow (``cols``), the layers, embedding and
    output layer of the later pieces of that backward (``coef``), and ``const``: the
    reductions from this bucket on minus the later pre-scale kernels (dp = 1: one event, the
    stage's end, to which its last p2p transfer is added). ``scale``: per virtual stage, the
    pre-scale kernels after its last backward; ``memory``: weights, gradients and optimizer
    state of each stage, bytes."""
    cols: np.ndarray          # (stages, events)
    coef: np.ndarray          # (stages, events, 3)
    const: np.ndarray         # (stages, events)
    sync: np.ndarray
    grad_norm: np.ndarray
    finish: np.ndarray
    embedding_s: float
    norm_s: float
    scale: np.ndarray
    memory: np.ndarray
    last_p2p: bool            # dp = 1: a stage ends with its last p2p transfer


BUCKET_EVENTS = 8      # bucket events kept per chunk: the first, the last, evenly between


def _events(st: Stages, scale, reduce, pp: int, v: int, i: int, r: int) -> list:
    """Stage r's DP stream (chunks as their last backwards run: v - 1 first), each bucket's
    reduction starting once its pre-scale kernel has run (see :class:`Tail`). Of a chunk's
    many buckets (a whole stage's gradients without pipelining) a few are kept: any subset
    bounds the stream's end from below, and its ends (an early bucket heading a queue, the
    last one exposed) are the ones that bind."""
    order = [(c, j) for c in range(v - 1, -1, -1) for j in range(len(st.buckets[c * pp + r]))]
    out, after = [], 0.0
    for c, j in reversed(order):
        g = c * pp + r
        after += reduce(st.buckets[g][j][3])
        nb = len(st.buckets[g])
        if nb > BUCKET_EVENTS and j not in {round(q * (nb - 1) / (BUCKET_EVENTS - 1))
                                            for q in range(BUCKET_EVENTS)}:
            continue
        later = st.buckets[g][j + 1:]
        out.append((i * v + c, sum(b[0] for b in later), sum(b[1] for b in later),
                    sum(b[2] for b in later), after - sum(scale[g][j + 1:])))
    return out


def _event_arrays(events: list[list], width: int) -> tuple:
    """(cols, coef, const) of each stage's events, padded (const -inf) to ``width``."""
    cols, coef = np.zeros((len(events), width), dtype=int), np.zeros((len(events), width, 3))
    const = np.full((len(events), width), -np.inf)
    for i, ev in enumerate(events):
        for j, (col, a, e, o, k) in enumerate(ev):
            cols[i, j], coef[i, j], const[i, j] = col, (a, e, o), k
    return cols, coef, const


@lru_cache(maxsize=4096)
def _tail(run: Run, tp: int, pp: int, dp: int, v: int, layers: tuple[int, ...], sp: bool,
          do: bool) -> Tail:
    model, topo, dtype, dev = run.model, run.topo, run.dtype, run.topo.device
    par = Parallelism(tp=tp, pp=pp, dp=dp)
    st = _stages(model, tp, pp, v, layers, dp)
    over = dp > 1                      # the search keeps Megatron-core's overlap_grad_reduce
    scale = [[elementwise_time(dpm.scale_bytes(b[3], dtype), dev) if over else 0.0
              for b in bs] for bs in st.buckets]
    shards = dp if do else 1
    per_layer = 2 * model.norm_params + (2 * model.hidden if model.bias else 0)
    prec = dpm.precision(dtype)
    events, sync, gn, finish, memory = [], [], [], [], []
    for i, r in enumerate(end_stages(pp)):
        group = dp_group(par, r)

        @lru_cache(maxsize=None)
        def reduce(params):
            return dpm.dp_collective(dpm.reduce_op(do), dpm.grad_bytes(params, dtype), group,
                                     topo).time_s
        events.append(_events(st, scale, reduce, pp, v, i, r) if over else
                      [(i * v, 0, 0, 0, 0.0)])
        n = sum(layers[c * pp + r] for c in range(v))
        sync_params = n * per_layer + (model.norm_params if r == pp - 1 else 0)
        sync.append(group_collective("all-reduce", sync_params * prec.grads,
                                     par.group("tp", first=r * par.stride("pp")),
                                     topo).time_s if sp and tp > 1 else 0.0)
        local = st.stage_params[r]
        gn.append(elementwise_time(dpm.NORM_BYTES * local / shards, dev))
        by_kernel = dpm.optimizer_bytes(dtype, local / shards, local)
        t = elementwise_time(sum(x for k, x in by_kernel.items() if k != "grad-norm"), dev)
        if do and dp > 1:
            t += dpm.dp_collective("all-gather", local * prec.gathered, group, topo).time_s
        finish.append(t)
        memory.append(stage_memory(local, dtype, 0.0, 0.0, shards).total_bytes)
    tied = model.embedding_params(tp) if model.tie_embeddings and pp > 1 else 0
    emb = group_collective("all-reduce", tied * prec.grads, pair_group(par, 0, pp - 1),
                           topo).time_s if tied else 0.0
    norm_group = grad_norm_group(par, do)
    norm = group_collective("all-reduce", FP32, norm_group, topo).time_s if norm_group else 0.0
    return Tail(*_event_arrays(events, v + BUCKET_EVENTS - 1), np.array(sync), np.array(gn), np.array(finish), emb,
                norm, np.array([sum(s) for s in scale]), np.array(memory), not over)


_P2P: dict = {}


def _send_recv(run: Run, nbytes: float, place) -> float:
    """:func:`tpsim.collectives.send_recv_time`, memoised per size and the pair's placement
    (every pair of stages on the same levels costs the same)."""
    key = (run, nbytes, tuple((s.index, s.fanout, s.units, s.devices_per_unit, s.ports)
                                  for s in place.spans))
    hit = _P2P.get(key)
    if hit is None:
        if len(_P2P) > 65536:
            _P2P.clear()
        hit = _P2P[key] = send_recv_time(nbytes, place, run.topo).time_s
    return hit


@lru_cache(maxsize=65536)
def p2p_times(run: Run, tp: int, pp: int, dp: int, nbytes: float, v: int) -> np.ndarray:
    """The step-bound variables c (c[j]: one transfer of ``nbytes`` between stages j and
    j + 1; c[p - 1]: the last stage to the first) and cin (:func:`inner_transfer`)."""
    par, topo = Parallelism(tp=tp, pp=pp, dp=dp), run.topo
    pairs = [(j, j + 1) for j in range(pp - 1)] + [(pp - 1, 0)]
    c = np.array([_send_recv(run, nbytes, topo.place(pair_group(par, a, b)))
                  for a, b in pairs] if pp > 1 else [0.0])
    return np.concatenate([c, inner_transfer(c, pp, v)])


def p2p_bytes(run: Run, tp: int, micro_batch: int, sp: bool) -> float:
    """One stage boundary's activation, as :func:`tpsim.step.make_setup` sends it."""
    full = micro_batch * run.seq_len * run.model.hidden * activation_bytes_per_element(run.dtype)
    return float(full / tp if sp else full)


def inner_transfer(c: np.ndarray, p: int, v: int) -> np.ndarray:
    """cin[k]: the shorter transfer on the pairs stage k's p2p batches use."""
    if p == 1:
        return np.zeros(1)
    out = np.empty(p)
    for k in range(p):
        pairs = [j for j in (k - 1, k) if 0 <= j < p - 1]
        if v > 1 and k in (0, p - 1):
            pairs.append(p - 1)
        out[k] = min(c[j] for j in pairs)
    return out
