"""The terms one training step is made of, each written once: the simulation
(:mod:`tpsim.training.step` builds the step graph from them, :mod:`tpsim.training.step_accounting`
each stage's memory) and the search's lower bound (:mod:`tpsim.search.step`,
:mod:`tpsim.search.price`) both read these functions, so a new term of the step is written here
once and both price it alike.

A stage's piece of the step, in the order the step runs it (Megatron-core's
``pipeline_parallel/schedules.py``, ``distributed/param_and_grad_buffer.py``,
``distributed/finalize_model_grads.py``, ``optimizer/``):

* chunks: the layer, the embedding and the output layer simulated at the same sizes
  (:func:`model_ends`); virtual stage g holds its layers and the ends it owns
  (:func:`chunk_units`, in the order its backward makes the gradients final);
* p2p: one activation (and its gradient) per stage boundary and micro-batch
  (:func:`p2p_bytes`, :func:`p2p_s` on :func:`pair_place`);
* DP: the gradient buckets (:func:`tpsim.training.grad_buckets.split_buckets`), each pre-scaled by 1/d (:func:`grad_scale_s`)
  and reduced (:func:`grad_reduce_s`), beside the backward or after it
  (:func:`overlapped_reduce`);
* step end: SP's norm-gradient all-reduce (:func:`sp_sync_s`), the tied-embedding all-reduce
  (:func:`tied_embedding_s`), the gradient norm (:func:`grad_norm_s`,
  :func:`grad_norm_allreduce_s`), the optimizer (:func:`optimizer_s`) and the distributed
  optimizer's all-gather (:func:`param_gather_s`), or that all-gather beside the next step's
  first forwards (:func:`overlapped_gather`, :func:`gather_release`);
* memory: each stage's parameters (:func:`stage_params`), optimizer shards
  (:func:`optimizer_shards`) and activations in flight at its fullest (:func:`in_flight_chunks`).

A collective's time comes from ``price(op, nbytes, group) -> seconds``: the simulation's is
:func:`collective_price` (:func:`tpsim.sim.price.group_collective`), the search's the same
pricing memoised per group placement; a term absent from the step is None.
"""
from __future__ import annotations

from typing import Callable

from . import data_parallel as dpm
from ..cluster.topology import BYTES_PER_ELEMENT
from ..cost.collectives import send_recv_time
from ..cost.compute import elementwise_time
from ..layer.embedding import embedding_template, output_template
from ..sim.price import group_collective
from ..sim.simulate import simulate
from ..spec.model_params import expert_params, is_moe_layer, moe_layer_params, moe_layers_in
from ..spec.parallel import Group, Parallelism
from ..spec.precision import LOW_PRECISION
from .expert_norm import expert_norm_group
from .optimizer_step import optimizer_s  # noqa: F401  (a term of the step)
from .pipeline import stage_totals, table_forwards, warmup_forwards

Price = Callable[[str, float, Group], float]


def collective_price(topo) -> Price:
    """The simulation's ``price``: :func:`tpsim.sim.price.group_collective`'s time on ``topo``."""
    return lambda op, nbytes, group: group_collective(op, nbytes, group, topo).time_s


# ---- the step's groups

def pair_group(par: Parallelism, a: int, b: int) -> Group:
    """The two ranks of stages ``a`` and ``b`` that exchange activations (first TP/DP index):
    a 2-rank group with the pipeline's stride times the stage distance."""
    lo, hi = min(a, b), max(a, b)
    stride = par.stride("pp")
    return Group("pp", 2, (hi - lo) * stride, lo * stride, par.world)


def grad_ranks(par: Parallelism) -> int:
    """The ranks that hold the same weights and reduce their gradients: dp x cp (the
    context-parallel ranks each see part of every sequence: Megatron-core reduces over its
    dp-cp group, and the distributed optimizer shards over it)."""
    return par.dp * par.cp


def dp_group(par: Parallelism, stage: int) -> Group:
    """The gradients' group of pipeline stage ``stage`` (its first TP rank): the data-parallel
    group, or with context parallelism Megatron-core's dp-cp group, :func:`grad_ranks` ranks
    ``tp`` apart (CP and EP 1 between TP and DP in the rank order tp-cp-ep-dp-pp)."""
    if par.cp == 1:
        return par.group("dp", first=stage * par.stride("pp"))
    order = [n for n in par.order.split("-") if n != "ep"]
    if par.ep != 1 or order.index("dp") != order.index("cp") + 1:
        raise ValueError("the dp-cp group is contiguous only in the order tp-cp-ep-dp-pp, ep 1")
    return Group("dp", grad_ranks(par), par.stride("cp"), stage * par.stride("pp"), par.world)


def tp_group(par: Parallelism, stage: int) -> Group:
    """The tensor-parallel group of pipeline stage ``stage`` (its first DP rank)."""
    return par.group("tp", first=stage * par.stride("pp"))


def grad_norm_group(par: Parallelism, distributed_optimizer: bool) -> Group | None:
    """The gradient norm's all-reduce: across the model-parallel ranks (and the gradients'
    group, :func:`dp_group`, with the distributed optimizer, each rank holding 1/(d cp) of the
    gradients); priced on the outermost of those groups of more than one rank (None: a
    single rank)."""
    groups = [par.group(n) for n in ("tp", "pp") if getattr(par, n) > 1]
    if distributed_optimizer and grad_ranks(par) > 1:
        groups.append(dp_group(par, 0))
    return max(groups, key=lambda g: g.stride) if groups else None


# ---- chunks and what they hold

def model_ends(sim, pricing, tp: int, sp: bool, dropout: float, ce: str = "unfused",
               metrics: int = 0) -> tuple:
    """The embedding and the output layer (with the loss, its cross-entropy ``ce``, and
    ``metrics`` training metrics) simulated at the layer ``sim``'s sizes and ``pricing``
    (:mod:`tpsim.layer.embedding`): (embedding, output) simulations."""
    emb = simulate(embedding_template(tp > 1, sp, dropout > 0), sim.dims, pricing)
    out = simulate(output_template(tp > 1, sp, cross_entropy=ce, metrics=metrics), sim.dims,
                   pricing)
    return emb, out


def micro_batches(global_batch: int, micro_batch: int, dp: int) -> int:
    """Micro-batches per step on each pipeline: m = global batch / (micro-batch x d)."""
    return global_batch // (micro_batch * dp)


def chunk_units(model, tp: int, layers: int, first: bool, last: bool, start: int = 0,
                experts=None) -> list:
    """The gradient units of a virtual stage of ``layers`` layers from layer ``start``, the
    ``first`` (g = 0) and/or the ``last`` (g = p v - 1)
    (:func:`tpsim.training.data_parallel.gradient_units`): the final
    norm and output layer on the last (:meth:`~tpsim.spec.model.ModelConfig.output_params`;
    tied embeddings: the embedding serves as it when the stage is also the first, pp = 1),
    the layers (layer_params each), the embedding (embedding_params) on the first. A model
    with experts has its layers as runs of ``"layer"`` (dense) and ``"moe"`` units
    (:func:`~tpsim.spec.model_params.moe_layer_params` each, with the ``experts``' folding
    and router: :func:`gate_weight`), last layer first."""
    units = dpm.gradient_units(layers, model.layer_params(tp),
                               model.embedding_params(tp) if first else None,
                               model.output_params(tp, first) if last else None)
    if not model.moe or not layers:
        return units
    ep, etp, _, _ = folded_experts(experts, tp)
    runs, moe_params = [], moe_layer_params(model, tp, ep, etp, gate_weight(experts))
    for i in range(start + layers - 1, start - 1, -1):
        name = "moe" if is_moe_layer(model, i) else "layer"
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((name, moe_params if name == "moe" else model.layer_params(tp), 1))
    k = next(i for i, u in enumerate(units) if u[0] == "layer")
    return units[:k] + runs + units[k + 1:]


def folded_experts(experts, tp: int) -> tuple[int, int, int, int]:
    """(ep, etp, edp, dp) of a :class:`~tpsim.spec.folding.Folded` (None: ep 1, etp = tp)."""
    if experts is None:
        return 1, tp, 0, 0
    return experts.ep, experts.etp, experts.edp, experts.parallelism.dp


def gate_weight(experts) -> bool:
    """Whether the MoE layers' routers hold their gating weight (None: ep 1, a real router)."""
    return experts is None or experts.gate_weight


def expert_unit_params(model, experts) -> int:
    """One MoE layer's routed-expert parameters per rank that Megatron-core reduces over
    expert DP (:func:`~tpsim.spec.model_params.expert_params`) when folded apart
    (:attr:`~tpsim.spec.folding.Folded.apart`); else 0 (reduced with the rest over DP)."""
    return expert_params(model, experts.ep, experts.etp) if experts and experts.apart else 0


def expert_dp_group(experts, stage: int) -> Group:
    """The expert-DP group of pipeline stage ``stage`` (:mod:`tpsim.spec.folding`)."""
    return experts.group("edp", first=stage * experts.parallelism.stride("pp"))


def dp_and_expert_s(collective: Callable, params: float, expert: float, group: Group,
                    expert_group: Group | None) -> float:
    """A bucket's DP collective, ``collective(params, group)`` seconds (0 or None: none):
    of its parameters other than the routed experts' on the DP group, then of its ``expert``
    parameters on the expert-DP group (Megatron-core's separate expert buffers), one after the
    other on the DP stream; the first alone without experts."""
    if not expert:
        return collective(params, group) or 0.0
    t = collective(params - expert, group) or 0.0 if params > expert else 0.0
    return t + (collective(expert, expert_group) or 0.0 if expert_group.size > 1 else 0.0)


def optimizer_shares(model, tp: int, dp: int, params: int, moe_layers: int, experts,
                     distributed_optimizer: bool) -> float:
    """How many ways a stage's optimizer state is split, for ``params`` held of which
    ``moe_layers`` x :func:`~tpsim.spec.model_params.expert_params` are routed experts: the
    distributed optimizer shards the experts' over edp, the rest over d = dp cp (Megatron-core's
    separate expert-DP buffers), params / (dense / d + experts / edp); d when every group is
    the same (:func:`optimizer_shards`), 1 without it."""
    ep, etp, edp, _ = folded_experts(experts, tp)
    if not distributed_optimizer or not moe_layers or experts is None or edp == dp:
        return optimizer_shards(dp, distributed_optimizer)
    x = moe_layers * expert_params(model, ep, etp)
    return params / ((params - x) / dp + x / edp)


def stage_shares(model, tp: int, dp: int, layers, pp: int, v: int, params, experts,
                 distributed_optimizer: bool) -> tuple[float, ...]:
    """:func:`optimizer_shares` of each stage holding ``params`` (:func:`stage_params`); ()
    without ``experts``' folding (every stage :func:`optimizer_shards`)."""
    if experts is None:
        return ()
    moe = stage_totals(moe_counts(model, layers), pp, v)
    return tuple(optimizer_shares(model, tp, dp, n, k, experts, distributed_optimizer)
                 for n, k in zip(params, moe))


def moe_counts(model, layers) -> list[int]:
    """MoE layers of each virtual stage (g = chunk * pp + stage holds the model's layers in
    order of g: :func:`tpsim.training.pipeline.split_layers`)."""
    starts = [sum(layers[:g]) for g in range(len(layers))]
    return [moe_layers_in(model, a, n) for a, n in zip(starts, layers)]


def bucket_size(dp: int, g: int) -> int | None:
    """The gradient bucket size of virtual stage ``g``, parameters: Megatron-core's
    max(40M, 1M x d) (:func:`tpsim.training.data_parallel.bucket_params`) on the first
    virtual stage, the one param_and_grad_buffer buckets; None (one bucket) elsewhere."""
    return dpm.bucket_params(dp) if g == 0 else None


def stage_params(model, tp: int, layers, pp: int, v: int, experts=None) -> tuple[int, ...]:
    """Parameters one rank of each pipeline stage holds (and updates, before sharding): its
    layers over its v chunks (:func:`tpsim.training.pipeline.stage_totals`) x layer_params (its MoE
    layers x moe_layer_params: :func:`moe_counts`), plus
    the embedding on the first and the output layer on the last
    (:meth:`~tpsim.spec.model.ModelConfig.stage_params`); the ``experts``' folding changes
    each MoE layer's to :func:`~tpsim.spec.model_params.moe_layer_params` (tp, ep, etp; no
    router weight under AutoModel's fake gate: :func:`gate_weight`)."""
    moe = stage_totals(moe_counts(model, layers), pp, v)
    ep, etp, _, _ = folded_experts(experts, tp)
    extra = moe_layer_params(model, tp, ep, etp, gate_weight(experts)) \
        - moe_layer_params(model, tp) if any(moe) else 0
    return tuple(model.stage_params(tp, n, r == 0, r == pp - 1, moe[r]) + moe[r] * extra
                 for r, n in enumerate(stage_totals(layers, pp, v)))


def optimizer_shards(dp: int, distributed_optimizer: bool) -> int:
    """How many ways a stage's optimizer state and step are split: d with the distributed
    optimizer (ZeRO-1: each DP rank owns 1/d), else 1."""
    return dp if distributed_optimizer else 1


def in_flight_chunks(p: int, v: int, m: int, stage: int) -> tuple[int, ...]:
    """Per model chunk of ``stage``, the micro-batches whose activations it holds at its
    fullest moment: its w warm-up forwards (:func:`warmup_forwards`) and the first steady one,
    min(w + 1, m v) forwards over the chunks as :func:`table_forwards`; 1F1B: min(p - r, m).
    What :func:`tpsim.training.pipeline.in_flight` reads off the built schedule (a test)."""
    return table_forwards(min(warmup_forwards(p, v, m, stage) + 1, m * v), p, v)


# ---- point to point

def activation_bytes(model, micro_batch: int, seq_len: int, dtype: str) -> float:
    """One micro-batch's (b, s, h) activation, bytes: b s h x the activations' element size
    (bf16 under FP8: Transformer Engine casts only inside its linears)."""
    return micro_batch * seq_len * model.hidden * BYTES_PER_ELEMENT[
        "bf16" if dtype in LOW_PRECISION else dtype]


def p2p_bytes(model, tp: int, micro_batch: int, seq_len: int, dtype: str,
              sharded: bool) -> float:
    """What one GPU sends per stage boundary and micro-batch: :func:`activation_bytes`, / tp
    when ``sharded`` (sequence parallelism: each rank its s / tp shard; or scatter/gather p2p)."""
    full = activation_bytes(model, micro_batch, seq_len, dtype)
    return float(full / tp if sharded else full)


def pair_place(par: Parallelism, topo, a: int, b: int):
    """The placement of :func:`pair_group` (stages ``a`` and ``b``) on ``topo``."""
    return topo.place(pair_group(par, a, b))


def p2p_s(nbytes: float, place, topo) -> float:
    """One transfer of ``nbytes`` between the two ranks of ``place``
    (:func:`tpsim.cost.collectives.send_recv_time`)."""
    return send_recv_time(nbytes, place, topo).time_s


def p2p_seconds(nbytes: float, par: Parallelism, topo):
    """``transfer_s(a, b)`` for :func:`tpsim.training.pipeline.add_pipeline`, memoised per pair
    (:func:`p2p_s`)."""
    memo = {}

    def seconds(a: int, b: int) -> float:
        if (a, b) not in memo:
            memo[a, b] = p2p_s(nbytes, pair_place(par, topo, a, b), topo)
        return memo[a, b]
    return seconds


# ---- data parallelism

def overlapped_reduce(overlap_grad_reduce: bool, dp: int) -> bool:
    """Whether the DP reduction runs per bucket beside the last backward (Megatron-core's
    overlap_grad_reduce with d > 1); else it follows the stage's whole backward, if any."""
    return overlap_grad_reduce and dp > 1


def grad_scale_s(params: float, dtype: str, device) -> float:
    """The 1/d pre-scale of ``params`` main gradients in place, one memory-bound kernel:
    elementwise_time(2 x params x main-gradient bytes)."""
    return elementwise_time(dpm.scale_bytes(params, dtype), device)


def grad_reduce_s(params: float, dtype: str, distributed_optimizer: bool, group: Group,
                  price: Price) -> float:
    """The DP collective of ``params`` main gradients on ``group``: reduce-scatter into each
    rank's shard with the distributed optimizer, else all-reduce, of params x main-gradient
    bytes (:func:`tpsim.training.data_parallel.grad_bytes`)."""
    return price(dpm.reduce_op(distributed_optimizer), dpm.grad_bytes(params, dtype), group)


# ---- the step's end

def sp_sync_params(model, layers, pp: int, v: int, sequence_parallel: bool) -> tuple[int, ...]:
    """Per stage, the gradients sequence parallelism leaves partial on each TP rank
    (:meth:`~tpsim.spec.model.ModelConfig.sp_sync_params`: the layers' norms and row-parallel
    biases, the final norm on the last stage); 0 without SP."""
    moe = stage_totals(moe_counts(model, layers), pp, v)
    return tuple(model.sp_sync_params(n, r == pp - 1, moe[r]) if sequence_parallel else 0
                 for r, n in enumerate(stage_totals(layers, pp, v)))


def sp_sync_s(params: int, dtype: str, par: Parallelism, stage: int,
              price: Price) -> float | None:
    """The TP all-reduce of stage ``stage``'s ``params`` partial gradients
    (:func:`sp_sync_params`) in main-gradient bytes, before its DP reduction counts as done
    (finalize_model_grads' _allreduce_layernorm_grads); None with tp = 1 or nothing to sync."""
    if not params or par.tp == 1:
        return None
    return price("all-reduce", dpm.grad_bytes(params, dtype), tp_group(par, stage))


def tied_embedding_params(model, tp: int, pp: int) -> int:
    """The embedding gradient the first and last stage all-reduce (tied embeddings with
    pp > 1: the last stage keeps a copy as its output layer), parameters per rank; else 0."""
    return model.embedding_params(tp) if model.tie_embeddings and pp > 1 else 0


def tied_embedding_s(params: int, dtype: str, par: Parallelism, price: Price) -> float | None:
    """The all-reduce of :func:`tied_embedding_params` main gradients between the first and
    last stage (finalize_model_grads' _allreduce_embedding_grads); None without it."""
    if not params or par.pp == 1:
        return None
    return price("all-reduce", dpm.grad_bytes(params, dtype), pair_group(par, 0, par.pp - 1))


def grad_norm_s(params: float, shards: int, device, grad_bytes: int = dpm.NORM_BYTES) -> float:
    """The gradient norm's kernel over the 1/shards of a stage's ``params`` gradients the rank
    owns: elementwise_time(grad_bytes x params / shards) (multi_tensor_l2norm reads fp32,
    NORM_BYTES; PyTorch FSDP's kept shard: :attr:`.optimizer_step.OptimizerStep.grad_read`)."""
    return elementwise_time(grad_bytes * params / shards, device)


def grad_norm_allreduce_s(par: Parallelism, distributed_optimizer: bool, price: Price,
                          experts=None) -> float:
    """The all-reduce of the squared norm (one fp32) on :func:`grad_norm_group`, then the
    routed experts' optimizer's on :func:`~.expert_norm.expert_norm_group` (``experts``
    folded, without the distributed optimizer); 0 on one rank."""
    dense, expert = (grad_norm_group(par, distributed_optimizer),
                     expert_norm_group(experts, distributed_optimizer))
    t = price("all-reduce", dpm.FP32, dense) if dense else 0.0
    return t + price("all-reduce", dpm.FP32, expert) if expert else t


def param_gather_s(params: float, dtype: str, distributed_optimizer: bool, group: Group,
                   price: Price) -> float | None:
    """The distributed optimizer's all-gather of the updated weights on the DP ``group``:
    :func:`tpsim.training.data_parallel.gather_bytes` (params x the gathered, 16-bit, weight
    bytes); None without it or with d = 1."""
    if not distributed_optimizer or group.size == 1:
        return None
    return price("all-gather", dpm.gather_bytes(params, dtype), group)


def overlapped_gather(overlap_param_gather: bool, distributed_optimizer: bool, dp: int) -> bool:
    """Whether the weight all-gather runs bucket by bucket beside the next step's first
    forwards (Megatron-core's overlap_param_gather, distributed optimizer, d > 1); else it
    follows the optimizer (:func:`param_gather_s`)."""
    return overlap_param_gather and distributed_optimizer and dp > 1


def gather_release(start: float, buckets) -> tuple[float, float]:
    """A chunk's first forward against its buckets' all-gathers, issued back to back on the
    DP stream from ``start`` in forward order: ``buckets`` (gather seconds g_k, forward
    seconds f_k of the layers bucket k holds). Bucket k's all-gather ends at
    G_k = start + g_0 + ... + g_k and its layers' forward may not start before it (the forward
    pre-hook waits for it: DistributedDataParallel's finish_param_sync), so the forward,
    released at R, ends at max(t0 + sum f, max_k (G_k + f_k + ... + f_K-1)): it runs whole from
    R = max_k (G_k - f_0 - ... - f_k-1). Returns (R, the last all-gather's end)."""
    end, head, release = start, 0.0, float("-inf")
    for gather, forward in buckets:
        end += gather
        release = max(release, end - head)
        head += forward
    return release, end
