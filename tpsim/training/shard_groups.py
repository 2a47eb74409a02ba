"""The process groups sharded data parallelism (ZeRO-2/3, FSDP, HSDP) runs on, beside context
parallelism and experts.

FSDP shards a weight over the ranks that hold it whole otherwise: the data-parallel ranks, with
context parallelism the dp x cp ranks (torchtitan's ``fsdp = dp_shard x cp`` mesh dimension,
``torchtitan/distributed/parallel_dims.py``; Megatron-core's dp-cp group,
:func:`tpsim.training.terms.dp_group`), and a model's folded routed experts over their expert
DP (torchtitan's ``efsdp = dp_shard cp tp / ep`` of its sparse mesh; Megatron-core's folded
expert DP, tp cp dp / (etp ep): :mod:`tpsim.spec.folding`). With HSDP (``--shard-group s`` of
the d DP ranks) each group is cut into d / s replicas (the replicate dimension outermost, as
torchtitan's ``dp_replicate``), consecutive members sharding:

    dense    shard s cp ranks, stride tp               replicas d / s, s cp members apart
    experts  shard edp s / d ranks, stride etp ep      replicas d / s, edp s / d members apart
"""
from __future__ import annotations

from ..base.errors import ConfigError
from ..spec.parallel import Group
from . import terms


def split_group(group: Group, shard: int) -> tuple[Group, Group]:
    """(the first ``shard`` members of ``group``, its size / shard members ``shard`` apart)."""
    return (Group(group.name, shard, group.stride, group.first, group.world),
            Group(group.name, group.size // shard, group.stride * shard, group.first,
                  group.world))


def dense_groups(par, stage: int, shard: int) -> tuple[Group, Group]:
    """(shard group, replica group) of pipeline stage ``stage``'s dense state: ``shard``
    members of its gradients' dp x cp group (:func:`tpsim.training.terms.dp_group`)."""
    return split_group(terms.dp_group(par, stage), shard)


def expert_groups(experts, stage: int, shard: int) -> tuple[Group, Group]:
    """(shard group, replica group) of pipeline stage ``stage``'s routed experts: ``shard``
    members of its expert-DP group (:func:`tpsim.training.terms.expert_dp_group`)."""
    return split_group(terms.expert_dp_group(experts, stage), shard)


def expert_shard(edp: int, dp: int, shard: int) -> int:
    """The ranks a stage's routed experts are sharded over: edp / (d / s) (module docstring),
    or a ConfigError naming --shard-group when the d / s replicas do not divide expert DP."""
    replicas = dp // shard
    if edp % replicas:
        raise ConfigError("--shard-group", "", f"a shard group whose {replicas} replicas divide "
                          f"the experts' data parallelism ({edp}: each replica shards the "
                          "experts over its part of it)", shard)
    return edp // replicas


def stage_experts(setup, stage: int) -> int:
    """The routed experts' parameters pipeline stage ``stage`` of a
    :class:`tpsim.training.step.StepSetup` holds (its chunks' MoE units)."""
    chunks = setup.chunks[stage::setup.parallelism.pp]
    return sum(e * u[2] for c in chunks for e, u in zip(c.experts, c.units))


def sharded_shares(params: float, experts: float, shard: int, expert_shard: int) -> float:
    """How many ways a stage's optimizer state is split when its dense ``params - experts``
    shard over ``shard`` ranks and its ``experts`` over ``expert_shard``:
    params / ((params - experts) / shard + experts / expert_shard)."""
    if not experts or expert_shard == shard:
        return shard
    return params / ((params - experts) / shard + experts / expert_shard)


__all__ = ["split_group", "dense_groups", "expert_groups", "expert_shard", "stage_experts",
           "sharded_shares"]
