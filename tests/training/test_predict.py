"""predict() and predict_block(): results that follow from the graph, the schedule and the cost
models by hand; memory by hand for a small model; bad input as one ConfigError."""
from __future__ import annotations

import math

import pytest

from tpsim.cost.collectives import collective_time
from tpsim.base.errors import ConfigError
from tpsim.spec.model import ModelConfig, load_model
from tpsim.training.predict import predict, predict_block
from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology

H100 = load_topology("dgx-h100")


def small(**kw) -> ModelConfig:
    data = {"name": "small", "layers": 2, "hidden": 64, "heads": 4, "vocab": 1000, "seq_len": 32,
            "tie_embeddings": True, **kw}
    return from_mapping(ModelConfig, data, "<test>")


@pytest.fixture(scope="module")
def gpt3():
    return predict("gpt3", "dgx-h100", tp=8)


def test_gpt3_collectives(gpt3):
    """Megatron TP without SP: 2 forward and 2 backward all-reduces of b*s*h*2 = 50,331,648 B."""
    rows = [(c.op, c.phase, c.count, c.bytes) for c in gpt3.collectives]
    assert rows == [("all-reduce", "forward", 2, 50331648), ("all-reduce", "backward", 2, 50331648)]
    assert gpt3.collectives[0].time_s == collective_time("all-reduce", 50331648, 8, H100).time_s
    assert gpt3.inputs.heads_per_rank == 12


def test_predict_layer_is_predict_layer_times(gpt3):
    from tpsim.training.predict import predict_layer
    assert predict_layer("gpt3", "dgx-h100", tp=8) == gpt3.layer


def test_gpt3_layer_accounting(gpt3):
    """total = forward + backward = makespan; comm = 4 all-reduces; on H100 the forward
    all-reduces block the next op and the backward ones hide behind the (longer) wgrads, so the
    exposed communication is exactly the two forward all-reduces."""
    L = gpt3.layer
    assert L.total_s == pytest.approx(L.forward_s + L.backward_s)
    assert L.total_s == pytest.approx(max(o.end_s for o in gpt3.ops))
    ar = gpt3.collectives[0].time_s
    assert L.comm_s == pytest.approx(4 * ar)
    assert L.exposed_comm_s == pytest.approx(2 * ar)
    assert L.compute_s + L.exposed_comm_s == pytest.approx(L.total_s)
    assert L.comm_share == pytest.approx(L.comm_s / L.total_s)
    ops = {o.name: o for o in gpt3.ops}
    wgrad, bar = ops["bwd.mlp_in.wgrad"], ops["bwd.mlp_in.all-reduce"]
    assert bar.start_s == wgrad.start_s and bar.end_s < wgrad.end_s   # the Megatron overlap


def test_gpt3_model_level(gpt3):
    """step = 96 layers + embedding + output; MFU = model FLOPs / step / 989.4 TFLOP/s; model
    FLOPs per GPU ~ (6 N tokens + attention) / 8 within 2% (N = 174.6e9, tokens = 2048)."""
    m = gpt3.model
    assert m.step_s == pytest.approx(96 * gpt3.layer.total_s + m.embedding_s + m.output_s)
    assert m.mfu == pytest.approx(m.flops / m.step_s / 989.4e12)
    assert m.tflops_per_gpu == pytest.approx(m.flops / m.step_s / 1e12)
    six_n = (6 * 174.6e9 * 2048 + 96 * 12 * 2048 ** 2 * 12288) / 8
    assert m.flops == pytest.approx(six_n, rel=0.02)
    assert not gpt3.memory.fits
    (notice,) = [w for w in gpt3.warnings if w.code == "memory_does_not_fit"]
    assert notice.values["needed_bytes"] == gpt3.memory.total_bytes
    assert notice.values["capacity_bytes"] == 79.11 * 2**30          # H100 "80 GB": 80 GiB HBM
    assert notice.values["usable_bytes"] == gpt3.memory.capacity_bytes - gpt3.memory.reserved_bytes


def test_tp1_has_no_communication():
    p = predict("gpt2", "dgx-h100", tp=1)
    assert p.collectives == () and p.layer.comm_s == 0 and p.layer.exposed_comm_s == 0
    assert all(o.stream == "compute" for o in p.ops if o.kind != "host-wait")
    assert {o.stream for o in p.ops if o.kind == "host-wait"} <= {"host"}


def test_memory_by_hand():
    """small model, tp 2, bf16: per layer (64*192 + 64*64 + 2*64*256)/2 + 2*128 = 24832;
    2 layers 49664; tied embedding padded to 1024 rows (128*2): 1024*64/2 = 32768; final norm
    128: 82560 parameters. Bytes: 2 + 4 + 12 = 18 per parameter: 165120 weights, 330240
    gradients, 990720 optimizer."""
    m = small()
    assert m.params_per_rank(2) == 82560
    p = predict(m, "dgx-h100", tp=2)
    mem = p.memory
    assert (mem.weights_bytes, mem.gradients_bytes, mem.optimizer_bytes) == (165120, 330240, 990720)
    assert mem.total_bytes == pytest.approx(165120 + 330240 + 990720 + mem.activations_bytes)
    assert mem.fits and mem.capacity_bytes == 79.11 * 2**30


def test_activation_memory_by_hand():
    """small, no dropout, fused, tp 2, b 1, s 32, h 64: per layer s b h (10 + 24/2) - 2 s b h
    (no dropout masks) = 32*64*20 = 40960 bytes; 2 layers 81920. Output layer keeps the final
    norm input (32*64*2 = 4096), the logits GEMM input (4096) and the fp32 softmax over
    1024/2 words (32*512*4 = 65536): 81920 + 73728 = 155648."""
    p = predict(small(), "dgx-h100", tp=2)
    assert p.memory.activations_bytes == 155648


def test_fused_cross_entropy_keeps_its_gradient_in_bf16():
    """As above with Transformer Engine's fused cross-entropy: the bf16 gradient it writes over
    the logits (32*512*2 = 32768) instead of the fp32 softmax: 155648 - 32768 = 122880."""
    p = predict(small(), "dgx-h100", tp=2, cross_entropy="te")
    assert p.memory.activations_bytes == 122880


def test_sequence_parallel_same_bytes_similar_time():
    plain = predict("gpt3", "dgx-h100", tp=8)
    sp = predict("gpt3", "dgx-h100", tp=8, sequence_parallel=True)
    assert {c.op for c in sp.collectives} == {"all-gather", "reduce-scatter"}
    assert sum(c.count for c in sp.collectives) == 10    # + 2 backward re-gathers of inputs
    assert sp.memory.activations_bytes < plain.memory.activations_bytes
    assert sp.layer.total_s == pytest.approx(plain.layer.total_s, rel=0.1)


def test_crossing_nodes_costs_more():
    """The same per-rank work over InfiniBand: TP 16 on a cluster spans 2 nodes."""
    p = predict("gpt3", "dgx-a100-hdr-cluster", tp=16)
    assert p.inputs.nodes == 2
    assert [w.values for w in p.warnings if w.code == "tp_spans_nodes"] == [
        {"tp": 16, "nodes": 2, "level": "infiniband"}]
    within = predict("gpt3", "dgx-a100-hdr-cluster", tp=8)
    assert p.collectives[0].time_s > within.collectives[0].time_s


def test_unfused_attention_pays_for_the_scores():
    fused = predict("gpt3", "dgx-h100", tp=8)
    unfused = predict("gpt3", "dgx-h100", tp=8, attention="unfused")
    assert unfused.layer.total_s > fused.layer.total_s
    assert unfused.layer.flops == fused.layer.flops       # same conventional FLOPs
    assert unfused.memory.activations_bytes > fused.memory.activations_bytes


def test_json_has_the_documented_keys(gpt3):
    from tpsim.report.render import prediction_json
    d = prediction_json(gpt3)
    for key in ("forward_s", "backward_s", "total_s", "compute_s", "comm_s", "exposed_comm_s",
                "comm_share"):
        assert isinstance(d["layer"][key], float)
    for c in d["collectives"]:
        assert {"op", "phase", "count", "bytes", "time_s"} <= set(c)
    assert len(d["ops"]) == len(gpt3.ops) and {"start_s", "end_s", "stream"} <= set(d["ops"][0])
    assert all(o["formula"].startswith("tpsim.") for o in d["ops"])
    assert {o["group"] for o in d["ops"] if o["kind"] == "collective"} == {"tp"}
    assert [w["code"] for w in d["notices"]] == ["memory_does_not_fit"]
    assert d["warnings"][0].startswith("does not fit: 395.4 GiB per GPU needed")
    assert {"capacity_bytes", "reserved_bytes"} <= set(d["memory"])
    assert {"step_s", "tflops_per_gpu", "mfu"} <= set(d["model"])
    assert {"total_bytes", "fits"} <= set(d["memory"])


@pytest.mark.parametrize("block", ["mlp", "attention"])
def test_predict_block(block):
    b = predict_block("gpt3", "dgx-h100", 8, block)
    assert b.total_s == pytest.approx(b.forward_s + b.backward_s)
    assert [o.collective for o in b.ops if o.collective] == ["all-reduce", "all-reduce"]
    assert not [o for o in b.ops if "norm" in o.name or "residual" in o.name or "dropout" in o.name]
    ar = collective_time("all-reduce", 2048 * 12288 * 2, 8, H100).time_s
    assert b.comm_s == pytest.approx(2 * ar)


def test_predict_block_swiglu_sp():
    b = predict_block("llama3-8b", "dgx-h100", 4, "mlp", seq_len=1024, sequence_parallel=True)
    assert [o.collective for o in b.ops if o.collective] == \
        ["all-gather", "reduce-scatter", "all-gather", "all-gather", "reduce-scatter"]
    mlp_in = next(o for o in b.ops if o.name == "fwd.mlp_in")
    assert mlp_in.shape == "1024x4096 @ 4096x7168"      # gate and up: 2 * 14336 / 4


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "llama2-13b", "tp": 16, "topology": "dgx-h100-ndr-cluster"}, "heads"),
    ({"model": "gpt3", "dropout": "0.1"}, "--dropout"),
    ({"model": "gpt3", "sequence_parallel": "no"}, "--sequence-parallel"),
    ({"model": "gpt3", "tp": 16}, "at most the 8 GPUs of dgx-h100"),
    ({"model": "gpt5"}, "a shipped model"),
    ({"model": "gpt3", "topology": "dgx-z100"}, "dgx-a100"),
    ({"model": "gpt3", "micro_batch": 0}, "--micro-batch"),
    ({"model": "gpt3", "seq_len": -1}, "--seq"),
    ({"model": "gpt3", "dtype": "int4"}, "--dtype"),
    ({"model": "gpt3", "attention": "sparse"}, "--attention"),
    ({"model": "gpt3", "tp": 0}, "--tp"),
    ({"model": "gpt3", "tp": 5}, "heads"),
    ({"model": "gpt3", "tp": 8, "seq_len": 2044, "sequence_parallel": True}, "sequence length"),
])
def test_bad_input(kwargs, match):
    kwargs = {"topology": "dgx-h100", **kwargs}
    with pytest.raises(ConfigError, match=match):
        predict(**kwargs)


def test_speed_sanity():
    """Well under a millisecond per prediction on any machine this runs on (the bench measures)."""
    import time
    m, t = load_model("gpt3"), H100
    predict(m, t, tp=8)
    t0 = time.perf_counter()
    for _ in range(50):
        predict(m, t, tp=8)
    assert (time.perf_counter() - t0) / 50 < 0.01
    assert math.isfinite(predict(m, t, tp=8).model.mfu)


def test_tpsim_predict_is_callable_in_any_import_order():
    """`tpsim.predict(...)` is the function whichever module is imported first."""
    import tpsim
    import tpsim.training.predict as module  # noqa: F401
    assert tpsim.predict("gpt2", "dgx-h100", tp=2).inputs.tp == 2


def test_inputs_layout_runs_the_same_job_again():
    """inputs.layout holds every setting away from its default: predict with it alone gives the
    same step, and a default setting is not in it."""
    kw = dict(tp=2, pp=2, dp=2, global_batch=16, recompute="selective", overlap_grad_reduce=False,
              cross_entropy="xentropy", train_metrics=2)
    first = predict("llama2-7b", "dgx-h100", **kw)
    layout = first.inputs.layout
    assert {k: layout[k] for k in kw} == kw and "zero" not in layout
    again = predict("llama2-7b", "dgx-h100", **layout)
    assert again.step.time_s == first.step.time_s
    assert predict("llama2-7b", "dgx-h100", **{**layout, "dp": 1, "global_batch": 8}) \
        .step.time_s != first.step.time_s
