"""What the sharded data-parallel settings of a :class:`~tpsim.spec.layout.Layout` allow of one
another: the ZeRO stage (``zero``), Megatron's distributed optimizer, FSDP's settings.

``--distributed-optimizer`` is Megatron-core's name for ZeRO-1 (its DistributedOptimizer shards
the fp32 master weights and Adam moments over DP, keeps the whole main-gradient buffer and
reduce-scatters it): ``zero=1``, ``distributed_optimizer=True`` or both are the same run
(:func:`zero_stage`). With ``zero`` 2 or 3 the gradients are sharded too, which the
distributed optimizer does not do, so the two together are refused.
"""
from __future__ import annotations

from ..base.errors import ConfigError


def zero_stage(zero: int, distributed_optimizer: bool) -> int:
    """The run's ZeRO stage: ``zero``, or 1 with the distributed optimizer (ZeRO-1)."""
    return max(zero, int(distributed_optimizer))


def check_sharding(lay) -> None:
    """One ConfigError naming the flag for settings that contradict one another (the module
    docstring); the shard group against dp; the FSDP settings only with ZeRO-3."""
    stage = zero_stage(lay.zero, lay.distributed_optimizer)
    if lay.distributed_optimizer and lay.zero > 1:
        raise ConfigError("--distributed-optimizer", "", f"off with --zero {lay.zero} (the "
                          "distributed optimizer is ZeRO-1: it keeps whole gradients)", True)
    if lay.overlap_param_gather and stage != 1:
        raise ConfigError("--overlap-param-gather", "", "--distributed-optimizer or --zero 1 "
                          "(the distributed optimizer's all-gather of the updated weights)",
                          lay.overlap_param_gather)
    if lay.shard_group is not None:
        if stage < 2:
            raise ConfigError("--shard-group", "", "--zero 2 or 3 (HSDP shards gradients and "
                              "weights within a group)", lay.shard_group)
        if lay.dp % lay.shard_group:
            raise ConfigError("--shard-group", "", f"a divisor of --dp {lay.dp}",
                              lay.shard_group)
    if not lay.reshard_after_forward and stage != 3:
        raise ConfigError("--no-reshard-after-forward", "", "--zero 3 (only ZeRO-3 gathers "
                          "the weights per unit)", False)
    if lay.fsdp_flat_params and lay.fsdp2_copies:
        raise ConfigError("--fsdp2-copies", "", "off with --fsdp-flat-params (FSDP2 or FSDP1, "
                          "not both)", True)
    if lay.fp8_all_gather and stage != 3:
        raise ConfigError("--fp8-all-gather", "", "--zero 3 (the weights' per-unit all-gather)",
                          True)


__all__ = ["zero_stage", "check_sharding"]
