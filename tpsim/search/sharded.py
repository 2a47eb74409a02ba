"""The search's bound for ZeRO-2/3 layouts (:mod:`tpsim.training.sharded_dp`): the layer's
forward and backward times the bound reads, raised to what the unit-by-unit all-gathers and
reduce-scatters force on every chunk, and still a lower bound of the simulated step.

In a chunk of k layers (and its ends), unit i's compute starts at S_i >= C_i-1 and after its
all-gather, which is issued at S_i-1 on the in-order communication stream, so from the first
layer's start to the last layer's end the forward takes at least (k - 1) max(f, g) + f, and
the backward, whose stream also runs the reduce-scatters of the layers before,
max(k b, (k - 1) g' + (k - 2) r + b) (f, b: the layer's forward and backward; g, g', r: its
all-gathers and reduction, :func:`tpsim.training.sharded_dp.unit_comm`); with the compute
slowed beside them (the device's comm_compute_interference I), each forward unit but the last
takes at least max(f + I g, g) and each backward unit but the ends max(b + I (r + g'), r + g'). Per layer these are
f'(k) and b'(k); the bound takes the least over the pipeline's chunk sizes k, the unit's
collectives sharded over the dp x cp ranks: a model whose every layer carries experts, its
MoE unit's (the folded experts' part on expert DP); else the fewer of the dense layer's
parameters and an MoE layer's other than its folded experts' (the experts' collectives come on
top); and it drops the first all-gather and the last reduction (both lower it), and FSDP's
copies on the compute stream (``--fsdp-flat-params``, ``--fsdp2-copies``:
:mod:`tpsim.training.fsdp_copies`, which only lengthen the chunks), so every chunk's bound
stays below its simulated time.
"""
from __future__ import annotations

from dataclasses import replace

from ..spec.model_params import moe_layer_params, moe_layers
from ..spec.parallel import Parallelism
from ..training import terms
from ..training.sharded_dp import Sharding, unit_comm


def layer_times(f: float, b: float, g: float, g2: float, r: float, k: int,
                interference: float = 0.0) -> tuple[float, float]:
    """(f'(k), b'(k)) of the module docstring: per-layer lower bounds in a chunk of k layers,
    each compute beside c seconds of collectives slowed to max(x + I c, c) (``interference``
    I: :func:`tpsim.sim.schedule.slowed_end` ends x beside c at x + I c, or x / (1 - I) < c)."""
    fwd = ((k - 1) * max(f + interference * g, g) + f) / k
    if k == 1:
        return fwd, b
    mid = r + g2
    bwd = (max(b + interference * g2, g2) + (k - 2) * max(b + interference * mid, mid) + b) / k
    return fwd, max(b, bwd)


def sharded_parts(parts, run, price, tp: int, pp: int, dp: int, zero: int, sizes, ep: int = 1,
                  expert_tp: int | None = None):
    """``parts`` (:class:`tpsim.search.parts.Parts`) with the layer's times raised as the
    module docstring says, for ZeRO ``zero`` over ``dp`` (the dp x cp ranks) and the chunks'
    layer counts ``sizes``, the MoE layers folded ``ep`` x ``expert_tp``; unchanged below
    ZeRO-2 or at dp 1."""
    if zero < 2 or dp == 1:
        return parts
    sizes = [k for k in sizes if k > 0]
    if not sizes:
        return parts
    model, par = run.model, Parallelism(tp=tp, pp=pp, dp=dp)
    params, expert, experts = model.layer_params(tp), 0, None
    sh = Sharding(zero, run.setting("shard_group") or dp)      # HSDP: its shard group (cp 1)
    if model.moe:
        experts, etp = run.folded(par, ep, expert_tp), expert_tp or tp
        expert = terms.expert_unit_params(model, experts)
        moe = moe_layer_params(model, tp, ep, etp, experts.gate_weight)
        if moe_layers(model) < model.layers:
            params, expert = min(params, moe - expert), 0
        else:
            params, sh = moe, Sharding(zero, dp, True, False, experts.edp)
    sh = replace(sh, pipelined=pp > 1 and not run.setting("fsdp_sync_every_micro_batch"),
                 fp32_params=run.setting("fsdp_fp32_params"),
                 reshard_after_forward=run.setting("reshard_after_forward"),
                 fp8_all_gather=run.setting("fp8_all_gather"),
                 expert_bf16=run.setting("expert_grad_reduce_in_bf16"))
    comm = sh.per_micro_batch(unit_comm(params, run.dtype, sh, par, 0, price, expert, experts))
    L = parts.layer
    i = run.topo.device.comm_compute_interference
    fs = min(layer_times(L.forward_s, L.backward_s, *comm, k, i)[0] for k in set(sizes))
    bs = min(layer_times(L.forward_s, L.backward_s, *comm, k, i)[1] for k in set(sizes))
    return replace(parts, layer=replace(L, forward_s=fs, backward_s=bs))
