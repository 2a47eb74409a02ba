"""The step of many layouts at once: a lower bound of the simulated step time, and the exact
memory of the fullest stage, from the layer simulated once per layer configuration.

A layout's layer, embedding and output layer depend on a few of its dimensions only (tp,
micro-batch, sequence parallelism, recomputation, TP overlap, CP, the experts' folding:
:func:`tpsim.search.parts.layer_parts`): each is simulated once (predict's templates and
pricing) and shared by every pipeline and data-parallel layout that runs it.

The step time is bounded below as the simulation runs it (:mod:`tpsim.training.step`), from
the same terms (:mod:`tpsim.training.terms`: every duration below is one of its functions):

    T >= N + max_r (optimizer_r + all-gather_r)
         (--overlap-param-gather: no all-gather there; every L below starts with stage 0's
         first forward, which waits for the release R of its buckets' all-gathers
         (:func:`tpsim.training.terms.gather_release`), so L + R bounds each end)
    N  = max_r (max(L_r, ready_r, S_r) + grad-norm_r) + norm all-reduce
    S_r: the stage's compute slowed beside its reductions from each bucket on
         (:mod:`tpsim.search.dp_events`)
    ready_r: the stage's DP reductions on its in-order DP stream, each bucket (chunk) starting
             once its pre-scale kernel has run: t <- max(t, end of bucket j) + reduce_j, the
             bucket ends read back from L_{r,c} (the last backward's pieces run back to back);
             then the TP all-reduce of the norm gradients (SP) and, between the first and last
             stage, the tied-embedding all-reduce
    L_{r,c}: the lower bound of the end of stage r's last backward of chunk c
             (:func:`tpsim.training.step_bound.bound_ends`; a finalist's also the cool-down
             slowed beside the reductions: :mod:`tpsim.training.step_slowed`)

over the first stage, the latest-ending middle stage and the last (the middle stages are
alike). Every term is a duration the step graph contains, on a chain of its dependencies, so T
never exceeds the simulated step (a test), for the layouts that matter within a fraction of a
percent of it (:mod:`tpsim.training.step_bound`); many layouts at once: :mod:`tpsim.search.price`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..base.memo import Memo, memoised
from . import dp_events
from .run import Run
from ..training import terms
from ..training.grad_buckets import reduce_ranks, split_buckets
from ..sim.memory import stage_memory
from ..spec.parallel import Parallelism
from ..training.pipeline import split_layers
from ..sim.price import group_collective
from ..training.mtp import last_stage, plus_last, with_output_params
from ..training.optimizer_step import optimizer_step
from ..training.step_bound import end_stages
from ..training.shard_state import largest_unit, state_bytes
from ..training.sharded_dp import sharding
from ..training.weight_cache import stage_plain_params


_TIMES = Memo("search comm times", 65536)
_REDUCERS = Memo("search stage reductions", 4096)


def stage_layers(run: Run, pp: int, v: int, first, last) -> tuple[int, ...]:
    """Layers per virtual stage, the model's multi-token-prediction ones in the last, as
    predict splits them (:func:`tpsim.training.pipeline.layout_layers` without a layout)."""
    return plus_last(tuple(split_layers(run.model.layers, pp, v, first, last)),
                     run.model.mtp_layers)


@dataclass(frozen=True)
class Stages:
    """Per virtual stage g: layers, and the bucket composition of its last backward; per
    stage, parameters (the gradient units it updates)."""
    layers: tuple[int, ...]
    stage_params: tuple[int, ...]
    buckets: tuple            # per g: ((layers, embedding?, output?, params), ...) in order


_FLAGS = {"layer": (1, False, False), "moe": (1, False, False), "embedding": (0, True, False),
          "output": (0, False, True)}


@memoised(4096)
def _chunk_buckets(model, tp: int, n: int, first: bool, last: bool, size: int | None,
                   start: int = 0, experts=None, extra: int = 0) -> tuple:
    """One chunk's bucket cuts (:func:`tpsim.training.grad_buckets.split_buckets` over its
    :func:`~tpsim.training.terms.chunk_units` from layer ``start``, MoE layers folded as
    ``experts``, ``extra`` parameters joined to the output layer's), each as (layers,
    embedding?, output?, parameters, of them routed experts')."""
    units = with_output_params(terms.chunk_units(model, tp, n, first, last, start, experts),
                               extra)
    flags = [_FLAGS[name] for name, _, _ in units]
    ex = [terms.expert_unit_params(model, experts) * (name == "moe") for name, _, _ in units]
    return tuple((sum(flags[i][0] * k for i, k in pieces), any(flags[i][1] for i, _ in pieces),
                  any(flags[i][2] for i, _ in pieces), params, expert)
                 for pieces, params, expert in split_buckets(units, ex, size))


@memoised(4096)
def _stages(model, tp: int, pp: int, v: int, layers: tuple[int, ...], dp: int,
            experts=None) -> Stages:
    """The model split as the simulation splits it (:mod:`tpsim.training.terms`: stage
    parameters, chunk units and buckets; MoE layers folded as ``experts``). A dense model's
    chunk units do not depend on the layer a chunk starts at: its chunks of equal layers share
    one bucket memo entry (start 0)."""
    V, extra = pp * v, last_stage(model, tp, pp, layers, False).output_unit
    starts = [sum(layers[:g]) if model.moe else 0 for g in range(V)]
    buckets = tuple(_chunk_buckets(model, tp, n, g == 0, g == V - 1, terms.bucket_size(dp, g),
                                   starts[g], experts, extra * (g == V - 1))
                    for g, n in enumerate(layers))
    return Stages(layers, plus_last(terms.stage_params(model, tp, layers, pp, v, experts), extra),
                  buckets)


@dataclass(frozen=True)
class Tail:
    """The step end's durations that do not depend on the layer's times (module docstring),
    one row per stage of :func:`tpsim.training.step_bound.end_stages`. The DP stream's buckets as
    events: the column of the bounded end they follow (``cols``), the layers, embedding and
    output layer of the later pieces of that backward (``coef``), and ``const``: the
    reductions from this bucket on minus the later pre-scale kernels (dp = 1: one event, the
    stage's end, to which its last p2p transfer is added); ``dp``, ``work``, ``work_s`` and
    ``loss``: S_r's terms (:mod:`tpsim.search.dp_events`). ``scale``: per virtual stage, the
    pre-scale kernels after its last backward; ``memory``: weights, gradients and optimizer
    state of each stage, bytes; ``step_copy``: its optimizer step's fp32 gradient copy, held
    instead of activations (:mod:`tpsim.sim.memory`)."""
    cols: np.ndarray          # (stages, events)
    coef: np.ndarray          # (stages, events, 3)
    const: np.ndarray         # (stages, events)
    dp: np.ndarray            # (stages, events): the reductions from this bucket on
    work: np.ndarray          # (stages, events, 3): the compute the stage still runs then
    work_s: np.ndarray        # (stages, events): of it, pre-scale kernels (tpsim.search.dp_events)
    sync: np.ndarray
    grad_norm: np.ndarray
    finish: np.ndarray
    embedding_s: float
    norm_s: float
    scale: np.ndarray
    memory: np.ndarray
    last_p2p: bool            # dp = 1: a stage ends with its last p2p transfer
    # the overlapped all-gather: stage 0 chunk 0's buckets' ends G_k and the (layers,
    # embedding, output layer) forwards before bucket k (:func:`_first_gathers`)
    gather_ends: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gather_heads: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    step_copy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: float = 0.0         # the device's comm_compute_interference (tpsim.search.dp_events)
    stages: object = None             # the Stages (their buckets) that last_reduce reads,
    reduce_on: tuple | None = None    # and (dtype, do, par, experts) of their reductions


@memoised(4096)
def _tail(run: Run, tp: int, pp: int, dp: int, v: int, layers: tuple[int, ...], sp: bool,
          do: bool, opg: bool = False, zero: int = 0, ep: int = 1,
          expert_tp: int | None = None) -> Tail:
    base = _tail_base(run, tp, pp, dp, v, layers, do, opg, zero, ep, expert_tp)
    if not (sp and tp > 1):
        return base
    return replace(base, sync=_norm_sync(run, tp, pp, dp, v, layers))


@memoised(4096)
def _norm_sync(run: Run, tp: int, pp: int, dp: int, v: int,
               layers: tuple[int, ...]) -> np.ndarray:
    """Per end stage: the TP all-reduce of the norm (and bias) gradients that sequence
    parallelism leaves partial, before the stage's DP stream can finish."""
    par, price = Parallelism(tp=tp, pp=pp, dp=dp), pricer(run)
    params = plus_last(terms.sp_sync_params(run.model, layers, pp, v, True),
                       last_stage(run.model, tp, pp, layers, True).sp_norms)
    return np.array([terms.sp_sync_s(params[r], run.precision(), par, r, price) or 0.0
                     for r in end_stages(pp)])


@memoised(4096)
def _tail_base(run: Run, tp: int, pp: int, dp: int, v: int, layers: tuple[int, ...],
               do: bool, opg: bool = False, zero: int = 0, ep: int = 1,
               expert_tp: int | None = None) -> Tail:
    """:class:`Tail` without sequence parallelism's norm all-reduce (``sync`` zero); ZeRO-2/3
    (``zero``): the gradients reduced inside the chunks (:mod:`tpsim.search.sharded`), or with
    a pipeline after the backward, ZeRO-3's gathers at the step's start
    (:func:`tpsim.training.sharded_dp.shard_setup`), the state of
    :func:`tpsim.training.shard_state.state_bytes`; a mixture-of-experts model's MoE layers
    folded ``ep`` x ``expert_tp``."""
    model, dev = run.model, run.topo.device
    get, dtype = run.setting, run.precision()     # as the step's
    par, price = Parallelism(tp=tp, pp=pp, dp=dp), pricer(run)
    experts = run.folded(par, ep, expert_tp) if model.moe else None
    st = _stages(model, tp, pp, v, layers, dp, experts)
    sh = sharding(zero, dp, get("shard_group"), get("reshard_after_forward"),
                  get("fp8_all_gather"), 1, experts.edp if experts and experts.apart else 0, pp,
                  get("fsdp_fp32_params"), get("fsdp_flat_params"), get("fsdp2_copies"),
                  get("fsdp_sync_every_micro_batch"), get("expert_grad_reduce_in_bf16"))
    end, opt = last_stage(model, tp, pp, layers, False), optimizer_step(run.layout(), sh, dtype)
    plain = plus_last(stage_plain_params(model, tp, layers, pp, v), end.plain)
    do, opg = do or sh.stage >= 2, opg or (sh.pipelined and sh.stage == 3)
    shares = terms.stage_shares(model, tp, dp, layers, pp, v, st.stage_params, experts, do)
    # overlap_grad_reduce, which pipelined ZeRO-2/3 turns off
    ranks = reduce_ranks(par, experts if any(b[4] for bs in st.buckets for b in bs) else None)
    over = terms.overlapped_reduce(get("overlap_grad_reduce"), ranks) and sh.stage < 2
    scale = dp_events.prescales(st, dtype, dev, dp if over else 1)
    events, gn, finish, memory, copies = [], [], [], [], []
    reducer = _REDUCERS.get((run, dtype, do, par, experts), dp_events.reducer, dtype, do, par,
                            price, experts)
    for i, r in enumerate(end_stages(pp)):
        shards = shares[r] if shares else sh.state_shards(dp, do)[2]
        group = terms.dp_group(par, r)
        egroup = terms.expert_dp_group(experts, r) if experts else None
        events.append(dp_events.events(st, scale, reducer(r), pp, v, i, r) if over else
                      [(i * v, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0.0)])
        local = st.stage_params[r]
        gn.append(terms.grad_norm_s(local, shards, dev, opt.grad_read))
        t = terms.optimizer_s(local, shards, dtype, dev, opt, sh.per_unit)   # the stack's
        expert = sum(b[4] for bs in st.buckets[r::pp] for b in bs)
        gather = terms.dp_and_expert_s(
            lambda n, grp: terms.param_gather_s(n, dtype, do, grp, price), local, expert,
            group, egroup) if do and zero < 3 else 0.0
        finish.append(t if terms.overlapped_gather(opg, do, ranks) else t + gather)
        unit = _largest_unit(model, tp, pp, v, layers, r, experts) if sh.per_unit else 0
        state = state_bytes(local, dtype, sh, dp, do, unit, expert) if sh.stage >= 2 else None
        mem = stage_memory(local, dtype, 0.0, 0.0, shards, state=state, plain=plain[r])
        memory, copies = memory + [mem.state_bytes], copies + [mem.step_copy_bytes]
    emb = terms.tied_embedding_s(terms.tied_embedding_params(model, tp, pp) or end.copy, dtype,
                                 par, price)
    norm = terms.grad_norm_allreduce_s(par, do, price, experts)
    return Tail(*dp_events.event_arrays(events, v + dp_events.BUCKET_EVENTS - 1),
                np.zeros(len(events)), np.array(gn), np.array(finish), emb or 0.0, norm,
                np.array([sum(s) for s in scale]), np.array(memory), not over,
                *(_first_gathers(st, dtype, par, price, experts)
                  if terms.overlapped_gather(opg, do, ranks) else ()), step_copy=np.array(copies),
                loss=dev.comm_compute_interference, stages=st,
                reduce_on=(dtype, do, par, experts) if over else None)


def last_reduce(run: Run, tail: Tail) -> np.ndarray:
    """Per virtual stage, its last bucket's reduction (R of :mod:`tpsim.training.step_slowed`;
    0 where the reductions are not beside the backward)."""
    if tail.reduce_on is None:
        return np.zeros(len(tail.scale))
    dtype, do, par, experts = tail.reduce_on
    reducer = _REDUCERS.get((run, *tail.reduce_on), dp_events.reducer, dtype, do, par,
                            pricer(run), experts)
    return dp_events.last_reductions(tail.stages, reducer, par.pp, len(tail.scale) // par.pp)


def _largest_unit(model, tp: int, pp: int, v: int, layers: tuple[int, ...], r: int,
                  experts=None) -> int:
    """The most parameters one gradient unit of stage ``r`` holds (its chunks' units, the MoE
    layers folded as ``experts``)."""
    V, extra = pp * v, last_stage(model, tp, pp, layers, False).output_unit
    return max(largest_unit(with_output_params(terms.chunk_units(
        model, tp, layers[g], g == 0, g == V - 1, sum(layers[:g]), experts), extra * (g == V - 1)))
               for g in range(r, V, pp))


def _first_gathers(st: Stages, dtype: str, par: Parallelism, price, experts=None) -> tuple:
    """Stage 0 chunk 0's overlapped all-gathers in forward order (its gradient buckets
    reversed, as :func:`tpsim.training.step_gather.gathers` issues them from the step's start): each
    bucket's end G_k and the (layers, embedding, output layer) forwards before it."""
    group, end, head, ends, heads = terms.dp_group(par, 0), 0.0, np.zeros(3), [], []
    egroup = terms.expert_dp_group(experts, 0) if experts else None
    for n, e, o, params, expert in reversed(st.buckets[0]):
        end += terms.dp_and_expert_s(
            lambda k, grp: terms.param_gather_s(k, dtype, True, grp, price), params, expert,
            group, egroup)
        ends.append(end)
        heads.append(head.copy())
        head += (n, e, o)
    return np.array(ends), np.array(heads)


def _span_key(place) -> tuple:
    """What a collective's price reads of a placement: the group's size and its spans."""
    return (place.size,) + tuple((s.index, s.fanout, s.units, s.devices_per_unit, s.ports)
                                 for s in place.spans)


def group_timer(run: Run, op: str, group):
    """``seconds(nbytes)``: :func:`tpsim.sim.price.group_collective`'s time of ``op`` on
    ``group``, memoised per size and the group's placement: every group on the same levels
    (the DP groups of different stages, say) costs the same, whatever its name and first
    rank."""
    key = _span_key(run.topo.place(group))
    local: dict = {}

    def seconds(nbytes: float) -> float:
        t = local.get(nbytes)
        if t is None:
            t = local[nbytes] = _TIMES.get((run, op, nbytes, key), _collective_s, op, nbytes,
                                           group, run.topo)
        return t
    return seconds


def pricer(run: Run) -> terms.Price:
    """``price(op, nbytes, group)`` (:mod:`tpsim.training.terms`): one group_timer per op, group."""
    timers: dict = {}

    def price(op: str, nbytes: float, group) -> float:
        timer = timers.get((op, group))
        if timer is None:
            timer = timers[op, group] = group_timer(run, op, group)
        return timer(nbytes)
    return price


def _collective_s(op: str, nbytes: float, group, topo) -> float:
    return group_collective(op, nbytes, group, topo).time_s
