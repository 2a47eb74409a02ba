"""The step's terms (tpsim.training.terms) against closed forms derived by hand, and the
simulation and the search's bound reading the same functions.

Collective terms are checked on a recording ``price`` that returns (op, bytes, group), so the
expected collective is the docstring's formula to the letter, and on the hand topology of
test_collectives (one NVLink node, 100 GB/s, 5 us per hop, no launch, ring efficiency 1): a
reduce-scatter or all-gather of S bytes on N ranks costs (N - 1) 5 us + (N - 1)/N S / 100 GB/s,
a p2p transfer 5 us + S / 100 GB/s. The toy device's elementwise kernel costs
bytes / (1000 GB/s x 0.8), no launch.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.base.schema import from_mapping
from tpsim.layer import embedding
from tpsim.search import price as search_price, step as search_step
from tpsim.search.driver import _run
from tpsim.spec.layout import Layout
from tpsim.spec.model import ModelConfig
from tpsim.spec.parallel import Group, Parallelism
from tpsim.training import step_accounting, terms
from tpsim.training.grad_buckets import split_buckets
from tpsim.training.pipeline import in_flight, pipeline_schedule
from tpsim.training.predict import predict, simulate_layer

from tests.conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 5}
TOPO = make_topology([NODE])
DEV = TOPO.device
KERNEL_BPS = 1000e9 * 0.8           # the toy device's elementwise bandwidth


def record(op, nbytes, group):
    """A ``price`` that returns what it was asked to price."""
    return (op, nbytes, group)


def gpt(**kw) -> ModelConfig:
    data = {"name": "gpt-test", "layers": 8, "hidden": 1024, "heads": 16, "vocab": 50257,
            "seq_len": 1024, "dropout": 0.1, "bias": True, "tie_embeddings": True, **kw}
    return from_mapping(ModelConfig, data, "<test>")


def test_groups():
    """Megatron order tp-cp-ep-dp-pp, tp=2 dp=2 pp=4: the pp stride is tp dp = 4. Stages 1 and 3
    pair ranks 4 and 12 (stride 2 x 4 = 8); stage 2's DP group is ranks 8, 10, its TP group 8, 9.
    The gradient norm spans the outermost model-parallel group (pp, stride 4); with pp = 1 and
    the distributed optimizer, dp (stride 2) over tp (stride 1); one rank: none."""
    par = Parallelism(tp=2, pp=4, dp=2)
    assert terms.pair_group(par, 3, 1) == Group("pp", 2, 8, 4, 16)
    assert list(terms.dp_group(par, 2).ranks) == [8, 10]
    assert list(terms.tp_group(par, 2).ranks) == [8, 9]
    assert terms.grad_norm_group(par, False).name == "pp"
    assert terms.grad_norm_group(Parallelism(tp=2, dp=4), True).name == "dp"
    assert terms.grad_norm_group(Parallelism(tp=2, dp=4), False).name == "tp"
    assert terms.grad_norm_group(Parallelism(dp=4), False) is None


def test_chunk_units_and_buckets():
    """A first chunk of 3 layers: layers then embedding; a lone stage (first and last, pp = 1)
    with tied embeddings adds the final norm only (2 h with its bias) as its output layer.
    Buckets of 40M over (30M output, 4 x 15M layers, 30M embedding), no experts (split_buckets
    reduces to Megatron-core's one buffer): 30 + 15 = 45M closes the first, 3 x 15 = 45M the
    second, the embedding is the last; no size: one bucket of all 120M."""
    m = gpt()
    lp, ep = m.layer_params(2), m.embedding_params(2)
    assert terms.chunk_units(m, 2, 3, True, False) == [("layer", lp, 3), ("embedding", ep, 1)]
    assert terms.chunk_units(m, 2, 3, True, True)[0] == ("output", 2 * 1024, 1)
    assert terms.chunk_units(m, 2, 3, False, True)[0] == ("output", 2 * 1024 + ep, 1)
    assert terms.bucket_size(8, 0) == 40_000_000 and terms.bucket_size(64, 0) == 64_000_000
    assert terms.bucket_size(8, 1) is None
    units = [("output", 30_000_000, 1), ("layer", 15_000_000, 4), ("embedding", 30_000_000, 1)]
    assert split_buckets(units, (), 40_000_000) == [
        ([(0, 1), (1, 1)], 45_000_000, 0), ([(1, 3)], 45_000_000, 0), ([(2, 1)], 30_000_000, 0)]
    assert split_buckets(units, (), None) == [([(0, 1), (1, 4), (2, 1)], 120_000_000, 0)]


def test_stage_params_and_sync():
    """pp = 2, v = 2, 2 layers per virtual stage: 4 layers per stage. Stage 0: 4 layers +
    embedding; stage 1: 4 layers + final norm (2 h) + its tied copy of the embedding. SP
    all-reduces per layer two norms (2 x 2 h) and the row-parallel biases (2 h), and the final
    norm (2 h) on the last stage: 4 x 6 h and 4 x 6 h + 2 h."""
    m, h = gpt(), 1024
    lp, ep = m.layer_params(2), m.embedding_params(2)
    assert terms.stage_params(m, 2, (2, 2, 2, 2), 2, 2) == (4 * lp + ep, 4 * lp + 2 * h + ep)
    assert terms.sp_sync_params(m, (2, 2, 2, 2), 2, 2, True) == (24 * h, 26 * h)
    assert terms.sp_sync_params(m, (2, 2, 2, 2), 2, 2, False) == (0, 0)
    assert terms.tied_embedding_params(m, 2, 2) == ep
    assert terms.tied_embedding_params(m, 2, 1) == 0
    assert terms.tied_embedding_params(gpt(tie_embeddings=False), 2, 2) == 0


def test_micro_batches_and_shards():
    """m = 1536 / (2 x 16) = 48; the optimizer shards d ways with the distributed optimizer."""
    assert terms.micro_batches(1536, 2, 16) == 48
    assert (terms.optimizer_shards(8, True), terms.optimizer_shards(8, False)) == (8, 1)


def test_warmup_and_in_flight_by_hand():
    """1F1B p = 4: warm-up 3, 2, 1, 0 (m = 8), at most m (m = 2); in flight 4 - r. Interleaved
    p = 4, v = 2: warm-up 2 (3 - r) + 4, stage 0: 10 (m = 8), all m v = 8 when m = 4. The first
    11 table entries (4 of chunk 0, 4 of chunk 1, then chunk 0 again): 7 on chunk 0, 4 on 1."""
    assert [terms.warmup_forwards(4, 1, 8, r) for r in range(4)] == [3, 2, 1, 0]
    assert terms.warmup_forwards(4, 1, 2, 0) == 2
    assert [terms.in_flight_chunks(4, 1, 8, r) for r in range(4)] == [(4,), (3,), (2,), (1,)]
    assert [terms.warmup_forwards(4, 2, 8, r) for r in range(4)] == [10, 8, 6, 4]
    assert terms.warmup_forwards(4, 2, 4, 0) == 8
    assert terms.table_forwards(10, 4, 2) == (6, 4)
    assert terms.in_flight_chunks(4, 2, 8, 0) == (7, 4)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(1, 6), st.data())
def test_in_flight_is_the_schedules(p, v, k, data):
    """The closed form is what tpsim.training.pipeline.in_flight reads off the built schedule,
    for every stage."""
    v = v if p > 1 else 1
    m = k * p if v > 1 else k
    sched = pipeline_schedule(p, m, v)
    r = data.draw(st.integers(0, p - 1))
    assert list(terms.in_flight_chunks(p, v, m, r)) == in_flight(sched, r)


def test_p2p():
    """b s h x 2 bytes (bf16, and bf16 under FP8), 4 in fp32; / tp when sharded. Stages 1 and 2
    on one node: 5 us + 1e8 B / 100 GB/s = 1005 us."""
    m = gpt()
    assert terms.activation_bytes(m, 2, 1024, "bf16") == 2 * 1024 * 1024 * 2
    assert terms.activation_bytes(m, 2, 1024, "fp8") == 2 * 1024 * 1024 * 2
    assert terms.activation_bytes(m, 2, 1024, "fp32") == 2 * 1024 * 1024 * 4
    assert terms.p2p_bytes(m, 4, 2, 1024, "bf16", True) == 2 * 1024 * 1024 * 2 / 4
    assert terms.p2p_bytes(m, 4, 2, 1024, "bf16", False) == 2 * 1024 * 1024 * 2
    place = terms.pair_place(Parallelism(tp=2, pp=4), TOPO, 1, 2)
    assert terms.p2p_s(1e8, place, TOPO) == pytest.approx(1005e-6, rel=1e-12)


def test_dp_terms():
    """Pre-scale: read and write fp32 gradients, 8 P bytes. The reduction: reduce-scatter
    (distributed optimizer) or all-reduce of 4 P bytes (fp32 main gradients of bf16), 2 P for
    fp16. On 4 ranks of the node with P = 25M: (3) 5 us + 3/4 x 1e8 / 1e11 = 765 us; the
    all-gather of 50M updated bf16 weights (1e8 B) the same."""
    P, group = 25_000_000, terms.dp_group(Parallelism(tp=2, dp=4), 0)
    assert terms.overlapped_reduce(True, 2) and not terms.overlapped_reduce(True, 1)
    assert not terms.overlapped_reduce(False, 8)
    assert terms.grad_scale_s(P, "bf16", DEV) == pytest.approx(8 * P / KERNEL_BPS, rel=1e-12)
    assert terms.grad_reduce_s(P, "bf16", True, group, record) == ("reduce-scatter", 4 * P, group)
    assert terms.grad_reduce_s(P, "bf16", False, group, record) == ("all-reduce", 4 * P, group)
    assert terms.grad_reduce_s(P, "fp16", False, group, record) == ("all-reduce", 2 * P, group)
    price = terms.collective_price(TOPO)
    assert terms.grad_reduce_s(P, "bf16", True, group, price) == pytest.approx(765e-6, rel=1e-12)
    assert terms.param_gather_s(2 * P, "bf16", True, group, price) == \
        pytest.approx(765e-6, rel=1e-12)


def test_step_end_terms():
    """SP sync and the tied embedding: all-reduces of 4 x params bytes on the stage's TP group
    and on the first and last stage's pair; absent on one rank or with nothing to reduce. The
    gradient norm: 4 P / d bytes read, then one fp32 all-reduced. The optimizer: per owned bf16
    parameter clip 8 + Adam 28 + copy 6 = 42 bytes, per held one 4 (zero the gradient):
    (42 P / d + 4 P) bytes. The all-gather: 2 P bytes with the distributed optimizer only."""
    par, P = Parallelism(tp=2, pp=4, dp=2), 1_000_000
    assert terms.sp_sync_s(P, "bf16", par, 1, record) == \
        ("all-reduce", 4 * P, terms.tp_group(par, 1))
    assert terms.sp_sync_s(0, "bf16", par, 1, record) is None
    assert terms.sp_sync_s(P, "bf16", Parallelism(pp=4), 1, record) is None
    assert terms.tied_embedding_s(P, "bf16", par, record) == \
        ("all-reduce", 4 * P, terms.pair_group(par, 0, 3))
    assert terms.tied_embedding_s(P, "bf16", Parallelism(tp=2), record) is None
    assert terms.grad_norm_s(P, 2, DEV) == pytest.approx(4 * P / 2 / KERNEL_BPS, rel=1e-12)
    assert terms.grad_norm_allreduce_s(par, True, record) == ("all-reduce", 4, par.group("pp"))
    assert terms.grad_norm_allreduce_s(Parallelism(), True, record) == 0.0
    assert terms.optimizer_s(P, 2, "bf16", DEV) == \
        pytest.approx((42 * P / 2 + 4 * P) / KERNEL_BPS, rel=1e-12)
    group = terms.dp_group(par, 0)
    assert terms.param_gather_s(P, "bf16", True, group, record) == ("all-gather", 2 * P, group)
    assert terms.param_gather_s(P, "bf16", False, group, record) is None
    assert terms.param_gather_s(P, "bf16", True, terms.dp_group(Parallelism(pp=2), 0),
                                record) is None


def test_model_ends():
    """The output layer's model FLOPs, forward and backward: 3 x 2 b s h V / tp (V the vocab
    padded to 128 tp); the embedding is a lookup (no FLOPs)."""
    m = gpt()
    sim, pricing = simulate_layer(m, TOPO, 2, 2, 1024, "bf16", False, 0.1, "fused")
    emb, out = terms.model_ends(sim, pricing, 2, False, 0.1)
    assert emb.flops == 0
    assert out.flops == 3 * 2 * 2 * 1024 * 1024 * m.padded_vocab(2) / 2


def _logit_bytes(out, phase: str) -> float:
    """Bytes the cross-entropy's kernels over the (b*s, V/tp) logits move in ``phase``."""
    return sum(r.bytes for r in out.op_rows() if r.phase == phase and "cross_entropy" in r.name
               and r.kind == "elementwise" and not r.shape.endswith("x1"))


def _cross_entropy_ends(kind: str):
    """GPT's model ends at TP 2, micro-batch 2, sequence 1024: Megatron-core's unfused
    cross-entropy, ``kind``'s, and the L = b s V / tp logits they stream."""
    m = gpt()
    sim, pricing = simulate_layer(m, TOPO, 2, 2, 1024, "bf16", False, 0.1, "fused")
    _, plain = terms.model_ends(sim, pricing, 2, False, 0.1)
    _, other = terms.model_ends(sim, pricing, 2, False, 0.1, kind)
    return plain, other, 2 * 1024 * m.padded_vocab(2) / 2


def test_fused_cross_entropy_streams_the_logits_fewer_times():
    """Megatron-core's unfused cross-entropy streams the L = b s V / tp bf16 logits at
    (2 + 4) + 4 + 8 + 8 + 4 + 8 = 38 bytes each forward and (8 + 4 + 2) = 14 backward;
    Transformer Engine's fused kernels at 2 + 2 x 2 = 6 forward (two reads, the gradient
    written in place) and 2 x 2 = 4 backward; the same FLOPs; its all-gather carries 3 fp32 per
    token from each of the tp ranks."""
    plain, te, logits = _cross_entropy_ends("te")
    assert _logit_bytes(plain, "forward") == 38 * logits
    assert _logit_bytes(plain, "backward") == 14 * logits
    assert _logit_bytes(te, "forward") == 6 * logits
    assert _logit_bytes(te, "backward") == 4 * logits
    assert te.flops == plain.flops
    gather = [r.comm_bytes for r in te.op_rows() if r.name == "fwd.cross_entropy.all-gather"]
    assert gather == [3 * 2 * 1024 * 4 * 2]


def test_flash_attn_cross_entropy_reads_the_logits_twice_forward_and_once_backward():
    """flash-attn's xentropy (llm-foundry's fused_crossentropy): the forward kernel reads the
    L = b s V / tp bf16 logits twice (max, then sum of exponentials), 4 bytes each; the
    backward reads them and writes the gradient, 4; across tp ranks an all-gather of the
    b s fp32 log-sum-exps and an all-reduce of the b s fp32 losses."""
    plain, xe, logits = _cross_entropy_ends("xentropy")
    assert _logit_bytes(xe, "forward") == 4 * logits
    assert _logit_bytes(xe, "backward") == 4 * logits
    assert xe.flops == plain.flops
    comm = {r.name: r.comm_bytes for r in xe.op_rows()
            if r.kind == "collective" and "cross_entropy" in r.name}
    assert comm == {"fwd.cross_entropy.lse.all-gather": 2 * 1024 * 4 * 2,
                    "fwd.cross_entropy.loss.all-reduce": 2 * 1024 * 4}



def test_train_metrics_stream_the_logits_after_the_backward():
    """Each of Composer's training metrics is a cross-entropy without gradient under autocast:
    an fp32 copy of the L = b s V / tp bf16 logits (2 + 4 bytes each) and log_softmax's three
    reads and one write of it (16), then METRIC_TOKEN_KERNELS small kernels; the labels'
    shift (LABEL_SHIFT_KERNELS) once. Nothing else of the output layer changes."""
    m = gpt()
    sim, pricing = simulate_layer(m, TOPO, 2, 2, 1024, "bf16", False, 0.1, "fused")
    logits = 2 * 1024 * m.padded_vocab(2) / 2
    _, xe = terms.model_ends(sim, pricing, 2, False, 0.1, "xentropy")
    for count in (1, 2):
        _, with_metrics = terms.model_ends(sim, pricing, 2, False, 0.1, "xentropy", count)
        rows = [r for r in with_metrics.op_rows() if "train_metric" in r.name]
        assert all(r.phase == "backward" for r in rows)
        assert sum(r.bytes for r in rows if not r.shape.endswith("x1")) == count * 22 * logits
        assert len(rows) == embedding.LABEL_SHIFT_KERNELS + count * (
            2 + embedding.METRIC_TOKEN_KERNELS)
        others = [r.time_s for r in with_metrics.op_rows() if "train_metric" not in r.name]
        assert others == [r.time_s for r in xe.op_rows()]


# ---- the simulation and the search's bound read the same functions

LAYOUT = dict(tp=2, pp=2, dp=2, virtual_stages=1, micro_batch=1, sequence_parallel=False,
              recompute="none", distributed_optimizer=True, tp_comm_overlap=False)


def _both():
    """predict's step time and fullest stage's bytes, and the search's bound and bytes, of
    LAYOUT for GPT-3 125M on a DGX A100, from fresh memos."""
    step_accounting._STEPS.clear()
    for f in (search_step._tail, search_step._tail_base, search_step._norm_sync,
              search_price.activation_counts):
        f.cache_clear()
    run = _run("gpt3-125m", "dgx-a100", None, None, None, 16)
    pred = predict(run.model, run.topo, global_batch=16, **LAYOUT)
    ((bound, nbytes, _),) = search_price.price_pipelines(run, [[Layout(**LAYOUT)]])[0]
    return pred.step.time_s, pred.memory.total_bytes, bound, nbytes


@pytest.mark.parametrize("term", ["optimizer_s", "grad_norm_allreduce_s"])
def test_a_term_changed_once_changes_both(monkeypatch, term):
    """One more second in a term at the step's end (every stage's optimizer; the gradient
    norm's all-reduce) is one more second of predict's step and of the search's bound."""
    t0, _, b0, _ = _both()
    original = getattr(terms, term)
    monkeypatch.setattr(terms, term, lambda *a, **k: original(*a, **k) + 1.0)
    t1, _, b1, _ = _both()
    monkeypatch.undo()
    _both()
    assert t1 - t0 == pytest.approx(1.0, rel=1e-9)
    assert b1 - b0 == pytest.approx(1.0, rel=1e-9)


def test_in_flight_changed_once_changes_both_memories(monkeypatch):
    """One more micro-batch in flight on every stage raises predict's and the search's
    fullest stage alike (the search's memory is exact)."""
    _, m0, _, n0 = _both()
    assert math.isclose(m0, n0, rel_tol=1e-12)
    original = terms.in_flight_chunks
    monkeypatch.setattr(terms, "in_flight_chunks", lambda *a: tuple(n + 1 for n in original(*a)))
    _, m1, _, n1 = _both()
    monkeypatch.undo()
    _both()
    assert m1 > m0 and math.isclose(m1, n1, rel_tol=1e-12)
