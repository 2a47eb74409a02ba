"""One optimizer step of a 3D-parallel job (TP x PP x DP), simulated op by op, per stage.

A step runs ``m = global_batch / (micro_batch x dp)`` micro-batches through the pipeline
(:mod:`tpsim.training.pipeline`: 1F1B or interleaved 1F1B), then finishes the gradients and steps the
optimizer, as Megatron-core's ``finalize_model_grads`` and optimizer do:

1. Chunks: a stage's forward (backward) of one micro-batch is its layers' forward (backward)
   from the simulated layer (:func:`tpsim.sim.simulate.phase_times`, TP collectives and host
   dispatch included), plus the embedding on the first virtual stage and the output layer with
   the cross-entropy on the last. Stages hold ``split_layers`` layers each.
2. P2P: each stage boundary moves one (s, b, h) activation forward and its gradient backward
   (s / tp with sequence parallelism), priced by :func:`tpsim.cost.collectives.send_recv_time` on the
   two ranks' placement (a 2-rank group with the pipeline stride: across nodes it is the
   network's NIC).
3. DP: the gradients of the last micro-batch's backward are pre-scaled and reduced in buckets on
   the DP group (:mod:`tpsim.training.data_parallel`; each bucket's reduction is priced once,
   for the timing and the op graph alike, in :mod:`tpsim.training.step_reduce`); with
   ``overlap_grad_reduce`` each bucket starts as its gradients become final, beside the rest of
   the backward; without it, after the stage's whole backward. The DP group is strided (every TP
   rank of a node reduces at once: they share its NICs,
   :meth:`tpsim.cluster.topology.Topology.place`). A compute op beside one of its stage's DP
   collectives (a reduction, the overlapped weight all-gather) runs at 1 - I of its speed while
   it runs (the device's ``comm_compute_interference``, as the layer's collectives slow the
   compute beside them: :mod:`tpsim.training.step_timing`); a p2p transfer has no compute beside
   it (the op after a batch waits for its transfers).
4. Step end: with sequence parallelism, the TP all-reduce of the norm (and row-parallel bias)
   gradients; with tied embeddings and pp > 1, the all-reduce of the embedding gradient between
   the first and last stage; the gradient norm (a kernel, then one all-reduce across the
   model-parallel ranks, which waits for every stage); the optimizer kernels; with the
   distributed optimizer, the all-gather of the updated weights (``overlap_param_gather``:
   instead at the step's start, bucket by bucket beside the first forwards, :func:`tpsim.training.step_gather.gathers`).

All of it runs on in-order streams: :func:`time_step` times it in one pass
(:mod:`tpsim.training.step_timing`), :func:`build_step` builds it op by op with names
(:class:`tpsim.training.step_graph.StepGraph`, for the trace and the plots), the same times; the
bubble is the idle time the run leaves on each stage's compute stream
(:mod:`tpsim.training.step_accounting`).
Each op's duration and size is a function of :mod:`tpsim.training.terms`, which the search's
bound reads too.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

from ..base.record import record
from . import terms
from ..spec.parallel import Parallelism
from .expert_comm import group_exposed_s
from .grad_buckets import prescale_s, reduce_ranks, split_buckets
from .optimizer_step import MEGATRON, OptimizerStep
from .step_gather import gathering, gathers
from .pipeline import add_pipeline
from .torch_pipeline import runtime_schedule
from ..sim.price import group_collective
from ..sim.memory import userbuffers_bytes
from ..sim.host_lag import forward_lag_s
from ..sim.simulate import layer_times, saved_bytes
from .step_reduce import bucket_reductions, dp_reduce
from .mtp import last_stage, plus_last, with_output_params
from .data_mask import mask_copy_s, with_mask
from .step_timing import TimedGraph, time_pipeline
from .step_programs import shape as step_shape
from .sharded_dp import UNSHARDED, Sharding, expert_gather_group, weight_gather_group
from .shard_groups import stage_experts
from .weight_cache import stage_plain_params
from ..cluster.topology import Topology

if TYPE_CHECKING:                      # imported when built: the predict path needs no graph
    from .step_graph import StepGraph


@record
class Part:
    """One layer, the embedding or the output layer, for one micro-batch on one GPU, from its
    simulation: forward_s + backward_s = compute_s + tp_exposed_s + host_wait_s +
    offload_exposed_s (the activation copies to and from the host the compute waits for,
    :mod:`tpsim.training.offload`); ep_exposed_s: the part of tp_exposed_s the expert-parallel
    all-to-alls leave exposed (:func:`tpsim.training.expert_comm.group_exposed_s`)."""
    forward_s: float
    backward_s: float
    compute_s: float
    tp_exposed_s: float
    host_wait_s: float
    flops: float
    hardware_flops: float
    saved_bytes: float
    dp_exposed_s: float = 0.0      # ZeRO-2/3's unit collectives the compute waits for
    ep_exposed_s: float = 0.0
    offload_exposed_s: float = 0.0
    lag_s: float = 0.0     # when its host reaches the next layer (tpsim.sim.host_lag); not summed

    @classmethod
    def of(cls, sim, times=None) -> Part:
        """From a simulation (``times``: its :func:`~tpsim.sim.simulate.layer_times`, if known)."""
        t = layer_times(sim) if times is None else times
        return cls(t.forward_s, t.backward_s, t.compute_s, t.exposed_comm_s, t.host_wait_s,
                   t.flops, t.hardware_flops, saved_bytes(sim),
                   ep_exposed_s=group_exposed_s(sim), lag_s=forward_lag_s(sim))

    @classmethod
    def total(cls, parts) -> Part:
        """The sum of ``(part, count)`` pairs, field by field (no lag)."""
        return cls(*(sum(getattr(p, f.name) * n for p, n in parts)
                     for f in dataclasses.fields(cls) if f.name != "lag_s"))


@record
class Chunk:
    """One virtual stage for one micro-batch: ``layers`` layers and the model's ends it holds,
    summed (``part``), and its backward as the units whose gradients become final in order
    (output layer, layers last to first, embedding), as runs of equal units:
    (seconds, parameters, units) each."""
    layers: int
    part: Part
    units: tuple[tuple[float, int, int], ...]
    forwards: tuple[float, ...] = ()        # per run of ``units``: one unit's forward seconds
    received: tuple[float, float] = (0.0, 0.0)  # (forward, backward) seconds ahead of its units
    experts: tuple[int, ...] = ()           # per run: routed-expert parameters per unit
    lags: tuple[float, ...] = ()            # per run: one unit's Part.lag_s

    @classmethod
    def of(cls, layers: int, units: list, layer: Part, first: Part | None = None,
           last: Part | None = None, moe: Part | None = None, expert: int = 0,
           partial=None) -> Chunk:
        """``layers`` layers, with the embedding (``first``) and/or output layer (``last``);
        ``units``: its :func:`tpsim.training.terms.chunk_units`, whose ``"moe"`` runs are MoE
        layers (``moe``: one simulated MoE layer; ``expert`` of each one's parameters its
        routed experts', :func:`tpsim.training.terms.expert_unit_params`), the rest dense
        ones (``layer``); ``partial``: full recomputation of some layers
        (:class:`tpsim.training.partial_recompute.Partial`: ``.rc`` runs its layers)."""
        ends = [(p, 1) for p in (first, last) if p is not None]
        part = {"layer": layer, "embedding": first, "output": last, "moe": moe}
        if partial is not None:
            units = partial.units(units)
            part.update({"layer.rc": partial.layer, "moe.rc": partial.moe})
        count = {k: sum(n for name, _, n in units if name == k) for k in part}
        sparse, rc = count["moe"], [(part[k], count[k]) for k in ("layer.rc", "moe.rc")
                                    if count.get(k)]
        kinds = [(layer, layers - sparse - sum(n for _, n in rc))] + \
            ([(moe, sparse)] if sparse else []) + rc
        total = Part.total([*kinds, *ends])
        if partial is not None and partial.method == "uniform":
            total = dataclasses.replace(total, saved_bytes=total.saved_bytes
                                        - partial.saved_bytes(layers, layer.saved_bytes))
        return cls(layers, total,
                   tuple((part[name].backward_s, params, n) for name, params, n in units),
                   tuple(part[name].forward_s for name, _, _ in units), (0.0, 0.0),
                   tuple(expert if name.startswith("moe") else 0 for name, _, _ in units),
                   tuple(part[name].lag_s for name, _, _ in units))


@record
class StepSetup:
    """Everything the step graph needs, resolved: the job's ``parallelism``, ``m`` micro-batches,
    ``v`` virtual stages, ``chunks[g]`` per virtual stage (g = chunk * pp + stage), ``p2p_bytes``
    of one transfer, ``stage_params`` and ``sync_params`` (gradients the SP all-reduce carries)
    per stage, ``embedding_params`` (the tied embedding all-reduce, 0: none), ``precision``
    (the bytes per parameter: :func:`tpsim.spec.precision.precision_key`)."""
    parallelism: Parallelism
    m: int
    v: int
    chunks: tuple[Chunk, ...]
    p2p_bytes: float
    stage_params: tuple[int, ...]
    sync_params: tuple[int, ...]
    embedding_params: int
    precision: str
    distributed_optimizer: bool
    overlap_grad_reduce: bool
    overlap_param_gather: bool = False
    shards: tuple[float, ...] = ()     # per stage: optimizer shards (default: the sharding's)
    experts: object = None             # the MoE layers' Folded groups (None: as the dense ones)
    sharding: Sharding = UNSHARDED     # ZeRO-2/3 (tpsim.training.sharded_dp)
    offloaded_bytes: float = 0.0       # activations in host memory (tpsim.training.offload)
    plain_params: tuple[int, ...] = ()  # per stage: no quantized copy (weight_cache)
    tp_buffers_bytes: float = 0.0      # TP-overlap buffers (tpsim.sim.memory.userbuffers_bytes)
    optimizer: OptimizerStep = MEGATRON  # the stack's optimizer step (optimizer_step)
    pp_runtime: str = "megatron"       # the pipeline's schedule runtime (torch_pipeline)

    def optimizer_shards(self, stage: int) -> float:
        """Ways stage ``stage``'s optimizer state is split (:func:`terms.stage_shares`; else
        the sharding's over the gradients' dp x cp ranks)."""
        return self.shards[stage] if self.shards else self.sharding.state_shards(
            terms.grad_ranks(self.parallelism), self.distributed_optimizer)[2]


def _buckets(setup: StepSetup, stage: int, chunk: int) -> list[tuple[float, int, int]]:
    """(backward seconds, parameters, of them routed experts') of each cut of the last
    micro-batch's backward of one chunk where a dense or an expert gradient bucket closes
    (:func:`tpsim.training.grad_buckets.split_buckets`: Megatron-core's separate buffers); the
    first cut starts with what the chunk runs ahead of its units (``Chunk.received``: the
    all-gather of the gradient it receives), so the cuts add up to the chunk's backward_s."""
    g = chunk * setup.parallelism.pp + stage
    c = setup.chunks[g]
    size = terms.bucket_size(terms.grad_ranks(setup.parallelism), g)
    out = [[sum(c.units[i][0] * k for i, k in pieces), params, expert]
           for pieces, params, expert in split_buckets(c.units, c.experts, size)]
    out[0][0] = c.received[1] + out[0][0]
    return [(s, n, e) for s, n, e in out]


def _split(setup: StepSetup, topo: Topology, buckets):
    """``split(stage, chunk)`` for add_pipeline: the last backward cut at bucket boundaries
    (``buckets(stage, chunk)``: :func:`_buckets`), each cut followed by its 1/d pre-scale
    kernel (:func:`~tpsim.training.grad_buckets.prescale_s`; overlap on, a gradient group of
    more than one rank, :func:`~tpsim.training.grad_buckets.reduce_ranks`, no ZeRO-2/3); else
    None."""
    ranks = terms.grad_ranks(setup.parallelism)
    if setup.sharding.per_unit or not terms.overlapped_reduce(
            setup.overlap_grad_reduce, reduce_ranks(setup.parallelism, setup.experts)):
        return None

    def split(stage: int, chunk: int):
        out = []
        for k, (seconds, params, _) in enumerate(buckets(stage, chunk)):
            out.append((f"bucket{k}", seconds))
            out.append((f"bucket{k}.scale", prescale_s(params, setup.precision, topo.device,
                                                       ranks)))
        return out
    return split


def build_step(setup: StepSetup, topo: Topology) -> StepGraph:
    """The step's graph, op by op with names (the trace's and the plots' detail): the
    pipeline, the DP reductions and the step end (module docstring). With the overlapped
    weight all-gather, each first forward's wait for its buckets (:func:`tpsim.training.step_gather.gathers`) is an op
    of the length the one-pass timing gives it (a wait until a time, which a graph of
    durations does not state; the same times), and each compute op beside a DP collective
    runs the length the timing slowed it to (:mod:`tpsim.training.step_timing`)."""
    from .step_graph import StepGraph     # the trace's and the plots': not a prediction's
    g = StepGraph()
    p = setup.parallelism.pp
    sched = runtime_schedule(p, setup.m, setup.v, setup.pp_runtime)
    timed = time_step(setup, topo)
    _finish(g, setup, topo, lambda chunk_s, transfer_s, split, release, reduce: add_pipeline(
        g, sched, chunk_s, transfer_s, split, timed.waits if gathering(setup) else None),
        timed.reductions)
    for r in range(p):
        ops = [i for i, s in enumerate(g.streams) if s == f"stage{r}"]
        for k, i in enumerate(timed.on.get(f"stage{r}", ())):
            if i in timed.slowed:
                g.seconds[ops[k]] = timed.slowed[i]
    return g


def time_step(setup: StepSetup, topo: Topology) -> TimedGraph:
    """The same step timed in one pass (:mod:`tpsim.training.step_timing`): start, end, stream
    and kind of every op of :func:`build_step`'s graph, the same numbers."""
    g = TimedGraph()
    sh = step_shape(setup.parallelism.pp, setup.m, setup.v, setup.pp_runtime)
    return _finish(g, setup, topo, lambda chunk_s, transfer_s, split, release, reduce:
                   time_pipeline(g, sh, chunk_s, transfer_s, split, release, split and reduce,
                                 topo.device.comm_compute_interference), g.reductions)


def _finish(g, setup: StepSetup, topo: Topology, pipeline, priced: dict):
    """``pipeline(chunk_s, transfer_s, split, release, reduce)`` puts the stages' programs into
    ``g`` (after the overlapped weight all-gathers, :func:`tpsim.training.step_gather.gathers`); then the DP reductions
    and the step end. ``reduce(stage, chunk)``: the seconds of each bucket's reduction, priced
    once into ``priced`` for the walk and the graph's DP ops
    (:func:`tpsim.training.step_reduce.bucket_reductions`)."""
    par = setup.parallelism
    p = par.pp
    release = gathers(g, setup, topo)

    def chunk_s(stage, chunk, kind):
        c = setup.chunks[chunk * p + stage]
        return c.part.forward_s if kind == "F" else c.part.backward_s
    buckets = functools.cache(lambda stage, chunk: _buckets(setup, stage, chunk))
    reduce = bucket_reductions(setup, topo, buckets, priced)
    stage_ops = pipeline(chunk_s, terms.p2p_seconds(setup.p2p_bytes, par, topo),
                         _split(setup, topo, buckets), release, reduce)
    ready = [dp_reduce(g, setup, topo, r, stage_ops[r], reduce) for r in range(p)]
    _step_end(g, setup, topo, ready)
    return g


def _step_end(g, setup: StepSetup, topo: Topology, ready: list) -> None:
    """SP's norm-gradient and the tied-embedding all-reduces, the gradient norm, the optimizer
    and the distributed optimizer's all-gather (:mod:`tpsim.training.terms`)."""
    par, dtype, dev, do = setup.parallelism, setup.precision, topo.device, setup.distributed_optimizer
    p, price = par.pp, terms.collective_price(topo)
    for r in range(p):
        t = terms.sp_sync_s(setup.sync_params[r], dtype, par, r, price)
        if t is not None:
            ready[r] = [g.add(f"s{r}.norm-grads.all-reduce", f"stage{r}.sync", t, ready[r],
                              "step", f"stage{r}", "tp")]
    t = terms.tied_embedding_s(setup.embedding_params, dtype, par, price)
    if t is not None:
        e = g.add("embedding-grads.all-reduce", "embedding", t, ready[0] + ready[-1], "step",
                  "stage0", "pp")
        ready[0], ready[-1] = [e], [e]
    norms = [g.add(f"s{r}.grad-norm", f"stage{r}",
                   terms.grad_norm_s(setup.stage_params[r], setup.optimizer_shards(r), dev,
                                     setup.optimizer.grad_read),
                   ready[r], "step", f"stage{r}", "optimizer") for r in range(p)]
    t = terms.grad_norm_allreduce_s(par, do, price, setup.experts)
    norm = g.add("grad-norm.all-reduce", "grad-norm", t, norms, "step", "stage0", "optimizer")
    for r in range(p):
        local = setup.stage_params[r]
        opt = g.add(f"s{r}.optimizer", f"stage{r}", terms.optimizer_s(
            local, setup.optimizer_shards(r), dtype, dev, setup.optimizer,
            setup.sharding.per_unit), (norm,), "step", f"stage{r}", "optimizer")
        egroup = expert_gather_group(setup.experts, r, setup.sharding)
        t = terms.dp_and_expert_s(
            lambda n, grp: terms.param_gather_s(n, dtype, do, grp, price), local,
            stage_experts(setup, r), weight_gather_group(par, r, setup.sharding), egroup) \
            if do and setup.sharding.stage < 3 else None
        if t and not gathering(setup):
            g.add(f"s{r}.param-all-gather", f"stage{r}.dp", t, (opt,), "step", f"stage{r}", "dp")


def _with_gather(chunk: Chunk, forward: bool, backward: bool, gather_s: float) -> Chunk:
    """``chunk`` after the TP all-gather of what it receives (scatter/gather p2p): its forward
    and/or backward longer by ``gather_s``, run ahead of its units (``received``), counted as
    exposed TP communication."""
    n, p = int(forward) + int(backward), chunk.part
    return dataclasses.replace(chunk, received=(forward * gather_s, backward * gather_s),
                               part=dataclasses.replace(
        p, forward_s=p.forward_s + forward * gather_s, backward_s=p.backward_s + backward * gather_s,
        tp_exposed_s=p.tp_exposed_s + n * gather_s))


def mtp_ends(embedding: Part, output: Part, mtp: Part | None, depths: int) -> Part:
    """The last virtual stage's ends with ``depths`` multi-token-prediction layers
    (:mod:`tpsim.training.mtp`), as Megatron-core's ``MultiTokenPredictionBlock`` runs them:
    the module's own ops (``mtp``, :mod:`tpsim.layer.mtp`) D times, the output layer and its
    loss 1 + D times (the shared output layer, once per depth) and the embedding lookup of the
    shifted tokens D times (the layers themselves are counted in the stage's); D = 0:
    ``output``."""
    if not depths:
        return output
    own = [(mtp, depths)] if mtp is not None else []
    return Part.total([(output, 1 + depths), (embedding, depths)] + own)


def make_setup(model, par: Parallelism, m: int, v: int, stage_layers: list[int], layer: Part,
               embedding: Part, output: Part, topo: Topology, *, micro_batch: int, seq_len: int,
               dtype: str, sequence_parallel: bool, distributed_optimizer: bool,
               overlap_grad_reduce: bool, scatter_gather_p2p: bool = False,
               overlap_param_gather: bool = False, moe: Part | None = None,
               precision: str | None = None, experts=None, partial=None,
               tp_comm_overlap: bool = False, mtp: Part | None = None,
               attention_mask: bool = False) -> StepSetup:
    """The :class:`StepSetup` of a model split into ``stage_layers`` layers per virtual stage;
    ``moe``: one MoE layer, for the model's layers that carry experts (``layer``: the others);
    ``precision``: the :func:`~tpsim.spec.precision.precision_key` of the weights, gradients
    and optimizer state (default: ``dtype``'s); ``experts``: their
    :class:`~tpsim.spec.folding.Folded` groups (None: ep 1, expert TP = tp); ``partial``:
    full recomputation of some layers (:mod:`tpsim.training.partial_recompute`);
    ``tp_comm_overlap``: Transformer Engine's TP-overlap buffers held
    (:func:`tpsim.sim.memory.userbuffers_bytes` of micro_batch x seq_len tokens).

    A stage boundary carries the (b, s, h) activation (SP: s / tp, each rank its shard). With
    ``scatter_gather_p2p`` and no SP each TP rank sends only 1/tp of it and the receiving stage
    all-gathers it over its TP group before its chunk runs (Narayanan et al. 2021 section 4.1;
    DeepSpeed's pipeline engine, pipe_partitioned / grad_partitioned, as Megatron-DeepSpeed ran).

    Layers past the model's are its multi-token-prediction layers in the last virtual stage
    (:func:`mtp_ends`, :func:`tpsim.training.mtp.last_stage`; ``mtp``: one depth's own ops,
    :mod:`tpsim.layer.mtp`); ``attention_mask``: the data loader's mask copied ahead of the
    first and last virtual stage's forwards (:mod:`tpsim.training.data_mask`).
    """
    p, tp = par.pp, par.tp
    last_g = p * v - 1
    starts = [sum(stage_layers[:g]) for g in range(len(stage_layers))]
    expert = terms.expert_unit_params(model, experts)
    end = last_stage(model, tp, p, stage_layers, sequence_parallel)
    copy = mask_copy_s(micro_batch, seq_len * par.cp, par.group("tp"), topo) \
        if attention_mask else (0.0, 0.0)
    embedding, last = with_mask(embedding, mtp_ends(embedding, output, mtp, end.depths), copy, p)
    chunks = [Chunk.of(n, with_output_params(terms.chunk_units(
        model, tp, n, g == 0, g == last_g, starts[g], experts), end.output_unit * (g == last_g)),
                       layer, embedding if g == 0 else None, last if g == last_g else None, moe,
                       expert, partial) for g, n in enumerate(stage_layers)]
    p2p = terms.p2p_bytes(model, tp, micro_batch, seq_len, dtype,
                          sequence_parallel or scatter_gather_p2p)
    if scatter_gather_p2p and not sequence_parallel and tp > 1 and p > 1:
        full = terms.activation_bytes(model, micro_batch, seq_len, dtype)
        gather = group_collective("all-gather", full, par.group("tp"), topo).time_s
        chunks = [_with_gather(c, g > 0, g < last_g, gather) for g, c in enumerate(chunks)]
    params = terms.stage_params(model, tp, stage_layers, p, v, experts)
    params = plus_last(params, end.output_unit)
    shards = terms.stage_shares(model, tp, terms.grad_ranks(par), stage_layers, p, v, params,
                                experts, distributed_optimizer)
    return StepSetup(par, m, v, tuple(chunks), p2p, params,
                     plus_last(terms.sp_sync_params(model, stage_layers, p, v,
                                                    sequence_parallel), end.sp_norms),
                     terms.tied_embedding_params(model, tp, p) or end.copy, precision or dtype,
                     distributed_optimizer, overlap_grad_reduce, overlap_param_gather, shards,
                     experts if expert else None,
                     plain_params=plus_last(stage_plain_params(model, tp, stage_layers, p, v),
                                            end.plain),
                     tp_buffers_bytes=userbuffers_bytes(micro_batch * seq_len, model.hidden,
                                                        dtype, tp_comm_overlap))
