"""ZeRO-2/3 beside context parallelism and beside experts (tpsim.training.shard_groups): the
shard group is the dp x cp ranks, folded experts shard over expert DP; the groups, the
per-unit collectives and the state per rank in closed form."""
import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.spec.folding import fold
from tpsim.spec.model import load_model
from tpsim.spec.model_params import expert_params, moe_layer_params
from tpsim.spec.parallel import Parallelism
from tpsim.training import data_parallel as dpm
from tpsim.training.shard_groups import expert_groups, sharded_shares
from tpsim.training.shard_state import state_bytes
from tpsim.training.sharded_dp import (Sharding, replica_group, shard_group, sharding,
                                       unit_collectives)


def test_shard_group_is_dp_times_cp():
    """tp 2 x cp 2 x dp 2: ZeRO-3 shards over the 4 dp x cp ranks, tp apart (Megatron-core's
    dp-cp group, torchtitan's dp_shard x cp); HSDP --shard-group 1 keeps the cp ranks of one
    DP rank (2 ranks) and replicates over the 2 DP ranks."""
    par = Parallelism(tp=2, cp=2, dp=2)
    sh = sharding(3, 2, None, True, False, cp=2)
    assert sh.shard == 4 and list(shard_group(par, 0, sh.shard).ranks) == [0, 2, 4, 6]
    hsdp = sharding(3, 2, 1, True, False, cp=2)
    assert hsdp.shard == 2
    assert list(shard_group(par, 0, 2).ranks) == [0, 2]
    assert list(replica_group(par, 0, 2).ranks) == [0, 4]


def test_experts_shard_over_expert_dp():
    """tp 2 x cp 2 x dp 2 folded as etp 1 x ep 4 x edp 2: experts over their 2 expert-DP
    ranks (stride etp ep = 4); HSDP with 2 replicas leaves each replica 1 (unsharded); 4
    replicas do not divide edp 2 (refused naming --shard-group)."""
    f = fold(Parallelism(tp=2, cp=2, dp=2), 4, 1, 8)
    sh = sharding(3, 2, None, True, False, cp=2, edp=f.edp)
    assert sh.expert_shard == 2
    shard, replicas = expert_groups(f, 0, sh.expert_shard)
    assert list(shard.ranks) == [0, 4] and replicas.size == 1
    assert sharding(3, 2, 1, True, False, cp=2, edp=f.edp).expert_shard == 1
    with pytest.raises(ConfigError, match="--shard-group"):
        sharding(3, 4, 1, True, False, edp=2)


def test_moe_unit_collectives_split_dense_and_experts():
    """A unit of P parameters, X of them folded experts, ZeRO-3 over s = 4, experts over 2:
    the dense part's gathers (2 (P - X) bytes each) and reduce-scatter (4 (P - X)) on the
    shard group, the experts' (2 X, 4 X) on the expert shard group."""
    P, X = 10**6, 4 * 10**5
    par = Parallelism(tp=2, cp=2, dp=2)
    f = fold(par, 4, 1, 8)
    rows = unit_collectives(P, "bf16", Sharding(3, 4, True, False, 2), par, 0, X, f)
    got = sorted((phase, op, nbytes, g.size, g.stride) for phase, op, nbytes, g in rows)
    assert got == sorted([
        ("forward", "all-gather", 2 * (P - X), 4, 2), ("backward", "all-gather", 2 * (P - X), 4, 2),
        ("backward", "reduce-scatter", 4 * (P - X), 4, 2),
        ("forward", "all-gather", 2 * X, 2, 4), ("backward", "all-gather", 2 * X, 2, 4),
        ("backward", "reduce-scatter", 4 * X, 2, 4)])


def test_state_bytes_with_experts():
    """bf16, P = 1e9 of which X = 6e8 experts, dense over s = 8, experts over 2, units of
    1e7: ZeRO-3 weights 2 (P - X)/8 + 2 X/2 + 2 x 2e7 gathered; gradients 4 (P - X)/8 +
    4 X/2 + 2 x 4e7; optimizer 12 (P - X)/8 + 12 X/2 (6 + 6 bytes: fp32 master, two moments);
    ZeRO-2 keeps whole weights; the shares are P / ((P - X)/8 + X/2)."""
    P, X, u = 10**9, 6 * 10**8, 10**7
    sh = Sharding(3, 8, True, False, 2)
    w, g, o, _ = state_bytes(P, "bf16", sh, 8, True, u, X)
    assert (w, g, o) == pytest.approx((2 * (P - X) / 8 + X + 4 * u,
                                       4 * (P - X) / 8 + 2 * X + 8 * u,
                                       12 * (P - X) / 8 + 6 * X), rel=1e-12)
    w2, _, _, _ = state_bytes(P, "bf16", Sharding(2, 8, True, False, 2), 8, True, u, X)
    assert w2 == 2 * P
    assert sharded_shares(P, X, 8, 2) == pytest.approx(P / ((P - X) / 8 + X / 2), rel=1e-12)
    assert sharded_shares(P, X, 8, 8) == 8 and sharded_shares(P, 0, 8, 2) == 8


def test_zero3_with_cp_holds_what_the_same_dp_x_cp_does():
    """llama3-8b ZeRO-3 on 8 GPUs: dp 4 x cp 2 at 16K tokens holds the weights, gradients and
    optimizer state of dp 8 at 8K (both shard 8 ways), its per-unit all-gather the same bytes
    on a group of 8."""
    a = tpsim.predict("llama3-8b", "dgx-h100", tp=1, dp=4, cp=2, seq_len=16384,
                      global_batch=8, zero=3)
    b = tpsim.predict("llama3-8b", "dgx-h100", tp=1, dp=8, seq_len=8192, global_batch=8,
                      zero=3)
    for key in ("weights_bytes", "gradients_bytes", "optimizer_bytes"):
        assert getattr(a.memory, key) == getattr(b.memory, key), key
    gathers = {(c.op, c.bytes) for c in a.dp_collectives}
    assert gathers == {(c.op, c.bytes) for c in b.dp_collectives}
    assert ("all-gather", dpm.gather_bytes(load_model("llama3-8b").layer_params(1), "bf16")) \
        in gathers


def test_zero_with_experts_shards_each_part_over_its_group():
    """Mixtral 8x7B, tp 2 x dp 4 folded as etp 1 x ep 4 x edp 2, ZeRO-3: the optimizer state
    per rank is a stage's dense parameters / 4 + its experts' / 2 (x 12 bytes), below ZeRO-1's
    (the same split: the distributed optimizer's), and ZeRO-3's weights below ZeRO-1's."""
    m = load_model("mixtral-8x7b")
    kw = dict(tp=2, sequence_parallel=True, dp=4, ep=4, expert_tp=1, seq_len=4096,
              global_batch=8)
    z3 = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", zero=3, **kw)
    z1 = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", zero=1, **kw)
    n = z3.memory.params_per_gpu
    x = m.layers * expert_params(m, 4, 1)
    assert n == m.stage_params(2, m.layers, True, True, m.layers) + m.layers * (
        moe_layer_params(m, 2, 4, 1) - moe_layer_params(m, 2))
    assert z3.memory.optimizer_bytes == pytest.approx(12 * ((n - x) / 4 + x / 2), rel=1e-12)
    assert z3.memory.optimizer_bytes == pytest.approx(z1.memory.optimizer_bytes, rel=1e-12)
    assert z3.memory.weights_bytes < z1.memory.weights_bytes
    assert z3.inputs.expert_dp == 2


PIPE = dict(tp=2, pp=4, dp=4, global_batch=64, nodes=4)


def test_pipelined_zero_runs_as_the_distributed_optimizers_collectives():
    """With a pipeline, torch's schedules reduce-scatter the accumulated gradients once after
    the backward and ZeRO-3 (no resharding) gathers each unit once, at the step's start: the
    step times of the distributed optimizer without overlapped reduction (ZeRO-2: its gather
    after the optimizer; ZeRO-3: overlapped with the first forwards), the layer listing no
    per-micro-batch collective."""
    run = lambda **kw: tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", **PIPE, **kw)
    z2, z3 = run(zero=2), run(zero=3, reshard_after_forward=False)
    assert z2.step.time_s == run(distributed_optimizer=True, overlap_grad_reduce=False) \
        .step.time_s
    assert z3.step.time_s == run(distributed_optimizer=True, overlap_grad_reduce=False,
                                 overlap_param_gather=True).step.time_s
    assert not z2.dp_collectives and not z3.dp_collectives


def test_pipelined_zero3_resharded_gathers_in_every_backward():
    """ZeRO-3 resharding after the forward: each backward gathers its unit again (the one row
    per micro-batch, 2 bytes a parameter), so the step is slower than without resharding;
    the state per rank: 2P/s sharded + 2P gathered weights, 4P whole gradients, 12P/s."""
    m = load_model("llama3-8b")
    a = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", zero=3, **PIPE)
    b = tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", zero=3, reshard_after_forward=False,
                      **PIPE)
    assert [(c.phase, c.op, c.bytes) for c in a.dp_collectives] == \
        [("backward", "all-gather", 2 * m.layer_params(2))]
    assert a.step.time_s > b.step.time_s
    P, s = a.stage_memory[1].params_per_gpu, 4
    mem = a.stage_memory[1]
    assert (mem.weights_bytes, mem.gradients_bytes, mem.optimizer_bytes) == pytest.approx(
        (2 * P / s + 2 * P, 4 * P, 12 * P / s), rel=1e-12)
    assert mem.zero == 3


@pytest.mark.parametrize("kw, flag", [(dict(shard_group=2), "--shard-group"),
                                      (dict(fp8_all_gather=True, dtype="fp8"),
                                       "--fp8-all-gather")])
def test_pipelined_zero_refuses_what_it_does_not_model(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict("llama3-8b", "dgx-h100-ndr-cluster", zero=3, **PIPE, **kw)
