"""One training step: data parallelism, the optimizer, memory per stage, the step's accounting;
closed forms derived by hand in each docstring."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.training.data_parallel import bucket_params, buckets, grad_bytes, sync_collectives
from tpsim.training.optimizer_step import optimizer_bytes
from tpsim.base.errors import ConfigError
from tpsim.sim.memory import stage_memory
from tpsim.spec.model import ModelConfig, load_model
from tpsim.spec.parallel import Parallelism
from tpsim.training.predict import predict
from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology

A100 = load_topology("dgx-a100-hdr-cluster")
PARTS = ("compute_s", "tp_comm_exposed_s", "host_wait_s", "bubble_s", "pp_comm_exposed_s",
         "dp_comm_exposed_s", "optimizer_s")


def gpt(**kw) -> ModelConfig:
    data = {"name": "gpt-test", "layers": 8, "hidden": 1024, "heads": 16, "vocab": 50257,
            "seq_len": 1024, "dropout": 0.1, "bias": True, "tie_embeddings": True, **kw}
    return from_mapping(ModelConfig, data, "<test>")


@pytest.mark.parametrize("dtype, full, fixed, sharded", [("bf16", 18, 6, 12), ("fp16", 20, 4, 16),
                                                         ("fp32", 16, 8, 8)])
@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_zero1_state_bytes(dtype, full, fixed, sharded, d):
    """Megatron's distributed-optimizer table: bf16 18 vs 6 + 12/d bytes per parameter, fp16 20
    vs 4 + 16/d, fp32 16 vs 8 + 8/d."""
    n = 1_000_000
    plain = stage_memory(n, dtype, 0.0, 1e12)
    zero1 = stage_memory(n, dtype, 0.0, 1e12, optimizer_shards=d)
    assert plain.total_bytes == full * n
    assert zero1.total_bytes == pytest.approx((fixed + sharded / d) * n)


@pytest.mark.parametrize("d", [2, 4, 8, 16])
def test_dp_bus_bytes(d):
    """A ring all-reduce puts 2(d-1)/d of the gradient bytes on each rank's links; with the
    distributed optimizer a reduce-scatter (d-1)/d of them and an all-gather (d-1)/d of the bf16
    weights. Gradients travel in fp32 for bf16 training (4 bytes per parameter)."""
    P = 10_000_000
    group = Parallelism(tp=8, dp=d).group("dp")
    (ar,) = sync_collectives(P, "bf16", group, A100)
    assert (ar.op, ar.nbytes) == ("all-reduce", 4 * P)
    assert ar.bus_bytes == pytest.approx(2 * (d - 1) / d * 4 * P)
    rs, ag = sync_collectives(P, "bf16", group, A100, distributed_optimizer=True)
    assert (rs.op, rs.nbytes, ag.op, ag.nbytes) == ("reduce-scatter", 4 * P, "all-gather", 2 * P)
    assert rs.bus_bytes + ag.bus_bytes == pytest.approx((d - 1) / d * 6 * P)
    assert grad_bytes(P, "fp16") == 2 * P


def test_buckets_like_megatron():
    """max(40M, 1M x d) parameters; a bucket closes once it holds at least that many."""
    assert bucket_params(8) == 40_000_000 and bucket_params(64) == 64_000_000
    assert buckets([(30, 3), (5, 1), (50, 1)], 50) == [[(0, 2)], [(0, 1), (1, 1), (2, 1)]]
    assert buckets([(30, 2)], None) == [[(0, 2)]]
    assert buckets([(0, 5), (10, 7)], 25) == [[(0, 5), (1, 3)], [(1, 3)], [(1, 1)]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 9)), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(1, 200)))
def test_buckets_over_runs_equal_buckets_unit_by_unit(runs, size):
    """The run-length buckets against closing a bucket unit by unit, as Megatron-core does."""
    units = [i for i, (_, c) in enumerate(runs) for _ in range(c)]
    expect, cur, n = [], [], 0
    for i in units:
        cur.append(i)
        n += runs[i][0]
        if size is not None and n >= size:
            expect.append(cur)
            cur, n = [], 0
    expect += [cur] if cur else []
    got = [[i for i, k in pieces for _ in range(k)] for pieces in buckets(runs, size)]
    assert got == expect


def test_a_stage_of_a_billion_layers_is_not_a_billion_units():
    """Too many buckets to simulate is one ConfigError, found without walking every layer."""
    import time
    t0 = time.process_time()
    assert len(buckets([(10, 2**31 - 1)], None)) == 1
    with pytest.raises(ConfigError, match="gradient buckets"):
        buckets([(50_000_000, 2**31 - 1)], 40_000_000)
    assert time.process_time() - t0 < 2


def test_optimizer_bytes():
    """Per updated bf16 parameter: norm 4 + clip 8 + Adam 28 + copy into the bf16 weights 6 =
    46 bytes, plus zeroing the 4-byte main gradient of every held parameter."""
    b = optimizer_bytes("bf16", owned=1.0, zeroed=1.0)
    assert sum(b.values()) == 46 + 4
    assert sum(optimizer_bytes("bf16", owned=0.25, zeroed=1.0).values()) == 46 / 4 + 4


def test_first_stage_holds_p_micro_batches():
    """Korthikanti et al. 2022 section 4.2.3: with 1F1B the first stage keeps p micro-batches,
    so L/p layers x p = L layers' activations, s b h (10 + 24/t + 5 a s/(h t)) each (16-bit,
    dropout, unfused attention, no SP), plus p embedding-dropout masks of s b h bytes."""
    s, b, h, a, t, p, L = 1024, 1, 1024, 16, 2, 4, 8
    pred = predict(gpt(), A100, tp=t, pp=p, global_batch=16, attention="unfused")
    first = pred.stage_memory[0]
    layer = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert first.in_flight == p
    assert first.activations_bytes == pytest.approx(L * layer + p * s * b * h)
    assert [m.in_flight for m in pred.stage_memory] == [4, 3, 2, 1]


def test_zero1_in_a_prediction():
    pred = predict(gpt(), A100, tp=2, dp=4, distributed_optimizer=True)
    mem = pred.memory
    assert mem.optimizer_shards == 4
    assert mem.optimizer_bytes == pytest.approx(mem.params_per_gpu * 12 / 4)


def test_default_step_is_the_model_plus_the_optimizer():
    """pp = dp = 1, one micro-batch: the step is the model's forward and backward (the same
    simulated layers and ends) followed by the optimizer; no bubble, no p2p, no DP."""
    pred = predict("gpt3-1.3b", "dgx-a100", tp=1)
    st = pred.step
    assert st.micro_batches == 1 and st.bubble_s == 0 and st.dp_comm_exposed_s == 0
    assert st.compute_s + st.tp_comm_exposed_s + st.host_wait_s == pytest.approx(pred.model.step_s)
    assert st.time_s == pytest.approx(pred.model.step_s + st.optimizer_s)
    assert pred.memory == pred.stage_memory[0]


@pytest.mark.parametrize("kw", [
    dict(tp=8, pp=8, dp=4, global_batch=256),
    dict(tp=4, pp=4, dp=2, global_batch=64, virtual_stages=2, distributed_optimizer=True),
    dict(tp=2, pp=2, dp=8, global_batch=64, overlap_grad_reduce=False, sequence_parallel=True),
])
def test_every_stage_accounts_for_the_step(kw):
    pred = predict(gpt(layers=16), A100, **kw)
    st = pred.step
    for stage in st.stages:
        assert sum(getattr(stage, k) for k in PARTS) == pytest.approx(st.time_s, rel=1e-9)
        assert all(getattr(stage, k) >= -1e-12 for k in PARTS)
    assert sum(getattr(st, k) for k in PARTS) == pytest.approx(st.time_s, rel=1e-9)
    assert st.tokens_per_s == pytest.approx(kw["global_batch"] * 1024 / st.time_s)


def test_interleaving_shrinks_the_bubble():
    plain = predict(gpt(layers=16), A100, tp=2, pp=4, global_batch=8)
    inter = predict(gpt(layers=16), A100, tp=2, pp=4, global_batch=8, virtual_stages=2)
    assert inter.step.bubble_s < plain.step.bubble_s


def test_overlapping_the_grad_reduce_hides_it():
    """Buckets reduced beside the last backward leave less DP time exposed. (Not a law: the
    in-place pre-scale of each bucket runs in the backward and delays its p2p send; for a tiny
    model that can cost more than the overlap saves.)"""
    kw = dict(tp=8, pp=2, dp=8, global_batch=64)
    model = gpt(layers=16, hidden=4096, heads=32)
    on = predict(model, A100, **kw).step
    off = predict(model, A100, overlap_grad_reduce=False, **kw).step
    assert on.time_s < off.time_s
    assert on.dp_comm_exposed_s < off.dp_comm_exposed_s


def test_tied_embedding_all_reduce_only_between_stages():
    def names(pred):
        return set(pred.step_run.run.template.names)
    assert "embedding-grads.all-reduce" in names(predict(gpt(), A100, tp=2, pp=2, global_batch=4))
    assert "embedding-grads.all-reduce" not in names(predict(gpt(), A100, tp=2))
    untied = predict(gpt(tie_embeddings=False), A100, tp=2, pp=2, global_batch=4)
    assert "embedding-grads.all-reduce" not in names(untied)


def test_scatter_gather_p2p_sends_a_tp_share():
    full = predict(gpt(), A100, tp=8, pp=2, global_batch=4).step
    split = predict(gpt(), A100, tp=8, pp=2, global_batch=4, scatter_gather_p2p=True).step
    assert split.p2p_bytes * 8 == full.p2p_bytes == 1024 * 1024 * 2


@pytest.mark.parametrize("kw, flag", [
    (dict(global_batch=3, dp=2), "--global-batch"),
    (dict(pp=4, global_batch=6, virtual_stages=2), "--global-batch"),
    (dict(virtual_stages=2), "--virtual-stages"),
    (dict(pp=3), "--pp"),
    (dict(dp=0), "--dp"),
    (dict(pp=2, first_stage_layers=0), "--first-stage-layers"),
    (dict(distributed_optimizer="yes"), "--distributed-optimizer"),
    (dict(tp_comm_overlap=True), "--tp-comm-overlap"),
    (dict(nodes=0), "--nodes"),
])
def test_bad_step_settings(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        predict(gpt(), A100, **{"tp": 2, **kw})


def test_too_small_a_cluster_says_how_many_nodes():
    with pytest.raises(ConfigError, match="128 nodes of 8"):
        predict("gpt3", A100, tp=8, pp=8, dp=16, global_batch=1536)
    pred = predict("gpt3", A100, tp=8, pp=8, dp=16, global_batch=1536, nodes=128,
                   recompute="full")
    assert pred.inputs.gpus == 1024 and pred.memory.fits


def test_idle_split_by_hand():
    """[0, 10]: compute busy [0, 2] and [6, 7]; p2p [1, 4]; DP [3, 8]. Free time: [2, 6] and
    [7, 10]; p2p covers [2, 4] (2), DP the rest it runs, [4, 6] and [7, 8] (3); bubble [8, 10] (2)."""
    from tpsim.training.step_accounting import idle_split
    (pp, dp), bubble = idle_split(0.0, 10.0, [(0, 2), (6, 7)], [[(1, 4)], [(3, 8)]])
    assert (pp, dp, bubble) == (2.0, 3.0, 2.0)
    (pp, dp), bubble = idle_split(5.0, 10.0, [(0, 2), (6, 7)], [[(1, 4)], [(3, 8)]])
    assert (pp, dp, bubble) == (0.0, 2.0, 2.0)


@pytest.mark.parametrize("tied", [True, False])
def test_stage_params_add_up(tied):
    """The stages hold every layer once, the embedding on the first, the final norm and output
    layer on the last; tied embeddings add one copy of the embedding on the last stage when it
    is not also the first (pp > 1), which Megatron keeps equal with an all-reduce."""
    m = gpt(layers=12, tie_embeddings=tied)
    t = 4
    whole = m.params_per_rank(t)
    split = sum(m.stage_params(t, n, r == 0, r == 2) for r, n in enumerate((4, 4, 4)))
    assert split == whole + (m.embedding_params(t) if tied else 0)
    assert m.stage_params(t, 12) == whole
    assert m.embedding_params(t) == m.padded_vocab(t) // t * 1024


def test_the_largest_layer_count_predicts_in_bounded_time():
    """2^31 - 1 layers (the loader's bound) predict without a list per layer; with data
    parallelism their hundreds of millions of gradient buckets are one ConfigError."""
    import dataclasses
    import time
    model = dataclasses.replace(load_model("gpt2"), layers=2**31 - 1)
    t0 = time.process_time()
    assert predict(model, "dgx-a100", tp=1).step.time_s > 0
    with pytest.raises(ConfigError, match="gradient buckets"):
        predict(model, "dgx-a100", tp=1, dp=2)
    assert time.process_time() - t0 < 5


@settings(max_examples=30, deadline=None)
@given(tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2, 4]),
       micro_batch=st.sampled_from([1, 2]), v=st.sampled_from([1, 2]), per=st.sampled_from([1, 2, 8]),
       flags=st.tuples(*[st.booleans()] * 5))
def test_the_parts_add_up_to_the_step(tp, pp, dp, micro_batch, v, per, flags):
    """Every stage's compute, exposed TP, host wait, bubble, exposed PP and DP and optimizer
    add up to the step time (and so does their mean), whatever the layout: scatter/gather
    p2p (its all-gather ahead of the last backward's gradient buckets), interleaving, the
    DP reduction after the backward, the distributed optimizer and its overlapped gather."""
    sg, overlap, do, opg, sp = flags
    kw = dict(tp=tp, pp=pp, dp=dp, micro_batch=micro_batch, virtual_stages=v,
              global_batch=micro_batch * dp * per * pp, scatter_gather_p2p=sg,
              overlap_grad_reduce=overlap, distributed_optimizer=do,
              overlap_param_gather=do and opg, sequence_parallel=sp and tp > 1 and not sg)
    try:
        st_ = predict(gpt(layers=16), A100, **kw).step
    except ConfigError:
        return
    for part in (st_, *st_.stages):
        assert sum(getattr(part, k) for k in PARTS) == pytest.approx(st_.time_s, rel=1e-9)
