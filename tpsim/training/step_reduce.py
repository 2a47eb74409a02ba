"""The DP reductions of a step's gradient buckets, priced once, for :mod:`tpsim.training.step`.

A bucket's reduction is its parameters' main gradients reduced on its stage's dp x cp group,
then its routed experts' on expert DP (:func:`reduce_seconds`:
:func:`tpsim.training.terms.grad_reduce_s` in :func:`tpsim.training.terms.dp_and_expert_s`).
With overlap_grad_reduce the buckets are the cuts of each chunk's last backward
(:func:`tpsim.training.step._buckets`), and :func:`bucket_reductions` prices one (stage,
chunk)'s once per step into a scratch dict (the timed step's ``reductions``): the one-pass walk
(:mod:`tpsim.training.step_timing`) reads them to time the DP intervals that slow the compute
beside them, and :func:`dp_reduce` reads the same seconds to add the reductions as ops of the
step's graph, the timed one and the op-by-op one (which reads the timed step's dict). Without it
the stage's one reduction of all its gradients, after its whole backward, is priced in
:func:`dp_reduce` alone (the walk does not time it).
"""
from __future__ import annotations

from . import data_parallel as dpm
from . import terms
from .grad_buckets import prescale_s, reduce_ranks
from .shard_groups import stage_experts
from ..cluster.topology import Topology


def stage_reduction(dtype: str, do: bool, par, price, experts, stage: int):
    """``seconds(params, expert)``: a gradient bucket's reduction on stage ``stage``'s dp x cp
    group, its routed experts' on expert DP (:func:`tpsim.training.terms.dp_and_expert_s` of
    :func:`tpsim.training.terms.grad_reduce_s`), ``do`` the distributed optimizer, ``price``
    the collectives' pricer; the step's (:func:`reduce_seconds`) and the search's bound's
    (:func:`tpsim.search.dp_events.reducer`)."""
    group = terms.dp_group(par, stage)
    egroup = terms.expert_dp_group(experts, stage) if experts else None
    return lambda params, expert: terms.dp_and_expert_s(
        lambda n, grp: terms.grad_reduce_s(n, dtype, do, grp, price), params, expert, group,
        egroup)


def reduce_seconds(setup, topo: Topology, stage: int):
    """:func:`stage_reduction` in the step of ``setup`` (a
    :class:`tpsim.training.step.StepSetup`)."""
    return stage_reduction(setup.precision, setup.distributed_optimizer, setup.parallelism,
                           terms.collective_price(topo), setup.experts, stage)


def bucket_reductions(setup, topo: Topology, buckets, priced: dict):
    """``reductions(stage, chunk)``: the seconds of each bucket's reduction after the cuts
    ``buckets(stage, chunk)`` of that chunk's last backward ((seconds, params, expert) each:
    :func:`reduce_seconds` of its params and expert params), priced on the first call and kept
    in ``priced`` under (stage, chunk), where every later call (the walk's, :func:`dp_reduce`'s)
    reads them."""
    def reductions(stage: int, chunk: int) -> list:
        out = priced.get((stage, chunk))
        if out is None:
            seconds = reduce_seconds(setup, topo, stage)
            out = priced[stage, chunk] = [seconds(n, e) for _, n, e in buckets(stage, chunk)]
        return out
    return reductions


def dp_reduce(g, setup, topo: Topology, stage: int, stage_ops, reductions) -> list:
    """The stage's gradient collectives, added to ``g`` on its DP stream: with
    overlap_grad_reduce one per bucket of each chunk's last backward, after its pre-scale
    kernel, ``reductions(stage, chunk)`` long (:func:`bucket_reductions`: the seconds the walk
    timed); else one of all the stage's gradients after its backward and its pre-scale. Returns
    the ops the optimizer waits for (ZeRO-2/3 or a one-rank group: the stage's last ops)."""
    par, dtype = setup.parallelism, setup.precision
    if reduce_ranks(par, setup.experts) == 1 or setup.sharding.per_unit:  # ZeRO-2/3: in chunks
        return list(stage_ops.end)
    op, stream, block = dpm.reduce_op(setup.distributed_optimizer), f"stage{stage}.dp", \
        f"stage{stage}"

    def reduce(name, seconds, after):
        return g.add(f"s{stage}.{name}.{op}", stream, seconds, after, "step", block, "dp")
    if not setup.overlap_grad_reduce:
        params = setup.stage_params[stage]
        scale = g.add(f"s{stage}.grad-scale", f"stage{stage}",
                      prescale_s(params, dtype, topo.device, terms.grad_ranks(par)),
                      stage_ops.end, "step", block, "dp")
        seconds = reduce_seconds(setup, topo, stage)(params, stage_experts(setup, stage))
        return [reduce("grads", seconds, (scale,))]
    out = []
    for chunk, ids in stage_ops.last_backward.items():
        for k, seconds in enumerate(reductions(stage, chunk)):
            scale = ids[2 * k + 1]
            g.set_kind(scale, "dp")
            out.append(reduce(f"chunk{chunk}.bucket{k}", seconds, (scale,)))
    return out
