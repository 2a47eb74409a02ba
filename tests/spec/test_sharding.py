"""The sharded data-parallel settings against one another (tpsim.spec.sharding)."""
import pytest

from tpsim.base.errors import ConfigError
from tpsim.spec.layout import Layout
from tpsim.spec.sharding import zero_stage


def test_the_distributed_optimizer_is_zero_1():
    assert zero_stage(0, True) == zero_stage(1, False) == zero_stage(1, True) == 1
    assert zero_stage(0, False) == 0 and zero_stage(3, False) == 3


@pytest.mark.parametrize("kw, flag", [
    (dict(zero=2, distributed_optimizer=True), "--distributed-optimizer"),
    (dict(zero=3, distributed_optimizer=True, dp=2), "--distributed-optimizer"),
    (dict(zero=2, overlap_param_gather=True), "--overlap-param-gather"),
    (dict(zero=1, dp=8, shard_group=4), "--shard-group"),
    (dict(zero=3, dp=8, shard_group=3), "--shard-group"),
    (dict(zero=2, reshard_after_forward=False), "--no-reshard-after-forward"),
    (dict(zero=2, fp8_all_gather=True), "--fp8-all-gather"),
])
def test_contradictions_are_one_error_naming_the_flag(kw, flag):
    with pytest.raises(ConfigError) as e:
        Layout(**kw)
    assert e.value.source == flag


def test_zero_1_takes_the_overlapped_param_gather():
    assert Layout(zero=1, dp=2, overlap_param_gather=True).overlap_param_gather
