"""What ``tpsim.predict`` returns: a frozen dataclass tree (its JSON form: ``tpsim.report.render``).

Every number is SI (seconds, bytes, FLOP, FLOP/s) and every JSON key carries its unit as a
suffix (``_s``, ``_bytes``, ``_flops``); ``count``, ``share`` and ``mfu`` are plain ratios or
counts. The renderer, the JSON writer, the plots and the tests all read this tree. The JSON
adds to each section the function that computed it (``formula``, :mod:`tpsim.report.formulas`):
the tree holds numbers only, the functions are named where the output is written.
"""
from __future__ import annotations

from dataclasses import field
from functools import cached_property
from typing import NamedTuple

from ..base.record import record
from .memory import Memory


class OpRow(NamedTuple):
    """One op of the layer on one rank, as scheduled. ``time_s`` = end_s - start_s, the op as it
    ran (a compute kernel beside a collective runs slower: ``alone_s`` is its time alone, what
    its ``formula`` gives); ``share`` = time_s / layer total_s.

    A NamedTuple rather than a frozen dataclass: as immutable, and ten times cheaper to build
    (a prediction makes dozens, a sweep thousands).
    """
    name: str
    kind: str          # gemm | attention | elementwise | collective
    phase: str         # forward | backward
    stream: str        # compute | comm
    block: str         # attention | mlp
    shape: str
    flops: float
    bytes: float       # device-memory traffic
    comm_bytes: float  # collective size as nccl-tests counts it (0 for compute ops)
    time_s: float
    start_s: float
    end_s: float
    share: float
    collective: str | None = None
    algorithm: str | None = None
    forward_of: str | None = None
    formula: str = ""            # the function that priced it: tpsim.cost.compute.gemm_time, ...
    group: str | None = None     # a collective's process group (tp, dp, pp, ...)
    alone_s: float = 0.0         # the op alone (its formula's value), before interference


@record
class CollectiveRow:
    """Collectives of one kind and size in one phase of a layer. ``time_s`` is per call."""
    op: str
    phase: str
    count: int
    bytes: int
    time_s: float
    algorithm: str
    formula: str = ""
    group: str = ""

    @property
    def total_time_s(self) -> float:
        return self.count * self.time_s


@record
class LayerTimes:
    """One layer, forward and backward, on one rank.

    total_s = forward_s + backward_s (the schedule's makespan); compute_s and comm_s are the
    busy times of the two streams; exposed_comm_s is the communication the compute stream does
    not hide; host_wait_s is the time neither stream runs because the host has not yet issued
    the next op, so total_s = compute_s + exposed_comm_s + host_wait_s; interference_s is the
    part of compute_s that compute ops lost running beside a collective (also TP overhead);
    comm_share = comm_s / total_s; exposed_comm_share = exposed_comm_s / total_s. flops are
    model FLOPs (no recomputation); hardware_flops add the recomputed ops' FLOPs (Chowdhery et
    al. 2022's MFU vs HFU), equal to flops without recomputation.
    """
    forward_s: float
    backward_s: float
    total_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    comm_share: float
    exposed_comm_share: float
    flops: float
    host_wait_s: float = 0.0
    interference_s: float = 0.0
    hardware_flops: float = 0.0


@record
class ModelTimes:
    """The whole model for one micro-batch, forward and backward, on one GPU (no pipeline).

    step_s = layers * layer_s + embedding_s + output_s; flops is the model FLOPs one GPU does
    (sum of the ops' conventional counts: layers and output layer); tflops_per_gpu =
    flops / step_s; mfu = flops / step_s / peak[dtype]. hardware_flops add what activation
    recomputation re-runs (layers x the layer's recomputed FLOPs); hfu = hardware_flops /
    step_s / peak[dtype] (Korthikanti et al. 2022, Chowdhery et al. 2022).
    """
    layers: int
    layer_s: float
    embedding_s: float
    output_s: float
    step_s: float
    flops: float
    tflops_per_gpu: float
    mfu: float
    params: int
    hardware_flops: float = 0.0
    hfu: float = 0.0


@record
class TimeSplit:
    """Where a GPU's step goes; the parts sum to the step's time_s (:mod:`tpsim.training.step_accounting`):
    compute (the layers' and the model's ends' GPU time), exposed TP communication, host wait,
    the pipeline bubble, exposed PP communication (p2p, tied-embedding all-reduce), exposed DP
    (gradient scaling and reduction), the optimizer (gradient norm, Adam), the activation
    copies to and from host memory the compute waits for (:mod:`tpsim.training.offload`)."""
    compute_s: float
    tp_comm_exposed_s: float
    host_wait_s: float
    bubble_s: float
    pp_comm_exposed_s: float
    dp_comm_exposed_s: float
    optimizer_s: float
    offload_exposed_s: float = 0.0


@record
class StageTimes(TimeSplit):
    """One pipeline stage over the whole step, per GPU (:class:`TimeSplit`). forward_s,
    backward_s: one micro-batch through the stage's chunks; flops, hardware_flops: what one of
    its GPUs computes in the step."""
    stage: int = 0
    layers: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0
    flops: float = 0.0
    hardware_flops: float = 0.0


@record
class StepTimes(TimeSplit):
    """One optimizer step of the whole job (:mod:`tpsim.training.step`).

    time_s: the simulated step; tokens_per_s = global_batch * seq / time_s; flops (model) and
    hardware_flops (with recomputation) per GPU, tflops_per_gpu = flops / time_s, mfu and hfu
    against the dtype's peak. The :class:`TimeSplit` parts are the per-GPU means of the stages'
    and sum to time_s. ideal_bubble_fraction = (p - 1) / (m v), the closed form for equal
    stages and free transfers (bubble / (m (t_f + t_b))). megatron_tflops_per_gpu and
    megatron_full_square_tflops_per_gpu: the step's FLOPs as Megatron-LM counts them
    (:func:`tpsim.training.flops.megatron_flops`, since and before March 2025), per GPU per
    second, to compare with published TFLOP/s. energy_j: the whole job's energy for the step at
    the facility, J (:func:`tpsim.training.energy.step_energy_j`; None where the device gives no
    tdp_W); cost_usd: its GPUs' rent for the step, USD (None without a price).
    ep_comm_exposed_s: the part of tp_comm_exposed_s that the MoE layers' expert-parallel
    all-to-alls leave exposed (:mod:`tpsim.training.expert_comm`), per GPU; 0 without them.
    """
    time_s: float = 0.0
    tokens_per_s: float = 0.0
    tflops_per_gpu: float = 0.0
    mfu: float = 0.0
    hfu: float = 0.0
    flops: float = 0.0
    hardware_flops: float = 0.0
    ideal_bubble_fraction: float = 0.0
    micro_batches: int = 1
    global_batch: int = 1
    pp: int = 1
    dp: int = 1
    virtual_stages: int = 1
    schedule: str = "1f1b"
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = True
    p2p_bytes: float = 0.0
    stages: tuple[StageTimes, ...] = ()
    megatron_tflops_per_gpu: float = 0.0
    megatron_full_square_tflops_per_gpu: float = 0.0
    energy_j: float | None = None
    cost_usd: float | None = None
    ep_comm_exposed_s: float = 0.0


@record
class Inputs:
    model: str
    topology: str
    device: str
    tp: int
    micro_batch: int
    seq_len: int
    dtype: str
    sequence_parallel: bool
    attention: str
    dropout: float
    heads_per_rank: int
    kv_heads_per_rank: int
    nodes: int          # nodes the TP group spans
    recompute: str = "none"   # activation recomputation: none | selective | full
    pp: int = 1
    dp: int = 1
    virtual_stages: int = 1
    global_batch: int = 1
    micro_batches: int = 1
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = True
    tp_comm_overlap: bool = False
    gpus: int = 1
    experts: int = 0          # routed experts per MoE layer (0: a dense model)
    zero: int = 0             # the ZeRO stage (1: the distributed optimizer)
    cp: int = 1               # context-parallel ranks each sequence is split over
    cp_comm: str = "p2p"      # their exchange (tpsim.layer.context_parallel)
    ep: int = 1               # expert-parallel degree of the MoE layers
    expert_tp: int = 0        # their experts' TP degree (0: a dense model)
    expert_dp: int = 0        # their expert data parallelism, tp dp / (ep expert_tp) (0: dense)
    ep_nodes: int = 0         # nodes one EP group spans (1: its all-to-all on NVLink; 0: dense)
    recompute_modules: tuple = ()   # what selective re-runs (tpsim.layer.recompute_modules)
    recompute_method: str | None = None     # full's block | uniform (None: every layer)
    recompute_num_layers: int | None = None
    moe_dispatcher: str = ""  # the MoE layers' token dispatcher (tpsim.layer.moe_flex; "": dense)
    overlap_moe_comm: bool = False   # their EP exchange hidden across micro-batches
    mtp_layers: int = 0       # multi-token-prediction layers trained (tpsim.training.mtp)
    nccl: str = "topology"    # the NCCL release priced (tpsim.cluster.nccl; topology: the file's)
    # the clock the step's tensor kernels were priced at (tpsim.cluster.sustained): none (the
    # kernel benchmarks'), kernel (each its own, or all at sustained_clock) or step (one clock
    # of the layer's mean draw: layer_clock; None where each kernel keeps its own)
    clock_window: str = "none"
    sustained_clock: float = 1.0
    sustained_utilisation: float | None = None
    layer_clock: float | None = 1.0
    # every layout setting away from its default, by field name: tpsim.predict's keywords
    layout: dict = field(default_factory=dict, compare=False)


@record
class Notice:
    """A warning as data: a ``code`` and the numbers behind it (SI); the renderer words it.

    Codes: ``memory_does_not_fit`` (needed_bytes, capacity_bytes, usable_bytes, device,
    recompute, dp, distributed_optimizer, remedies: the layout changes that cut the memory and run,
    :func:`tpsim.training.remedies.memory_remedies`);
    ``tp_spans_nodes`` (tp, nodes, level: the level its collectives cross).
    """
    code: str
    values: dict


@record
class Prediction:
    """What :func:`tpsim.training.predict.predict` returns.

    ``ops`` (one :class:`OpRow` per op of the layer, in schedule order), ``collectives`` (the
    layer's collectives grouped by phase, op and size) and ``graph`` (the layer's
    ``networkx.DiGraph`` with every op's time, start and end) are read from the layer's
    simulation (``run``) on first use (``collectives`` adds ZeRO-2/3's ``dp_collectives``): a sweep that wants only times pays for none of them.
    ``step``: the whole optimizer step (pipeline, data parallelism, optimizer); ``memory`` is
    the fullest stage's, ``stage_memory`` every stage's; ``step_run`` the step's simulation
    (its schedule and timeline: traces, figures).
    """
    inputs: Inputs
    layer: LayerTimes
    model: ModelTimes
    memory: Memory
    warnings: tuple[Notice, ...] = ()
    run: object = field(default=None, compare=False, repr=False)
    step: StepTimes | None = None
    stage_memory: tuple[Memory, ...] = ()
    step_run: object = field(default=None, compare=False, repr=False)
    dp_collectives: tuple[CollectiveRow, ...] = ()   # ZeRO-2/3's per layer and micro-batch

    @cached_property
    def ops(self) -> tuple[OpRow, ...]:
        return self.run.op_rows()

    @cached_property
    def collectives(self) -> tuple[CollectiveRow, ...]:
        return self.run.collective_rows() + self.dp_collectives

    @cached_property
    def graph(self):
        return self.run.digraph() if self.run is not None else None


@record
class BlockPrediction:
    """One bare sub-block (attention or MLP) as the real TP layers run it; total = fwd + bwd."""
    block: str
    forward_s: float
    backward_s: float
    total_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    ops: tuple[OpRow, ...]
    run: object = field(default=None, compare=False, repr=False)

    @cached_property
    def graph(self):
        return self.run.digraph() if self.run is not None else None
