"""tpsim's main job: time, communication and memory of a tensor-parallel transformer.

Glue only: pick the op graph's template (:mod:`tpsim.layer.graph`, :mod:`tpsim.layer.embedding`), make its
ops at the run's sizes, price and schedule them (:mod:`tpsim.sim.simulate`) and collect a
:class:`~tpsim.sim.result.Prediction`. Model FLOPs and MFU use the conventional counts of Narayanan
et al. 2021 summed over the ops (GEMMs 2mnk, attention 4bs^2h/tp forward with the full square,
backward twice forward). Activation recomputation (``recompute``, see :mod:`tpsim.layer.recompute`)
adds its ops to the backward: they count in the time and in the hardware FLOPs (HFU), not in
the model FLOPs (MFU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..layer.embedding import embedding_template, output_template
from ..base.errors import ConfigError
from ..layer.dims import FP8_ACTIVATIONS, layer_dims
from ..layer.graph import collectives_in, layer_template
from ..layer.linears import RS_SPLITS
from ..sim.memory import OPTIMIZER_BYTES
from ..spec.model import ATTENTIONS, ModelConfig, load_model
from ..spec.parallel import Parallelism
from ..sim.price import Pricing
from ..layer.recompute import RECOMPUTE
from ..sim.schedule import COMM_STREAMS
from ..sim.result import BlockPrediction, Inputs, ModelTimes, Notice, Prediction
from .pipeline import split_layers
from ..base.schema import MAX_INT
from ..sim.simulate import layer_times, phase_times, simulate
from .step import Part, check_fits, make_setup, with_nodes
from .step_accounting import simulate_step
from ..cluster.topology import Topology, load_topology


def _resolve(model, topology) -> tuple[ModelConfig, Topology]:
    m = model if isinstance(model, ModelConfig) else load_model(model)
    t = topology if isinstance(topology, Topology) else load_topology(topology)
    return m, t


def _positive_int(flag: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INT:
        raise ConfigError(flag, "", f"a positive integer (at most {MAX_INT})", v)


def _check(topo: Topology, tp, micro_batch, seq_len, dtype, dropout, attention,
           recompute="none", sequence_parallel=False, tp_comm_overlap=False) -> None:
    """Bad run settings raise ConfigError naming the flag (model sizes: ModelConfig.check_tp)."""
    for flag, v in (("--micro-batch", micro_batch), ("--seq", seq_len), ("--tp", tp)):
        _positive_int(flag, v)
    if tp > topo.max_ranks:
        raise ConfigError("--tp", "", f"at most the {topo.max_ranks} GPUs of {topo.name}", tp)
    if not isinstance(dtype, str) or dtype not in OPTIMIZER_BYTES:
        raise ConfigError("--dtype", "", f"one of {', '.join(OPTIMIZER_BYTES)}", dtype)
    topo.device.peak(dtype)
    if dtype == "fp8":
        topo.device.peak(FP8_ACTIVATIONS)
    if dropout is not None and (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                                or not 0 <= dropout < 1):
        raise ConfigError("--dropout", "", "a probability in [0, 1)", dropout)
    kernels = tuple(topo.device.attention_kernels or ())
    if attention is not None and attention not in ATTENTIONS + kernels:
        raise ConfigError("--attention", "", f"one of {', '.join(ATTENTIONS + kernels)} "
                          f"(the kernels {topo.device.name} lists)", attention)
    if recompute not in RECOMPUTE:
        raise ConfigError("--recompute", "", f"one of {', '.join(RECOMPUTE)}", recompute)
    if not isinstance(sequence_parallel, bool):
        raise ConfigError("--sequence-parallel", "", "true or false", sequence_parallel)
    if not isinstance(tp_comm_overlap, bool):
        raise ConfigError("--tp-comm-overlap", "", "true or false", tp_comm_overlap)
    if tp_comm_overlap and not (sequence_parallel and tp > 1):
        raise ConfigError("--tp-comm-overlap", "", "--sequence-parallel and --tp > 1 (Transformer "
                          "Engine overlaps the sequence-parallel collectives)", tp_comm_overlap)
    if tp_comm_overlap and micro_batch * seq_len < RS_SPLITS:
        raise ConfigError("--tp-comm-overlap", "", f"--micro-batch x --seq of at least {RS_SPLITS} "
                          f"(the GEMMs run in {RS_SPLITS} row chunks)", micro_batch * seq_len)


TRAINING_DTYPES = ("bf16", "fp16", "fp32")   # the order a default is picked in


def default_dtype(topo: Topology) -> str:
    """The first of bf16, fp16, fp32 the device lists (a calibrated CPU lists only fp32)."""
    listed = topo.device.peak_flops
    return next((d for d in TRAINING_DTYPES if d in listed), TRAINING_DTYPES[0])


def _settings(model, topology, tp, micro_batch, seq_len, dtype, sequence_parallel, dropout,
              attention, recompute, tp_comm_overlap=False):
    """Loaded model and topology and the run's settings with the defaults filled in: the
    model's sequence length, dropout and attention, the device's first training dtype."""
    m, topo = _resolve(model, topology)
    s = m.seq_len if seq_len is None else seq_len
    dtype = default_dtype(topo) if dtype is None else dtype
    _check(topo, tp, micro_batch, s, dtype, dropout, attention, recompute, sequence_parallel,
           tp_comm_overlap)
    p = m.dropout if dropout is None else dropout
    return m, topo, s, p, attention or m.attention, dtype


def simulate_layer(m: ModelConfig, topo: Topology, tp, micro_batch, seq_len, dtype,
                   sequence_parallel, dropout, attention, recompute="none",
                   tp_comm_overlap=False):
    """The priced, scheduled layer (defaults already resolved) and its pricing."""
    dims = layer_dims(m, tp, micro_batch, seq_len, dtype, sequence_parallel)
    tpl = layer_template(tp > 1, sequence_parallel, dropout=dropout > 0, attention=attention,
                         swiglu=m.activation == "swiglu", recompute=recompute, bias=m.bias,
                         fp8=dtype == "fp8", tp_overlap=tp if tp_comm_overlap else 0)
    pricing = Pricing(topo, Parallelism(tp=tp))
    return simulate(tpl, dims, pricing), pricing


def predict_layer(model, topology="dgx-h100", tp: int = 8, micro_batch: int = 1,
                  seq_len: int | None = None, dtype: str | None = None, sequence_parallel: bool = False,
                  dropout: float | None = None, attention: str | None = None,
                  recompute: str = "none", tp_comm_overlap: bool = False):
    """One transformer layer only (what sweeps over TP degrees and sizes need): the same
    LayerTimes as ``predict(...).layer``, without the whole-model, memory and per-op rows."""
    m, topo, s, p, att, dtype = _settings(model, topology, tp, micro_batch, seq_len, dtype,
                                          sequence_parallel, dropout, attention, recompute,
                                          tp_comm_overlap)
    sim, _ = simulate_layer(m, topo, tp, micro_batch, s, dtype, sequence_parallel, p, att,
                             recompute, tp_comm_overlap)
    return layer_times(sim)


def _notices(topo, tp, mem, recompute) -> tuple[Notice, ...]:
    out = []
    if not mem.fits:
        out.append(Notice("memory_does_not_fit", {
            "needed_bytes": mem.total_bytes, "capacity_bytes": mem.capacity_bytes,
            "device": topo.device.name, "recompute": recompute}))
    nodes = math.ceil(tp / topo.devices_per_node)
    if nodes > 1:
        out.append(Notice("tp_spans_nodes", {"tp": tp, "nodes": nodes,
                                             "level": topo.network.name}))
    return tuple(out)


def predict(model, topology="dgx-h100", tp: int = 8, micro_batch: int = 1,
            seq_len: int | None = None, dtype: str | None = None, sequence_parallel: bool = False,
            dropout: float | None = None, attention: str | None = None,
            recompute: str = "none", tp_comm_overlap: bool = False, *, pp: int = 1, dp: int = 1,
            global_batch: int | None = None, virtual_stages: int = 1,
            distributed_optimizer: bool = False, overlap_grad_reduce: bool = True,
            scatter_gather_p2p: bool = False, nodes: int | None = None,
            first_stage_layers: int | None = None,
            last_stage_layers: int | None = None) -> Prediction:
    """Predict one layer, the whole model for one micro-batch, and one optimizer step per GPU.

    ``model`` and ``topology`` are shipped names, YAML paths or loaded objects; ``seq_len``,
    ``dropout`` and ``attention`` default to the model's, ``dtype`` to the device's first of
    bf16, fp16, fp32. ``recompute``: activation recomputation, none | selective | full
    (:mod:`tpsim.layer.recompute`); ``tp_comm_overlap``: Transformer Engine's TP communication overlap
    (needs ``sequence_parallel``); ``dtype`` fp8: Transformer Engine's FP8 linears.

    The step (:mod:`tpsim.training.step`): ``pp`` pipeline stages (``virtual_stages`` model chunks each:
    interleaved 1F1B), ``dp`` data-parallel replicas, ``global_batch`` sequences per step
    (default micro_batch x dp: one micro-batch), ``distributed_optimizer`` (ZeRO-1),
    ``overlap_grad_reduce`` (DP buckets beside the backward; False: after it), ``nodes`` (size
    the topology's network to this many nodes), ``first_stage_layers``/``last_stage_layers``
    (Megatron's uneven first/last stage), ``scatter_gather_p2p`` (without SP each TP rank sends
    1/tp of an activation and the next stage all-gathers it: Megatron-LM 2021, DeepSpeed's
    pipeline engine).
    """
    if nodes is not None:
        topology = with_nodes(_resolve(model, topology)[1], nodes)
    m, topo, s, p, att, dtype = _settings(model, topology, tp, micro_batch, seq_len, dtype,
                                          sequence_parallel, dropout, attention, recompute,
                                          tp_comm_overlap)
    plan = _step_plan(m, topo, tp, micro_batch, pp, dp, global_batch, virtual_stages,
                      distributed_optimizer, overlap_grad_reduce, scatter_gather_p2p,
                      first_stage_layers, last_stage_layers)
    sim, pricing = simulate_layer(m, topo, tp, micro_batch, s, dtype, sequence_parallel, p,
                                   att, recompute, tp_comm_overlap)
    layer = layer_times(sim)
    emb = simulate(embedding_template(tp > 1, sequence_parallel, p > 0), sim.dims, pricing)
    out = simulate(output_template(tp > 1, sequence_parallel), sim.dims, pricing)
    emb_s, out_s = sum(phase_times(emb)), sum(phase_times(out))
    step = m.layers * layer.total_s + emb_s + out_s
    out_flops = out.flops
    flops = m.layers * layer.flops + out_flops
    hardware = m.layers * layer.hardware_flops + out_flops
    achieved, peak = flops / step, topo.device.peak(dtype)
    times = ModelTimes(m.layers, layer.total_s, emb_s, out_s, step, flops, achieved / 1e12,
                       achieved / peak, m.params(), hardware, hardware / step / peak)
    result = _step(m, topo, plan, (Part.of(sim, layer), Part.of(emb), Part.of(out)), micro_batch,
                   s, dtype, sequence_parallel, peak)
    mem = max(result.memory, key=lambda x: x.total_bytes)
    inputs = Inputs(m.name, topo.name, topo.device.name, tp, micro_batch, s, dtype,
                    sequence_parallel, att, p, m.heads // tp, m.kv_heads_per_rank(tp),
                    math.ceil(tp / topo.devices_per_node), recompute, pp, dp, virtual_stages,
                    plan.global_batch, plan.m, distributed_optimizer, overlap_grad_reduce,
                    tp_comm_overlap, plan.parallelism.world)
    return Prediction(inputs, layer, times, mem, _notices(topo, tp, mem, recompute), sim,
                      result.times, result.memory, result)


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
    m, topo = _resolve(model, topology)
    s = m.seq_len if seq_len is None else seq_len
    dtype = default_dtype(topo) if dtype is None else dtype
    _check(topo, tp, micro_batch, s, dtype, None, attention, "none", sequence_parallel)
    dims = layer_dims(m, tp, micro_batch, s, dtype, sequence_parallel)
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

@dataclass(frozen=True)
class _StepPlan:
    parallelism: Parallelism
    global_batch: int
    m: int
    stage_layers: list
    virtual_stages: int
    distributed_optimizer: bool
    overlap_grad_reduce: bool
    scatter_gather_p2p: bool


def _flag(flag: str, v) -> None:
    if not isinstance(v, bool):
        raise ConfigError(flag, "", "true or false", v)


def _step_plan(m: ModelConfig, topo: Topology, tp, micro_batch, pp, dp, global_batch, v,
               distributed_optimizer, overlap_grad_reduce, scatter_gather_p2p, first,
               last) -> _StepPlan:
    """The job's groups, micro-batches per step and layers per virtual stage; bad settings
    raise ConfigError naming the flag."""
    for flag, x in (("--pp", pp), ("--dp", dp), ("--virtual-stages", v)):
        _positive_int(flag, x)
    _flag("--distributed-optimizer", distributed_optimizer)
    _flag("--overlap-grad-reduce", overlap_grad_reduce)
    _flag("--scatter-gather-p2p", scatter_gather_p2p)
    if v > 1 and pp == 1:
        raise ConfigError("--virtual-stages", "", "1 unless --pp is more than 1", v)
    par = Parallelism(tp=tp, pp=pp, dp=dp)
    check_fits(topo, par)
    per_step = micro_batch * dp
    gb = per_step if global_batch is None else global_batch
    _positive_int("--global-batch", gb)
    if gb % per_step:
        raise ConfigError("--global-batch", "", f"a multiple of micro-batch x dp ({per_step})", gb)
    mbs = gb // per_step
    if v > 1 and mbs % pp:
        raise ConfigError("--global-batch", "", f"micro-batches per step (global batch / "
                          f"(micro-batch x dp) = {mbs}) a multiple of pp ({pp}) with "
                          "--virtual-stages", gb)
    for flag, x in (("--first-stage-layers", first), ("--last-stage-layers", last)):
        if x is not None:
            _positive_int(flag, x)
    try:
        layers = split_layers(m.layers, pp, v, first, last)
    except ValueError as e:
        raise ConfigError("--pp", "", f"a layer split Megatron runs ({e})", pp) from None
    return _StepPlan(par, gb, mbs, layers, v, distributed_optimizer, overlap_grad_reduce,
                     scatter_gather_p2p)


def _step(m: ModelConfig, topo: Topology, plan: _StepPlan, parts, micro_batch, seq_len, dtype,
          sequence_parallel, peak):
    """The step of the simulated layer, embedding and output layer (``parts``)."""
    layer, emb, out = parts
    setup = make_setup(m, plan.parallelism, plan.m, plan.virtual_stages, plan.stage_layers,
                       layer, emb, out, topo, micro_batch=micro_batch, seq_len=seq_len,
                       dtype=dtype, sequence_parallel=sequence_parallel,
                       distributed_optimizer=plan.distributed_optimizer,
                       overlap_grad_reduce=plan.overlap_grad_reduce,
                       scatter_gather_p2p=plan.scatter_gather_p2p)
    return simulate_step(setup, topo, plan.global_batch, seq_len, peak)


__all__ = ["predict", "predict_layer", "predict_block", "Prediction", "BlockPrediction",
           "collectives_in", "layer_dims"]
