"""The linears' backward as Megatron-LM of 2021 ran it (``backward=(False, False)``): the TP
all-reduce of the input gradient after the weight-gradient GEMM, and each new weight gradient
added into the parameter's 16-bit ``.grad`` by a kernel of its own."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.layer.dims import layer_dims
from tpsim.layer.graph import layer_template
from tpsim.spec.layout import Layout
from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict

H, TP, B, S = 512, 4, 2, 256
MODEL = ModelConfig(name="toy-gpt", layers=4, hidden=H, heads=8, vocab=1024, seq_len=S,
                    dropout=0.1, bias=True)
LINEARS = ("qkv", "proj", "mlp_in", "mlp_out")


def graph(backward):
    dims = layer_dims(MODEL, TP, B, S, "fp16")
    tpl = layer_template(True, attention="unfused", bias=True, backward=backward)
    return tpl.digraph(dims, tp=TP, dropout=0.1)


@pytest.mark.parametrize("linear", ["qkv", "mlp_in"])
def test_the_input_gradient_is_reduced_after_wgrad_in_2021(linear):
    """Column-parallel: Megatron-core reduces dX beside wgrad (the all-reduce waits on dgrad
    only); Megatron-LM 2021's autograd order runs it after wgrad and its accumulation."""
    now, old = graph((True, True)), graph((False, False))
    reduce = f"bwd.{linear}.all-reduce"
    assert set(now.predecessors(reduce)) >= {f"bwd.{linear}.dgrad"}
    assert f"bwd.{linear}.wgrad" not in set(now.predecessors(reduce))
    assert f"bwd.{linear}.grad_accumulate" in set(old.predecessors(reduce))
    assert old.nodes[reduce]["op"].nbytes == now.nodes[reduce]["op"].nbytes


def test_unfused_accumulation_adds_three_weight_copies():
    """Without the fusion each wgrad GEMM writes its 16-bit output (not += fp32) and an add
    reads both gradients and writes one: 3 x 2 bytes x the rank's 12 h^2 / t weights."""
    now, old = graph((True, True)), graph((False, False))
    adds = [a["op"] for n, a in old.nodes(data=True) if n.endswith(".grad_accumulate")]
    assert len(adds) == len(LINEARS)
    assert sum(op.nbytes for op in adds) == 3 * 2 * 12 * H * H // TP
    assert not any(n.endswith(".grad_accumulate") for n in now)
    for name in LINEARS:
        assert now.nodes[f"bwd.{name}.wgrad"]["op"].accumulate
        assert not old.nodes[f"bwd.{name}.wgrad"]["op"].accumulate


def test_the_2021_backward_is_slower_and_one_switch_each_adds():
    """Each 2021 switch only adds work or exposure to the step (a layer large enough that the
    GPU, not the host, sets its pace)."""
    big = ModelConfig(name="gpt-4k", layers=4, hidden=4096, heads=32, vocab=1024, seq_len=2048,
                      dropout=0.1, bias=True)
    kw = dict(tp=TP, dp=2, global_batch=8, micro_batch=1, dtype="fp16", attention="unfused")
    both = predict(big, "dgx-a100", **kw).step.time_s
    steps = [predict(big, "dgx-a100", async_tensor_model_parallel_allreduce=a,
                     gradient_accumulation_fusion=f, **kw).step.time_s
             for a, f in ((False, True), (True, False), (False, False))]
    assert both < steps[0] < steps[2] and both < steps[1] < steps[2]


@pytest.mark.parametrize("global_batch, share", [(None, 0.0), (2, 0.0), (8, 0.75), (64, 31 / 32)])
def test_a_steps_first_micro_batch_adds_nothing(global_batch, share):
    """Of m micro-batches, the first keeps its new gradient (AccumulateGrad): the adds run on
    m - 1, priced as (m - 1)/m of one per micro-batch (dp 2, micro-batch 1: m = global/2)."""
    lay = Layout(tp=TP, dp=2, global_batch=global_batch, gradient_accumulation_fusion=False,
                 main_grad_add=False)
    assert lay.backward == (True, False, share, False)
    assert Layout(tp=TP, dp=2, global_batch=global_batch).backward == (True, True, 1.0, False)
    dims = dataclasses.replace(layer_dims(MODEL, TP, B, S, "fp16"), grad_adds=share)
    tpl = layer_template(True, attention="unfused", bias=True, backward=(True, False))
    g = tpl.digraph(dims, tp=TP, dropout=0.1)
    adds = sum(a["op"].nbytes for n, a in g.nodes(data=True) if n.endswith(".grad_accumulate"))
    assert adds == pytest.approx(share * 3 * 2 * 12 * H * H / TP)


@pytest.mark.parametrize("global_batch", [None, 8])
def test_megatron_cores_add_into_the_fp32_main_gradient(global_batch):
    """Megatron-core's DDP hook adds every micro-batch's 16-bit weight gradient into the fp32
    main gradient: read 2 + 4, write 4 = 10 bytes a weight (fp16), 12 H^2 / tp weights a
    layer; ZeRO-2/3 keep autograd's (m - 1)/m; with the fusion nothing is added apart."""
    lay = Layout(tp=TP, dp=2, global_batch=global_batch, gradient_accumulation_fusion=False)
    assert lay.backward == (True, False, 1.0, True)
    assert lay.replace(zero=2).backward[2:] == (lay.replace(main_grad_add=False).backward[2],
                                                False)
    assert lay.replace(gradient_accumulation_fusion=True).backward == (True, True, 1.0, False)
    dims = dataclasses.replace(layer_dims(MODEL, TP, B, S, "fp16"), main_grad_add=True)
    tpl = layer_template(True, attention="unfused", bias=True, backward=(True, False))
    g = tpl.digraph(dims, tp=TP, dropout=0.1)
    adds = sum(a["op"].nbytes for n, a in g.nodes(data=True) if n.endswith(".grad_accumulate"))
    assert adds == (2 + 4 + 4) * 12 * H * H / TP


def test_the_main_gradient_add_costs_more_than_autograds():
    """10 bytes on every micro-batch against 6 on m - 1 of m: the GPU's work grows (the toy
    step itself waits on the host)."""
    kw = dict(tp=TP, dp=2, global_batch=8, micro_batch=1, gradient_accumulation_fusion=False)
    core = predict(MODEL, "dgx-a100", **kw).step.compute_s
    assert core > predict(MODEL, "dgx-a100", main_grad_add=False, **kw).step.compute_s
