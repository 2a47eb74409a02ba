"""Pricing many layouts of one schedule shape at once: the step-time bound and the fullest
stage's memory as array arithmetic over the layouts (formulas in :mod:`tpsim.search_step`).

For layouts i of one shape, with E_i the bounds of the last backwards' ends
(:func:`tpsim.step_bound.bound_ends`) and b_i = (layer, embedding, output layer) backward:

    ready_ir = max_e (E_i[col_e] - coef_e . b_i + const_e) + last p2p + sync_r
    T_i      = max_r (max(E_i[r, chunk 0], ready_ir) + grad-norm_r) + norm + max_r finish_r
    memory_i = max_r (state_r + in-flight counts_r . saved_i)

(the tied-embedding all-reduce joins the first and last stage's ready times first).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .search_step import Layout, Run, layer_parts, p2p_bytes, p2p_times, stage_layers, _tail
from .step_bound import Program, bound_ends, chunk_counts, end_stages, shape_forms


@lru_cache(maxsize=65536)
def activation_counts(p: int, v: int, m: int, layers: tuple[int, ...]) -> np.ndarray:
    """(stages, 3): per stage of :func:`end_stages`, the layers, embeddings and output layers
    whose activations it holds at its fullest moment (:func:`tpsim.pipeline.in_flight`: its
    warm-up forwards and the first steady one)."""
    out = []
    for r in end_stages(p):
        prog = Program(p, v, m, r)
        live = chunk_counts(min(prog.w + 1, prog.total), p, v)
        g = np.arange(v) * p + r
        out.append((float(live @ np.asarray(layers)[g]), float(live[0] * (r == 0)),
                    float(live[-1] * (r == p - 1))))
    return np.array(out)


def _step_bounds(tails: list, idx: np.ndarray, ends: np.ndarray, back: np.ndarray,
                 last_p2p: np.ndarray) -> np.ndarray:
    """T_i of the module docstring for layouts whose tail is ``tails[idx[i]]``."""
    cols = np.stack([t.cols for t in tails])[idx]                # (n, stages, events)
    coef = np.stack([t.coef for t in tails])[idx]                # (n, stages, events, 3)
    const = np.stack([t.const for t in tails])[idx]
    n, stages = cols.shape[:2]
    at = np.take_along_axis(ends, cols.reshape(n, -1), axis=1).reshape(cols.shape)
    ready = (at - np.einsum("nsek,nk->nse", coef, back) + const).max(axis=2)
    ready += last_p2p + np.stack([t.sync for t in tails])[idx]
    emb = np.array([t.embedding_s for t in tails])[idx]
    joined = np.maximum(ready[:, 0], ready[:, -1]) + emb
    tied = emb > 0
    ready[tied, 0] = ready[tied, -1] = joined[tied]
    v = ends.shape[1] // stages
    free = ends[:, ::v]
    norm = (np.maximum(free, ready) + np.stack([t.grad_norm for t in tails])[idx]).max(axis=1)
    norm += np.array([t.norm_s for t in tails])[idx]
    return norm + np.stack([t.finish for t in tails])[idx].max(axis=1)


def price_shape(run: Run, layouts: list[Layout]) -> list[tuple[float, float]]:
    """(step-time lower bound, the fullest stage's bytes) of layouts that share one schedule
    shape (pp, virtual stages, micro-batches, layers per virtual stage)."""
    lay0 = layouts[0]
    p, v = lay0.pp, lay0.virtual_stages
    m = run.global_batch // (lay0.micro_batch * lay0.dp)
    layers = stage_layers(run, p, v, lay0.first_stage_layers, lay0.last_stage_layers)
    shape = shape_forms(p, v, m, layers)
    stages = np.array(end_stages(p))
    tails, tail_of, comms, comm_of, idx, cidx, parts = [], {}, [], {}, [], [], []
    for lay in layouts:
        tp, dp, sp, do = lay.tp, lay.dp, lay.sequence_parallel, lay.distributed_optimizer
        parts.append(layer_parts(run, tp, lay.micro_batch, sp, lay.recompute,
                                 lay.tp_comm_overlap))
        k = tail_of.get((tp, dp, sp, do))
        if k is None:
            k = tail_of[tp, dp, sp, do] = len(tails)
            tails.append(_tail(run, tp, p, dp, v, layers, sp, do))
        j = comm_of.get((tp, dp, lay.micro_batch, sp))
        if j is None:
            j = comm_of[tp, dp, lay.micro_batch, sp] = len(comms)
            comms.append(p2p_times(run, tp, p, dp, p2p_bytes(run, tp, lay.micro_batch, sp), v))
        idx.append(k)
        cidx.append(j)
    c = np.stack(comms)[cidx]
    x = np.concatenate([np.array([q.times for q in parts]),
                        np.stack([t.scale for t in tails])[idx], c], axis=1)
    saved = np.array([q.saved for q in parts])
    dp1 = np.array([t.last_p2p for t in tails])[idx]
    last = np.where(dp1[:, None] & (stages > 0), c[:, np.maximum(stages - 1, 0)], 0.0)
    idx = np.array(idx)
    ends = bound_ends(shape, x)
    bounds = _step_bounds(tails, idx, ends, x[:, 1:6:2], last)
    state = np.stack([t.memory for t in tails])[idx]
    memory = (state + saved @ activation_counts(p, v, m, layers).T).max(axis=1)
    return list(zip(bounds.tolist(), memory.tolist()))
