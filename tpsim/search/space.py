"""The layouts a search enumerates (:mod:`tpsim.search.driver`'s docstring lists them), and why
those that cannot run are dropped (:data:`REASONS`).

A mixture-of-experts model's layouts also enumerate its MoE layers' folding
(:mod:`tpsim.spec.folding`): every expert-parallel degree ep that divides the experts and a
stage's tp x cp x dp ranks, with the experts' TP 1 or tp (:func:`expert_layouts`); its layouts with
tp > 1 run sequence parallelism and no TP overlap (Megatron-core requires the first; the
expert slot has no overlapped collectives). A layout with cp > 1 also enumerates its
context-parallel exchange (:mod:`tpsim.search.cp_comms`). Every layout carries the settings the
search holds fixed (:mod:`tpsim.search.fixed`); those that refuse some of its layouts drop
them, counted by reason (HSDP's dp, the MoE overlap's ep and interleaving).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..base.errors import ConfigError
from ..layer.linears import RS_SPLITS
from ..spec.layout import MAX_MICRO_BATCHES, RECOMPUTE, Layout
from ..spec.model import ModelConfig
from ..training.moe_overlap import unmerged
from .splits import splits as layer_splits
from .cp_comms import cp_comms
from .pins import (PIN_REASONS, cp_reason, divisors, grid, knobs, micro_batches, pick,
                   virtual_stages)

REASONS = {
    "tp_model": "tp does not divide the model's heads / ffn_hidden / kv_heads",
    "tp_node": "tp spans nodes",
    "sp_seq": "sequence parallelism: seq_len not a multiple of tp",
    "batch_dp": "global batch not a multiple of dp",
    "shard_dp": "HSDP: dp not a multiple of --shard-group",
    "layers_split": "layers do not split over pp x virtual stages",
    "interleave_m": "interleaving: micro-batches per step not a multiple of pp",
    "micro_batches": f"more than {MAX_MICRO_BATCHES:,} micro-batches per step",
    "overlap_rows": "TP overlap: micro-batch x seq_len fewer rows than its GEMM chunks",
    "memory": "does not fit in device memory",
    "moe_sp": "mixture of experts: tp > 1 without sequence parallelism (Megatron-core needs it)",
    "moe_overlap": "mixture of experts: TP overlap (the expert slot's collectives are not "
                   "overlapped)",
    "moe_overlap_ep": "--overlap-moe-comm: ep 1 (Megatron-core overlaps expert parallelism's)",
    "moe_overlap_vp": "--overlap-moe-comm: pp > 1 without interleaving (Megatron-core needs it)",
    "ep_fold": "mixture of experts: no pinned ep x expert-tp folds into tp x cp x dp and the "
              "experts",
    **PIN_REASONS,
}


@dataclass(frozen=True)
class Space:
    """What the search enumerates (module docstring)."""
    gpus: int
    global_batch: int
    tp_across_nodes: bool = False
    zero_with_pp: bool = False  # also ZeRO-2/3 with a pipeline (tpsim.search.pins.zero_stages)
    uneven: bool = True
    recompute: tuple[str, ...] = RECOMPUTE
    memory_headroom: float = 0.0
    pins: tuple = ()            # (field, values) of the dimensions pinned (tpsim.search.pins)
    fixed: tuple = ()           # (field, value) of the settings held fixed (tpsim.search.fixed)


def enumerate_layouts(model: ModelConfig, topo, space: Space, seq_len: int):
    """Every layout of ``space`` that can run, and (reason -> count) for those dropped."""
    layouts, dropped = [], Counter()
    node, fixed = topo.devices_per_node, dict(space.fixed)
    for tp, cp, pp, dp in grid(space.pins, space.gpus, seq_len):
        vs, no_vs = virtual_stages(space.pins, model.layers, pp)
        mbs, no_mb = micro_batches(space.pins, space.global_batch // dp) \
            if space.global_batch % dp == 0 else ([], 0)
        knob, no_knob = knobs(tp, dp * cp, space.recompute, space.pins, pp,
                                 space.zero_with_pp)
        knob, moe_dropped = expert_knobs(model, tp, dp * cp, knob, space.pins,
                                         fixed.get("moe_dispatcher") == "flex")
        size = len(vs) * max(len(mbs), 1) * max(len(knob), 1)
        reason = _tp_reason(model, tp, node, space) or \
            cp_reason(model, tp, cp, seq_len, fixed.get("attention")) or \
            ("batch_dp" if space.global_batch % dp else None) or \
            ("shard_dp" if dp % (fixed.get("shard_group") or 1) else None) or no_knob
        comms = [] if reason else cp_comms(model, tp, cp, node, space.pins)
        if reason or not comms:
            dropped[reason or "pinned_cp_comm"] += size
            continue
        knob = [k + (c,) for k in knob for c in comms]
        per = len(vs) * max(len(mbs), 1)
        for why, n in moe_dropped.items():
            dropped[why] += n * per
        for why, n in (("pinned_vs_pp", no_vs * max(len(mbs), 1)),
                       ("pinned_mb", len(vs) * no_mb)):
            if n:
                dropped[why] += n * len(knob)
        for v in vs:
            for mb in mbs:
                layouts += _layouts(model, space, seq_len, dropped, knob, (tp, cp, pp, dp, v, mb))
    return layouts, dropped


def _layouts(model: ModelConfig, space: Space, seq_len: int, dropped: Counter, knob: list,
             dims: tuple) -> list:
    """The layouts of one (tp, cp, pp, dp, virtual stages, micro-batch) and every ``knob``,
    those that cannot run counted in ``dropped``."""
    tp, cp, pp, dp, v, mb = dims
    m = space.global_batch // (dp * mb)
    splits = list(layer_splits(model, pp, v, space.uneven))
    if not splits:
        dropped["layers_split"] += len(knob)
    elif v > 1 and m % pp:
        dropped["interleave_m"] += len(knob)
    elif m > MAX_MICRO_BATCHES:
        dropped["micro_batches"] += len(knob)
    else:
        out, fixed = [], dict(space.fixed)
        merged = fixed.get("overlap_moe_comm", False)
        for sp, ov, rc, (do, zero), ep, etp, comm in knob:
            why = merged and unmerged(ep, pp, v)
            if why:
                dropped[why] += len(splits)
                continue
            if sp and seq_len // cp % tp:
                dropped["sp_seq"] += len(splits)
                continue
            if ov and mb * seq_len // cp < RS_SPLITS:
                dropped["overlap_rows"] += len(splits)
                continue
            out += [Layout.unchecked(
                **fixed, tp=tp, cp=cp, pp=pp, dp=dp, virtual_stages=v, micro_batch=mb,
                sequence_parallel=sp, recompute=rc, distributed_optimizer=do, zero=zero,
                tp_comm_overlap=ov, first_stage_layers=f, last_stage_layers=l,
                memory_headroom=space.memory_headroom, ep=ep, expert_tp=etp, cp_comm=comm)
                for f, l in splits]
        return out
    return []


def _tp_reason(model: ModelConfig, tp: int, node: int, space: Space) -> str | None:
    try:
        model.check_tp(tp, training=True)
    except ConfigError:
        return "tp_model"
    if tp > node and not space.tp_across_nodes:
        return "tp_node"
    return None


def expert_layouts(model: ModelConfig, tp: int, dp: int, pins: tuple,
                   flex: bool = False) -> list[tuple]:
    """(ep, expert_tp) of a stage's tp x dp ranks folded for the MoE layers
    (:mod:`tpsim.spec.folding`): ep a divisor of the experts, the experts' TP 1 or tp, ep x
    expert-tp dividing tp x ``dp`` (a stage's dp x cp) and the experts' width (pinned: only those values);
    expert_tp None where it is tp (the default). A dense model: (1, None) only. ``flex``
    (--moe-dispatcher flex): ep > 1 with expert TP 1, or ep 1 with expert TP tp
    (:func:`tpsim.layer.moe_flex.slot_of`)."""
    if not model.moe:
        return [(1, None)]
    ranks, width = tp * dp, model.expert_ffn_hidden
    eps = [e for e in pick(pins, "ep", divisors(model.experts))
           if ranks % e == 0 and model.experts % e == 0]
    etps = pick(pins, "expert_tp", sorted({1, tp}))
    return [(e, None if t == tp else t) for e in eps for t in etps
            if ranks % (e * t) == 0 and width % t == 0
            and not (flex and (t > 1 if e > 1 else t != tp))]


def expert_knobs(model: ModelConfig, tp: int, dp: int, knob: list, pins: tuple,
                 flex: bool = False):
    """``knob``'s (sp, overlap, recompute, (distributed optimizer, zero)) each with every
    :func:`expert_layouts` pair, those an MoE model cannot run dropped, and (reason -> count
    per micro-batch and virtual stage) for them."""
    experts = expert_layouts(model, tp, dp, pins, flex)
    dropped = Counter()
    if not experts:
        dropped["ep_fold"] += len(knob)
        return [], dropped
    out = []
    for sp, ov, rc, do in knob:
        why = (model.moe and tp > 1 and not sp and "moe_sp") or (model.moe and ov and
                                                                   "moe_overlap")
        if why:
            dropped[why] += len(experts)
        else:
            out += [(sp, ov, rc, do, ep, etp) for ep, etp in experts]
    return out, dropped
