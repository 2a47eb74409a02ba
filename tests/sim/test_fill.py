"""PyTorch's deterministic fill of new tensors (tpsim.sim.fill): one more write of each output
Transformer Engine allocates, priced as an elementwise kernel before its op."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.layer.dims import layer_dims
from tpsim.layer.graph import layer_template
from tpsim.layer.ops import Attention, Gemm, MemoryBound
from tpsim.sim.deterministic_attention import deterministic_attention_times
from tpsim.sim.fill import fill_bytes
from tpsim.sim.price import Pricing
from tpsim.sim.simulate import simulate
from tpsim.spec.model import ModelConfig
from tpsim.spec.parallel import Parallelism
from tpsim.training.predict import predict

H, TP, B, S = 1024, 2, 2, 512
MODEL = ModelConfig(name="toy-gpt", layers=4, hidden=H, heads=16, vocab=1024, seq_len=S,
                    kv_heads=4, dropout=0.1, bias=True)
TOPO = load_topology("dgx-h100")


def test_each_kind_fills_its_new_output():
    """GEMM m n batch bpe (none when it accumulates into the main gradient), attention's O
    forward and dQ dK dV backward, a LayerNorm's elements; any other op nothing."""
    assert fill_bytes("fwd.qkv", Gemm(64, 32, 16, "bf16", batch=3), 2) == 64 * 32 * 3 * 2
    assert fill_bytes("bwd.qkv.wgrad", Gemm(64, 32, 16, "bf16", accumulate=True), 2) == 0
    fwd = Attention(2, 8, 2, 128, 128, 64, "bf16")
    assert fill_bytes("fwd.core", fwd, 2) == 2 * 128 * 8 * 64 * 2
    bwd = dataclasses.replace(fwd, backward=True)
    assert fill_bytes("bwd.core", bwd, 2) == 2 * (128 * 8 + 2 * 128 * 2) * 64 * 2
    norm = MemoryBound(1e6, (100, 30))
    assert [fill_bytes(n, norm, 2) for n in ("fwd.norm1", "bwd.norm2", "rcp.norm1")] == [6000] * 3
    assert fill_bytes("fwd.gelu", norm, 2) == 0


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_the_fill_adds_elementwise_time_op_by_op(recompute):
    """Each op's time grows by exactly elementwise_time(its fill bytes), recomputed copies
    filled again, beyond its deterministic price (the attention backward's:
    tpsim.sim.deterministic_attention); the ops themselves are unchanged."""
    dims = layer_dims(MODEL, TP, B, S, "bf16")
    tpl = layer_template(True, recompute=recompute)
    pricing = Pricing(TOPO, Parallelism(tp=TP))
    plain, filled = (simulate(tpl, dataclasses.replace(dims, fill=f), pricing)
                     for f in (False, True))
    assert filled.ops == plain.ops
    dev = TOPO.device
    base = deterministic_attention_times(plain.ops, plain.times, dev)
    for name, op, t0, t1 in zip(tpl.names, plain.ops, base, filled.times):
        assert t1 == t0 + elementwise_time(fill_bytes(name, op, 2), dev)
    assert sum(filled.times) > sum(plain.times)


def test_deterministic_mode_lengthens_the_step():
    kw = dict(tp=TP, dp=4, micro_batch=B, global_batch=16)
    assert predict(MODEL, "dgx-h100", deterministic_mode=True, **kw).step.compute_s > \
        predict(MODEL, "dgx-h100", **kw).step.compute_s
