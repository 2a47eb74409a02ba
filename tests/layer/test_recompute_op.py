"""``--recompute op``: torchtitan's selective checkpointing by operation (tpsim.layer.recompute)."""
from __future__ import annotations

import pytest

from tpsim.layer.graph import layer_graph
from tpsim.spec.model import load_model
from tpsim.training.predict import predict

KW = dict(tp=1, dp=1, seq_len=2048, attention="flash2")


def rows(**kw):
    return {o.name: o for o in predict("llama3-8b", "grand-teton-h100", **KW, **kw).ops}


@pytest.mark.parametrize("eager", [False, True])
def test_every_second_matmul_and_every_elementwise_kernel(eager):
    """Recomputed: wk, wo and w3 (2T x (kv h + h q + f h) FLOPs), every forward elementwise
    kernel once, no attention and nothing else."""
    r = rows(recompute="op", eager_kernels=eager)
    T, h, f, q, kv = 2048, 4096, 14336, 4096, 1024
    rcp = {n: o for n, o in r.items() if n.startswith("rcp.")}
    assert sum(o.flops for o in rcp.values()) == 2 * T * (kv * h + h * q + f * h)
    elementwise = {n for n, o in r.items() if n.startswith("fwd.") and o.kind == "elementwise"}
    assert {"rcp." + n[4:] for n in elementwise} == {n for n, o in rcp.items()
                                                      if o.kind == "elementwise"}
    assert "rcp.attn" not in rcp and "rcp.mlp_out" not in rcp
    assert all(o.phase == "backward" for o in rcp.values())


def test_op_costs_time_and_keeps_the_checkpoint_and_saved_outputs():
    """The copies lengthen the step; a layer keeps its input, the outputs of wq, wv, w1, w2,
    SDPA's output and fp32 log-sum-exp: 2 T (h + q + kv + f + h + q) + 4 T heads bytes."""
    none = predict("llama3-8b", "grand-teton-h100", **KW)
    op = predict("llama3-8b", "grand-teton-h100", recompute="op", **KW)
    assert op.step.time_s > none.step.time_s
    g = layer_graph(load_model("llama3-8b"), 1, 1, 2048, "bf16", False, attention="flash2",
                    recompute="op")
    T, h, f, q, kv, heads = 2048, 4096, 14336, 4096, 1024, 32
    layer = 2 * T * (h + q + kv + f + h + q) + 4 * T * heads
    assert sum(a["saved_bytes"] for _, a in g.nodes(data=True)) == layer
    ends = none.memory.activations_bytes - 32 * sum(
        a["saved_bytes"] for _, a in layer_graph(load_model("llama3-8b"), 1, 1, 2048, "bf16",
                                                 False, attention="flash2").nodes(data=True))
    assert op.memory.activations_bytes == pytest.approx(32 * layer + ends, rel=1e-12)
