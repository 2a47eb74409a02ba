"""Pricing many layouts of a few pipelines at once: the step-time bound and the fullest
stage's memory as array arithmetic over the layouts (formulas in :mod:`tpsim.search.step`).

For layouts i of one shape, with E_i the bounds of the last backwards' ends
(:func:`tpsim.training.step_bound.bound_ends`; for the finalists, ``slowed``, also the
interleaved cool-down with the compute slowed beside each chunk's last reduction,
:func:`tpsim.search.step.last_reduce`, :func:`tpsim.training.step_slowed.slowed_ends`) and
b_i = (layer, embedding, output layer) backward:

    ready_ir = max_e (E_i[col_e] - coef_e . b_i + const_e) + last p2p + sync_r
    free_ir  = max(E_i[r, chunk 0], max_e (E_i[col_e] + I min(D_e, w_e / (1 - I))))
    T_i      = max_r (max(free_ir, ready_ir) + grad-norm_r) + norm + max_r finish_r

(free_ir: the stage's compute slowed beside its reductions, D_e from bucket e on, w_e the
compute after it: :mod:`tpsim.search.dp_events`)

(with the overlapped weight all-gather, every E_i is a path from stage 0's first forward, which
starts at R_i = max_k (G_k - head_k . f_i), :func:`tpsim.training.terms.gather_release` over
its buckets: E_i + R_i; the all-gather is then out of finish_r)
    memory_i = max_r (state_r + c_ir) + TP buffers_i,  c_ir = max(in-flight counts_r . saved_i, step's copy_r)
    need_i   = max_r (state_r + c_ir + waste(c_ir)) + TP buffers_i

(waste: the allocator's on the churned bytes, :meth:`tpsim.cluster.topology.Device.allocator_waste_bytes`;
need_i is checked against Device.usable_bytes(headroom))

(TP buffers: :func:`tpsim.sim.memory.userbuffers_bytes` with --tp-comm-overlap, else 0)

(the tied-embedding all-reduce joins the first and last stage's ready times first).
"""
from __future__ import annotations

from functools import lru_cache
from operator import attrgetter

import numpy as np

from ..sim.memory import userbuffers_bytes
from ..spec.layout import Layout
from .p2p import p2p_bytes, p2p_times
from .dp_events import stage_end
from .sharded import sharded_parts
from .parts import bound_layers, layer_parts, masked
from .run import Run
from .step import last_reduce, pricer, stage_layers, _tail
from ..training import terms
from ..training.step_bound import bound_ends, chain_forms, end_stages, shape_forms
from ..training.step_slowed import slowed_ends


@lru_cache(maxsize=65536)
def activation_counts(p: int, v: int, m: int, layers: tuple[int, ...]) -> np.ndarray:
    """(stages, 3): per stage of :func:`end_stages`, the layers, embeddings and output layers
    whose activations it holds at its fullest moment
    (:func:`tpsim.training.terms.in_flight_chunks`)."""
    out = []
    for r in end_stages(p):
        live = np.array(terms.in_flight_chunks(p, v, m, r))
        g = np.arange(v) * p + r
        out.append((float(live @ np.asarray(layers)[g]), float(live[0] * (r == 0)),
                    float(live[-1] * (r == p - 1))))
    return np.array(out)


def _step_bounds(tails: list, idx: np.ndarray, ends: np.ndarray, back: np.ndarray,
                 last_p2p: np.ndarray) -> np.ndarray:
    """T_i of the module docstring for layouts whose tail is ``tails[idx[i]]``."""
    cols = np.stack([t.cols for t in tails])[idx]                # (n, stages, events)
    coef = np.stack([t.coef for t in tails])[idx]                # (n, stages, events, 3)
    const, dp, work, work_s = (np.stack([getattr(t, k) for t in tails])[idx]
                               for k in ("const", "dp", "work", "work_s"))
    n, stages = cols.shape[:2]
    at = np.take_along_axis(ends, cols.reshape(n, -1), axis=1).reshape(cols.shape)
    later = np.einsum("nsek,nk->nse", coef, back)
    ready = (at - later + const).max(axis=2)
    ready += last_p2p + np.stack([t.sync for t in tails])[idx]
    emb = np.array([t.embedding_s for t in tails])[idx]
    joined = np.maximum(ready[:, 0], ready[:, -1]) + emb
    tied = emb > 0
    ready[tied, 0] = ready[tied, -1] = joined[tied]
    v = ends.shape[1] // stages
    work = np.einsum("nsek,nk->nse", work, back) + work_s
    free = np.maximum(ends[:, ::v], stage_end(at, work, const, dp, np.array(
        [t.loss for t in tails])[idx]).max(axis=2))
    norm = (np.maximum(free, ready) + np.stack([t.grad_norm for t in tails])[idx]).max(axis=1)
    norm += np.array([t.norm_s for t in tails])[idx]
    return norm + np.stack([t.finish for t in tails])[idx].max(axis=1)


def _releases(tails: list, idx: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """R_i of the module docstring (0 without the overlapped all-gather); ``forwards``: the
    layer's, embedding's and output layer's forward seconds per layout."""
    out = np.zeros(len(idx))
    for j, t in enumerate(tails):
        if len(t.gather_ends):
            rows = idx == j
            out[rows] = (t.gather_ends[None, :] - forwards[rows] @ t.gather_heads.T).max(axis=1)
    return out


def _index(keys: list) -> tuple[list, np.ndarray]:
    """The distinct ``keys`` in order of first appearance, and each key's position in them."""
    first = dict.fromkeys(keys)
    for i, k in enumerate(first):
        first[k] = i
    return list(first), np.fromiter(map(first.__getitem__, keys), int, len(keys))


_FIELDS = attrgetter("tp", "dp", "micro_batch", "sequence_parallel", "recompute",
                     "tp_comm_overlap", "distributed_optimizer", "overlap_param_gather", "zero",
                     "cp", "ep", "expert_tp", "cp_comm")


class _Pipeline:
    """The layouts of one pipeline (pp, virtual stages, layers per virtual stage), reduced to
    what they price from: their distinct layer configurations, step ends (:class:`Tail`),
    p2p transfers and numbers of micro-batches, with each layout's index into each."""

    def __init__(self, run: Run, layouts: list[Layout]):
        lay0 = layouts[0]
        self.p, self.v, self.n = lay0.pp, lay0.virtual_stages, len(layouts)
        self.layers = stage_layers(run, self.p, self.v, lay0.first_stage_layers,
                                   lay0.last_stage_layers)
        fields = list(map(_FIELDS, layouts))
        world = lay0.tp * lay0.cp * lay0.pp * lay0.dp
        # the layers depend on the micro-batches per step and the pipeline only without the
        # gradient accumulation fusion or with the MoE overlap (tpsim.search.parts.layer_parts)
        merged = run.setting("overlap_moe_comm")
        per_m = merged or not run.setting("gradient_accumulation_fusion")
        chunks = (self.p, self.v) if merged else (1, 1)
        self.parts, self.pidx = _index([(tp, mb, sp, rc, ov, cp, ep, etp, world, comm, terms.
                                         micro_batches(run.global_batch, mb, dp) if per_m else 1,
                                         chunks) + ((dp * cp, z) if z > 1 else (1, 0))
                                        for tp, dp, mb, sp, rc, ov, _, _, z, cp, ep, etp, comm
                                        in fields])
        # the step's end and p2p see the gradients' group of dp x cp ranks, tp apart, as a
        # data-parallel group of that size: the same groups (tpsim.training.terms.dp_group)
        self.tails, self.tidx = _index([(tp, dp * cp, sp, do, opg, z, ep, etp)
                                        for tp, dp, _, sp, _, _, do, opg, z, cp, ep, etp, _
                                        in fields])
        self.comms, self.cidx = _index([(tp, dp * cp, mb, sp, cp)
                                        for tp, dp, mb, sp, _, _, _, _, _, cp, *_ in fields])
        self.ms, self.midx = _index([terms.micro_batches(run.global_batch, mb, dp)
                                     for _, dp, mb, *_ in fields])
        self.buffers = np.array([userbuffers_bytes(mb * run.seq_len // cp, run.model.hidden,
                                                   run.dtype, ov)
                                 for _, mb, _, _, ov, cp, *_ in self.parts])


def price_pipelines(run: Run, groups: list[list[Layout]],
                    slowed: bool = False) -> list[list[tuple[float, float, float]]]:
    """(step-time lower bound, the fullest stage's bytes, the bytes it needs with the allocator's
    waste) of each layout of each group of layouts that share a pipeline (pp, virtual stages,
    layers per virtual stage); ``slowed``: the tighter bound with the compute slowed beside the
    reductions (:mod:`tpsim.training.step_slowed`, a step per virtual stage: the search asks it
    of the layouts it is about to simulate, :func:`tpsim.search.driver.reprice`).

    In phases over all groups (each kind of work together runs markedly faster in CPython
    than the same work interleaved): the layer configurations (:func:`layer_parts`), the
    schedule's rows per number of micro-batches (:func:`tpsim.training.step_bound.shape_forms`), the
    step ends and p2p transfers, then one array pass per group."""
    pipes = [_Pipeline(run, g) for g in groups]
    price = pricer(run)
    parts = [[masked(sharded_parts(layer_parts(run, *key[:12]), run, price, key[0], q.p,
                                   *key[12:], q.layers, *key[6:8]), run, key[0], key[1], key[5],
                     q.p, key[8]) for key in q.parts] for q in pipes]
    shapes = []
    for q, ps in zip(pipes, parts):
        timed = bound_layers(run.model, q.layers, min(p.dense_ratio for p in ps))
        shapes.append([(shape_forms(q.p, q.v, m, timed), activation_counts(q.p, q.v, m, q.layers),
                        chain_forms(q.p, q.v, m, timed) if slowed and q.v > 1 else None)
                       for m in q.ms])
    tails = [[_tail(run, tp, q.p, dp, q.v, q.layers, sp, do, opg, z, ep, etp)
              for tp, dp, sp, do, opg, z, ep, etp in q.tails] for q in pipes]
    comms = [np.stack([p2p_times(run, tp, q.p, dp, p2p_bytes(run, tp, mb, sp, cp), q.v)
                       for tp, dp, mb, sp, cp in q.comms]) for q in pipes]
    reduces = [[last_reduce(run, t) for t in ts] if slowed else None for ts in tails]
    waste = run.topo.device.allocator_waste_bytes
    return [_price(*args, waste) for args in zip(pipes, parts, shapes, tails, comms, reduces)]


def _price(q: _Pipeline, parts: list, shapes: list, tails: list, comms: np.ndarray,
           reduces: list | None, waste) -> list[tuple[float, float, float]]:
    """The module docstring's T_i, memory_i and need_i of one pipeline's layouts."""
    stages, idx = np.array(end_stages(q.p)), q.tidx
    c = comms[q.cidx]
    x = np.concatenate([np.array([t.times for t in parts])[q.pidx],
                        np.stack([t.scale for t in tails])[idx], c], axis=1)
    dp1 = np.array([t.last_p2p for t in tails])[idx]
    last = np.where(dp1[:, None] & (stages > 0), c[:, np.maximum(stages - 1, 0)], 0.0)
    ends = np.empty((q.n, len(stages) * q.v))
    counts = np.empty((q.n, len(stages), 3))
    reduce = np.stack(reduces)[idx] if reduces else None       # R of the finalists' bound
    for i, (shape, live, chains) in enumerate(shapes):
        rows = q.midx == i
        ends[rows] = slowed_ends(shape, chains, x[rows], reduce[rows], tails[0].loss) \
            if chains else bound_ends(shape, x[rows])
        counts[rows] = live
    ends += _releases(tails, idx, x[:, 0:6:2])[:, None]
    bounds = _step_bounds(tails, idx, ends, x[:, 1:6:2], last)
    state = np.stack([t.memory for t in tails])[idx]
    saved = np.array([t.saved for t in parts])[q.pidx]
    copy = np.stack([t.step_copy for t in tails])[idx]
    churned = np.maximum(np.einsum("nk,nsk->ns", saved, counts), copy)
    memory = (state + churned).max(axis=1) + q.buffers[q.pidx]
    need = (state + churned + waste(churned)).max(axis=1) + q.buffers[q.pidx]
    return list(zip(bounds.tolist(), memory.tolist(), need.tolist()))
