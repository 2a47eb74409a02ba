"""What a training prediction was made for, as resolved: :class:`~tpsim.sim.result.Inputs`
(the JSON's ``inputs``), made from the run's model, topology and layout."""
from __future__ import annotations

import math

from ..cluster.nccl import Topology, release_of
from ..cluster.sustained import sustained
from ..sim.price import layer_clock
from ..layer.recompute import DEFAULT_MODULES
from ..sim.result import Inputs
from ..spec.folding import Folded
from ..spec.layout import Layout
from ..spec.model import ModelConfig
from ..spec.parallel import Parallelism
from ..spec.release import settings_echoed
from ..spec.sharding import zero_stage
from .pipeline import mtp_of


def run_inputs(m: ModelConfig, topo: Topology, lay: Layout, par: Parallelism,
               experts: Folded | None, layer=None) -> Inputs:
    """What the prediction was made for, as resolved (:class:`~tpsim.sim.result.Inputs`):
    ``lay``'s settings away from their defaults as ``layout``, its NCCL release apart as
    ``nccl`` (as :func:`~tpsim.cluster.nccl.release_of` keys it); ``experts``: the routed
    experts' folding (None: a dense model); ``layer``: the layer reported (a
    :class:`~tpsim.sim.simulate.Simulation`), whose one clock a ``clock_window: step`` device
    states (:func:`tpsim.sim.price.layer_clock`)."""
    tp = lay.tp
    return Inputs(model=m.name, topology=topo.name, device=topo.device.name, tp=tp,
                  micro_batch=lay.micro_batch, seq_len=lay.seq_len, dtype=lay.dtype,
                  sequence_parallel=lay.sequence_parallel, attention=lay.attention,
                  dropout=lay.dropout, heads_per_rank=m.heads // tp,
                  kv_heads_per_rank=m.kv_heads_per_rank(tp),
                  nodes=math.ceil(tp / topo.devices_per_node), recompute=lay.recompute,
                  pp=lay.pp, dp=lay.dp, virtual_stages=lay.virtual_stages,
                  global_batch=lay.global_batch, micro_batches=lay.micro_batches,
                  distributed_optimizer=lay.distributed_optimizer,
                  overlap_grad_reduce=lay.overlap_grad_reduce,
                  tp_comm_overlap=lay.tp_comm_overlap, gpus=par.world, experts=m.experts,
                  zero=zero_stage(lay.zero, lay.distributed_optimizer),
                  cp=lay.cp, cp_comm=lay.cp_comm, recompute_method=lay.recompute_method,
                  recompute_num_layers=lay.recompute_num_layers, layout=settings_echoed(lay),
                  recompute_modules=(lay.recompute_modules or DEFAULT_MODULES)
                  if lay.recompute == "selective" else (), mtp_layers=mtp_of(lay, m),
                  nccl=release_of(lay.nccl), **clock_inputs(topo.device, layer and layer_clock(
                      layer.template, layer.dims, sustained(topo).device)),
                  **_expert_inputs(experts, topo, lay))


def clock_inputs(device, window: float | None) -> dict:
    """The clock model the step's tensor kernels were priced with (:mod:`tpsim.cluster.sustained`),
    as the Inputs' clock_window, sustained_clock, sustained_utilisation and layer_clock: none
    (no sustained clock: the kernel benchmarks' clock, 1); kernel with no
    ``sustained_utilisation`` (every kernel at ``sustained_clock``), with one (each kernel its
    own: layer_clock None); step (``window``, the one clock of the layer's mean draw)."""
    if device.sustained_clock == 1.0:
        return {}
    u_ref = device.sustained_utilisation
    return {"clock_window": "step" if window is not None else "kernel",
            "sustained_clock": device.sustained_clock, "sustained_utilisation": u_ref,
            "layer_clock": window if window is not None else
            (device.sustained_clock if u_ref is None else None)}


def _expert_inputs(experts: Folded | None, topo: Topology, lay: Layout) -> dict:
    """The Inputs' ep, expert_tp, expert_dp, ep_nodes (the nodes one EP group spans, as its
    placement finds them), the dispatcher and its overlap (a dense model: the defaults)."""
    if experts is None:
        return {}
    spans = topo.place(experts.group("ep")).inter_node
    flex = f"flex/{lay.moe_flex_backend}" if lay.moe_dispatcher == "flex" else ""
    return {"ep": experts.ep, "expert_tp": experts.etp, "expert_dp": experts.edp,
            "ep_nodes": spans[-1].units if spans else 1,
            "moe_dispatcher": flex or lay.moe_dispatcher,
            "overlap_moe_comm": lay.overlap_moe_comm}
