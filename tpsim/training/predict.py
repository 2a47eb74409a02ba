"""tpsim's main job: time, communication and memory of a tensor-parallel transformer.

Glue only: pick the op graph's template (:mod:`tpsim.layer.graph`, :mod:`tpsim.layer.embedding`),
make its ops at the sizes of the run's :class:`~tpsim.spec.layout.Layout`, price and schedule
them (:mod:`tpsim.sim.simulate`) and collect a :class:`~tpsim.sim.result.Prediction`. Model FLOPs and MFU use the conventional counts of Narayanan
et al. 2021 summed over the ops (GEMMs 2mnk; causal attention only on the s (s + 1) / 2
(query, key) pairs on or below the diagonal, 4 b s (s + 1) / 2 h / tp forward, backward twice
forward: :mod:`tpsim.training.flops`). Activation recomputation (``recompute``, see
:mod:`tpsim.layer.recompute`) adds its ops to the backward: they count in the time and in the
hardware FLOPs (HFU), not in the model FLOPs (MFU). The step also carries the TFLOP/s per GPU
that Megatron-LM's count gives (:func:`tpsim.training.flops.megatron_flops`), as published.
"""
from __future__ import annotations

import dataclasses
import math

from ..base.errors import ConfigError
from ..layer.context_parallel import check_cp, hierarchical_sizes, subgroups
from ..layer.dims import FP8_ACTIVATIONS, layer_dims, mla_widths, run_fields, window_fields
from ..layer.graph import collectives_in, layer_template
from ..layer.moe import moe_dims
from ..layer.moe_ep import alltoall_dims, expert_load
from ..layer.moe_flex import slot_of, slot_subgroups
from ..layer.router_dtype import router_switch
from ..layer.recompute_modules import check_modules
from ..spec.fake_gate import fake_gate
from ..spec.folding import Folded, fold
from ..spec.layout import Layout
from ..spec.settings import given_or_made
from ..layer.linears import RS_SPLITS
from ..spec.model import ATTENTIONS, ModelConfig, load_model
from ..spec.model_params import moe_layers
from ..spec.moe_checks import check_dense
from ..spec.parallel import Parallelism
from ..spec.precision import LOW_PRECISION, layout_key, precision
from ..sim.price import Pricing, window_pricing
from ..sim.schedule import COMM_STREAMS
from ..sim.result import BlockPrediction, ModelTimes, Notice, Prediction
from .pipeline import layout_layers, mtp_of
from .partial_recompute import base_layout, partial_of
from .remedies import memory_remedies
from ..sim.simulate import layer_times, phase_times, simulate
from .nodes import check_fits, with_nodes
from .step import Part, make_setup
from .offload import offloaded_parts
from .energy import step_cost_usd, step_energy_j
from .step_accounting import simulate_step
from .flops import with_megatron_tflops
from .mtp import mtp_simulation
from .run_inputs import run_inputs
from .moe_overlap import moe_part
from .optimizer_step import optimizer_step
from .sharded_dp import check_dtype, layer_collectives, shard_setup, sharding
from ..spec.sharding import zero_stage
from . import terms
from ..cluster.sustained import sustained
from ..cluster.nccl import Topology, topology_of
from ..cluster.defaults import default_topology


def _resolve(model, topology) -> tuple[ModelConfig, Topology]:
    return model if isinstance(model, ModelConfig) else load_model(model), topology_of(topology)


def run_layout(layout: Layout | None, settings: dict, caller: str = "predict") -> Layout:
    """The run's :class:`~tpsim.spec.layout.Layout`: ``layout``, or the keyword form's
    ``settings`` (which build one). Both given: each keyword must agree with the layout
    (:func:`~tpsim.spec.settings.given_or_made`)."""
    return given_or_made(Layout, layout, settings, caller, "layout", Layout.of)


def _check(topo: Topology, lay: Layout, dtype: str) -> None:
    """What the layout asks of the topology (its own values: :class:`Layout`; the model's
    sizes: ModelConfig.check_tp); a ConfigError naming the flag."""
    if lay.tp > topo.max_ranks:
        raise ConfigError("--tp", "", f"at most the {topo.max_ranks} GPUs of {topo.name}", lay.tp)
    topo.device.peak(dtype)
    precision(layout_key(lay, dtype=dtype))
    if dtype in LOW_PRECISION:
        topo.device.peak(FP8_ACTIVATIONS)
    kernels = tuple(topo.device.attention_kernels or ())
    if lay.attention is not None and lay.attention not in ATTENTIONS + kernels:
        raise ConfigError("--attention", "", f"one of {', '.join(ATTENTIONS + kernels)} "
                          f"(the kernels {topo.device.name} lists)", lay.attention)


TRAINING_DTYPES = ("bf16", "fp16", "fp32")   # the order a default is picked in


def default_dtype(topo: Topology) -> str:
    """The first of bf16, fp16, fp32 the device lists (a calibrated CPU lists only fp32)."""
    listed = topo.device.peak_flops
    return next((d for d in TRAINING_DTYPES if d in listed), TRAINING_DTYPES[0])


def _settings(model, topology, lay: Layout) -> tuple[ModelConfig, Topology, Layout]:
    """Loaded model and topology, and ``lay`` with the run's defaults filled in: the model's
    sequence length, dropout and attention, the device's first training dtype, one
    micro-batch per step."""
    m, topo = _resolve(model, topology)
    dtype = default_dtype(topo) if lay.dtype is None else lay.dtype
    _check(topo, lay, dtype)
    lay = lay.replace(
        seq_len=m.seq_len if lay.seq_len is None else lay.seq_len, dtype=dtype,
        dropout=m.dropout if lay.dropout is None else lay.dropout,
        attention=lay.attention or m.attention,
        global_batch=lay.per_step if lay.global_batch is None else lay.global_batch)
    if lay.tp_comm_overlap and lay.micro_batch * lay.seq_len < RS_SPLITS:
        raise ConfigError("--tp-comm-overlap", "", f"--micro-batch x --seq of at least {RS_SPLITS} "
                          f"(the GEMMs run in {RS_SPLITS} row chunks)",
                          lay.micro_batch * lay.seq_len)
    check_cp(m, lay.tp, lay.cp, lay.cp_comm, lay.seq_len, lay.attention)
    check_modules(m, lay.recompute_modules or ())
    return m, topo, lay


def simulate_layer(m: ModelConfig, topo: Topology, tp, micro_batch, seq_len, dtype,
                   sequence_parallel, dropout, attention, recompute="none",
                   tp_comm_overlap=False, moe=False, cp=1, cp_comm="p2p", layer_scaling=False,
                   experts: Folded | None = None, load: float = 1.0, eager: bool = False,
                   modules: tuple[str, ...] | None = None, dispatcher: str = "alltoall",
                   flex_backend="deepep", backward=(True, True, 1.0, False), fp8_recipe="delayed",
                   permute=(True, False, True), fill: bool = False, mla_eager: bool = False,
                   router: tuple | None = None):
    """The priced, scheduled layer (defaults already resolved) and its pricing, at the device's
    sustained clock (:func:`tpsim.cluster.sustained.sustained`); ``moe``: the model's MoE layer
    (:mod:`tpsim.layer.moe`, EP 1 with expert TP = tp; with ``experts`` folded otherwise,
    ``dispatcher`` at ``load``, ``permute``: :func:`tpsim.layer.moe_flex.slot_of`'s), else
    its dense one; ``cp``:
    context parallelism by ``cp_comm`` (:mod:`tpsim.layer.context_parallel`), each rank's seq_len /
    cp tokens; ``eager``: PyTorch eager's kernels (:mod:`tpsim.layer.eager`); ``modules``: what
    selective recomputation re-runs (None: core_attn, :mod:`tpsim.layer.recompute_modules`);
    ``backward``: ``layer_template``'s, then Dims.grad_adds and Dims.main_grad_add;
    ``layer_scaling``, ``fp8_recipe``, ``fill`` (:mod:`tpsim.sim.fill`): Dims's; ``mla_eager``:
    MLA's rope and concatenations in eager PyTorch (:mod:`tpsim.layer.mla_eager`); ``router``:
    the router's dtype and release (:func:`tpsim.layer.router_dtype.router_switch`)."""
    dims = layer_dims(m, tp, micro_batch, seq_len, dtype, sequence_parallel, training=True, cp=cp)
    slot, par, groups = 0, Parallelism(tp=tp, cp=cp), {}
    if moe:
        if tp_comm_overlap:
            raise ConfigError("--tp-comm-overlap", "", "off with an MoE model (its expert "
                              "slot's collectives are not overlapped)", True)
        slot = 2 if m.shared_experts else 1
        folded = None if experts is None else slot_of(
            dispatcher, flex_backend, slot == 2, experts.ep, experts.etp, tp, m.load_balancing,
            *permute)
        if folded is not None:
            dims = alltoall_dims(m, tp, experts.ep, experts.etp, micro_batch, seq_len // cp,
                                 dtype, sequence_parallel, load)
            slot, par, groups = folded, experts, slot_subgroups(folded, experts)
        else:
            dims = moe_dims(m, tp, micro_batch, seq_len // cp, dtype, sequence_parallel)
        dims = dataclasses.replace(dims, cp=cp, **mla_widths(m))   # the rank's seq_len / cp
    if m.mla and (attention == "unfused" or tp_comm_overlap or cp > 1):
        flag = "--attention" if attention == "unfused" else "--cp" if cp > 1 else \
            "--tp-comm-overlap"
        raise ConfigError(flag, "", "fused attention without TP overlap or context parallelism: "
                          "multi-head latent attention is priced so",
                          {"--attention": attention, "--cp": cp}.get(flag, True))
    window = window_fields(m, bool(moe), attention, cp) | \
        run_fields(dims, backward[2:], layer_scaling, fp8_recipe, fill)
    dims = dataclasses.replace(dims, **window) if window else dims
    a = hierarchical_sizes(cp, tp, topo.devices_per_node, dims.heads, dims.kv_heads)[0] \
        if cp_comm == "a2a+p2p" else 1
    tpl = layer_template(tp > 1, sequence_parallel, dropout=dropout > 0, attention=attention,
                         swiglu=m.activation == "swiglu", recompute=recompute, bias=m.bias,
                         fp8=dims.quantizer, tp_overlap=tp if tp_comm_overlap else 0,
                         moe=slot, cp=cp, cp_comm=cp_comm, cp_a2a=a, eager=eager,
                         mla=(2 if m.q_lora_rank else 1) if m.mla else 0, modules=modules,
                         qk_norm=m.qk_norm, backward=backward[:2],
                         rope=m.rope_attention_factor != 1, clamp=m.activation_clamp is not None,
                         mla_eager=mla_eager, router=router_switch(router, dims, topo.device))
    dense = par.parallelism if isinstance(par, Folded) else par    # CP's groups: attention's
    pricing = window_pricing(tpl, dims, Pricing(sustained(topo), par, subgroups={
        **groups, **(subgroups(dense, a) if cp > 1 else {})}))
    return simulate(tpl, dims, pricing), pricing


def experts_of(m: ModelConfig, lay: Layout, par: Parallelism) -> Folded | None:
    """The MoE layers' folded groups (:func:`tpsim.spec.folding.fold`: a ConfigError naming
    the flag where they do not fold), their routers without a gating weight under AutoModel's
    fake gate (:mod:`tpsim.spec.fake_gate`); None for a dense model at the defaults."""
    if not m.moe and lay.ep == 1 and lay.expert_tp is None:
        return check_dense(lay, m.name)
    etp = lay.tp if lay.expert_tp is None else lay.expert_tp
    return fold(par, lay.ep, etp, m.experts, m.name, m.expert_ffn_hidden or 0,
                not fake_gate(lay.moe_routing))


def layout_layer(m: ModelConfig, topo: Topology, lay: Layout, moe: bool = False,
                 experts: Folded | None = None):
    """:func:`simulate_layer` of a resolved layout (the search's layers too)."""
    return simulate_layer(m, topo, lay.tp, lay.micro_batch, lay.seq_len, lay.dtype,
                          lay.sequence_parallel, lay.dropout, lay.attention, lay.recompute,
                          lay.tp_comm_overlap, moe, lay.cp, lay.cp_comm, lay.query_key_layer_scaling,
                          experts, expert_load(lay.moe_imbalance, lay.moe_capacity_factor),
                          lay.eager_kernels, lay.recompute_modules, lay.moe_dispatcher,
                          lay.moe_flex_backend, lay.backward, lay.fp8_recipe, (lay.moe_permute_fusion,
                           lay.moe_permute_fusion_into_hybridep, lay.moe_router_fusion, lay.moe_routing),
                          lay.deterministic_mode, mla_eager=lay.mla_eager,
                          router=(lay.moe_router_dtype, lay.moe_router_gating_linear))


def _recomputed_layers(m: ModelConfig, topo: Topology, lay: Layout, experts, sparse: int):
    """The layers block recomputation re-runs: (dense, MoE or None), each simulated with
    ``lay``'s full recomputation (:mod:`tpsim.training.partial_recompute`)."""
    moe = layout_layer(m, topo, lay, True, experts)[0] if sparse else None
    return layout_layer(m, topo, lay)[0], moe


def job_topology(topology, lay: Layout) -> Topology:
    """``topology`` as ``lay``'s NCCL release runs it; None: the default topology of the job's
    tp x cp x pp x dp GPUs and ``nodes`` (:func:`tpsim.cluster.defaults.default_topology`, the
    command line's), dgx-h100 for one node's job."""
    if topology is None:
        topology = default_topology(lay.tp * lay.cp * lay.pp * lay.dp, lay.nodes)
    return topology_of(topology, lay.nccl)


def predict_layer(model, topology=None, *, layout: Layout | None = None, **kw):
    """One transformer layer only (what sweeps over TP degrees and sizes need): the same
    LayerTimes as ``predict(...).layer``, without the whole-model, memory and per-op rows.
    ``layout`` or its fields as keywords (``nccl`` one), as :func:`predict` takes them."""
    lay = run_layout(layout, kw, "predict_layer")
    m, topo, lay = _settings(model, job_topology(topology, lay), lay)
    return layer_times(layout_layer(m, topo, lay)[0])


def _notices(m: ModelConfig, topo, lay: Layout, mem) -> tuple[Notice, ...]:
    out, tp = [], lay.tp
    if not mem.fits:
        out.append(Notice("memory_does_not_fit", {
            "needed_bytes": mem.total_bytes, "capacity_bytes": mem.capacity_bytes,
            "usable_bytes": mem.capacity_bytes - mem.reserved_bytes,
            "device": topo.device.name, "recompute": lay.recompute, "dp": lay.dp,
            "distributed_optimizer": lay.distributed_optimizer,
            "remedies": memory_remedies(m, topo, lay, mem)}))
    nodes = math.ceil(tp / topo.devices_per_node)
    if nodes > 1:
        out.append(Notice("tp_spans_nodes", {"tp": tp, "nodes": nodes,
                                             "level": topo.network.name}))
    return tuple(out)


def predict(model, topology=None, *, layout: Layout | None = None, **settings) -> Prediction:
    """Predict one layer, the whole model for one micro-batch, and one optimizer step per GPU.

    ``model`` and ``topology`` are shipped names, YAML paths or loaded objects (``topology``
    None: the command line's default, :func:`job_topology`). ``layout``: a
    :class:`~tpsim.spec.layout.Layout`, how the job is split and run; or its fields as keywords,
    ``predict(model, topology, tp=8, pp=2, global_batch=64)``. A keyword given beside ``layout``
    must agree with it. ``seq_len``, ``dropout`` and ``attention`` default to the model's,
    ``dtype`` to the device's first of bf16, fp16, fp32, ``global_batch`` to one micro-batch per
    replica; ``nodes`` sizes the topology's network; ``nccl``: the NCCL release priced
    (:func:`~tpsim.cluster.nccl.topology_of`; default ``topology``: the file's own values).

    The layer (:mod:`tpsim.layer.graph`) is simulated once, the step (:mod:`tpsim.training.step`)
    runs it over ``pp`` stages (``virtual_stages`` chunks, interleaved) and ``dp`` replicas."""
    lay = run_layout(layout, settings)
    topology = job_topology(topology, lay)
    if lay.nodes is not None:
        topology = with_nodes(topology, lay.nodes)
    m, topo, lay = _settings(model, topology, lay)
    par, stage_layers = _step_plan(m, topo, lay)
    experts = experts_of(m, lay, par)
    sparse, partial, run = moe_layers(m), partial_of(lay), base_layout(lay)
    sim, pricing = layout_layer(m, topo, run)
    moe = layout_layer(m, topo, run, True, experts)[0] if sparse else None
    dense = Part.of(sim)
    layer = layer_times(moe if sparse else sim)     # the MoE layer when the model has one
    tp = lay.tp
    emb, out = terms.model_ends(sim, pricing, tp, lay.sequence_parallel, lay.dropout,
                                lay.cross_entropy, lay.train_metrics)
    emb_s, out_s = sum(phase_times(emb)), sum(phase_times(out))
    mtp = Part.of(mtp_simulation(sim, pricing, tp, lay.sequence_parallel)) \
        if mtp_of(lay, m) else None
    kinds = [(layer_times(sim), m.layers - sparse)] + ([(layer, sparse)] if sparse else [])
    if partial is not None and run is not lay:      # block: its recomputed layers
        rc = _recomputed_layers(m, topo, lay, experts, sparse)
        kinds = partial.model_kinds(kinds, m, stage_layers, [s and layer_times(s) for s in rc])
        partial = dataclasses.replace(partial, layer=Part.of(rc[0]), moe=rc[1] and Part.of(rc[1]))
    step = sum(n * t.total_s for t, n in kinds) + emb_s + out_s
    flops = sum(n * t.flops for t, n in kinds) + out.flops
    hardware = sum(n * t.hardware_flops for t, n in kinds) + out.flops
    achieved, peak = flops / step, topo.device.peak(lay.dtype)
    times = ModelTimes(m.layers, layer.total_s, emb_s, out_s, step, flops, achieved / 1e12,
                       achieved / peak, m.params(), hardware, hardware / step / peak)
    sh = sharding(zero_stage(lay.zero, lay.distributed_optimizer), lay.dp, lay.shard_group,
                  lay.reshard_after_forward, lay.fp8_all_gather, lay.cp,
                  experts.edp if experts and experts.apart else 0, lay.pp, lay.fsdp_fp32_params,
                  lay.fsdp_flat_params, lay.fsdp2_copies, lay.fsdp_sync_every_micro_batch,
                  lay.expert_grad_reduce_in_bf16)
    result = _step(m, topo, lay, par, stage_layers,
                   (dense, Part.of(emb), Part.of(out),
                    moe_part(moe, lay, experts.ep if experts else 1, topo.device)), peak,
                   sh, experts, partial, mtp)
    mem = max(result.memory, key=lambda x: x.total_bytes)
    return Prediction(run_inputs(m, topo, lay, par, experts_of(m, lay, par), moe or sim), layer,
                      times, mem, _notices(m, topo, lay, mem), moe if sparse else sim,
                      _priced(with_megatron_tflops(result.times, m, lay, par, mtp_of(lay, m)),
                              topo, lay, par),
                      result.memory, result, layer_collectives(
                          m.layer_params(tp), layout_key(lay, topo.device.fp8_any_layout), sh,
                          par, topo))


def _priced(step, topo: Topology, lay: Layout, par: Parallelism):
    """``step`` with the job's energy and, given a price, its cost (:mod:`tpsim.training.energy`)."""
    return dataclasses.replace(step, energy_j=step_energy_j(topo, par.world, step),
                               cost_usd=step_cost_usd(par.world, step, lay.usd_per_gpu_hour))


def predict_block(model, topology, tp: int, block: str, micro_batch: int = 1,
                  seq_len: int | None = None, dtype: str | None = None,
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
    m, topo, lay = _settings(model, topology, Layout(
        tp=tp, micro_batch=micro_batch, seq_len=seq_len, dtype=dtype,
        sequence_parallel=sequence_parallel, attention=attention))
    dims = layer_dims(m, tp, micro_batch, lay.seq_len, lay.dtype, sequence_parallel)
    tpl = layer_template(tp > 1, sequence_parallel, (block,), bare=True, attention=attention,
                         swiglu=m.activation == "swiglu")
    sim = simulate(tpl, dims, Pricing(topo, Parallelism(tp=tp)))
    tl = sim.timeline
    fwd, bwd = phase_times(sim)
    return BlockPrediction(block, fwd, bwd, fwd + bwd, tl.busy_s("compute"),
                           tl.busy_s(COMM_STREAMS), tl.exposed_s(COMM_STREAMS, "compute"),
                           sim.op_rows(), sim)


# --------------------------------------------------------------------------- the training step
# (pipeline, data parallelism, optimizer: tpsim.training.step); the layer above is simulated once.

def _step_plan(m: ModelConfig, topo: Topology, lay: Layout) -> tuple[Parallelism, list]:
    """The job's groups and layers per virtual stage; a job larger than the topology or a
    split Megatron does not run raises ConfigError naming the flag."""
    par = Parallelism(tp=lay.tp, pp=lay.pp, dp=lay.dp, cp=lay.cp)
    check_fits(topo, par)
    try:
        layers = layout_layers(m.layers, mtp_of(lay, m), lay)
    except ValueError as e:
        raise ConfigError("--pp", "", f"a layer split Megatron runs ({e})", lay.pp) from None
    return par, layers


def _step(m: ModelConfig, topo: Topology, lay: Layout, par: Parallelism, stage_layers, parts,
          peak, sh, experts: Folded | None = None, partial=None, mtp=None):
    """The step of the simulated layer, embedding and output layer (``parts``), sharded as
    ``sh`` (:func:`tpsim.training.sharded_dp.sharding`), its MoE layers folded as ``experts``,
    some layers recomputed as ``partial`` (:mod:`tpsim.training.partial_recompute`), ``mtp``:
    one multi-token-prediction depth's own ops (:mod:`tpsim.training.mtp`)."""
    (layer, emb, out, moe), host = offloaded_parts(parts, lay.cpu_offload_layers, m.layers,
                                                   topo.device)
    check_dtype(sh, lay.dtype)
    setup = make_setup(m, par, lay.micro_batches, lay.virtual_stages, stage_layers, layer, emb,
                       out, topo, micro_batch=lay.micro_batch, seq_len=lay.seq_len // lay.cp,
                       dtype=lay.dtype, sequence_parallel=lay.sequence_parallel,
                       distributed_optimizer=zero_stage(lay.zero, lay.distributed_optimizer) >= 1,
                       overlap_grad_reduce=lay.overlap_grad_reduce,
                       scatter_gather_p2p=lay.scatter_gather_p2p,
                       overlap_param_gather=lay.overlap_param_gather, moe=moe,
                       precision=layout_key(lay, topo.device.fp8_any_layout),
                       experts=experts, partial=partial, tp_comm_overlap=lay.tp_comm_overlap,
                       mtp=mtp, attention_mask=lay.create_attention_mask)
    if sh.stage >= 2:
        setup = shard_setup(setup, sh, topo)
    setup = dataclasses.replace(setup, offloaded_bytes=host, pp_runtime=lay.pp_runtime,
                                optimizer=optimizer_step(lay, sh, setup.precision))
    return simulate_step(setup, topo, lay.global_batch, lay.seq_len, peak, lay.memory_headroom)


__all__ = ["predict", "predict_layer", "predict_block", "Layout", "Prediction", "BlockPrediction",
           "collectives_in", "layer_dims"]
