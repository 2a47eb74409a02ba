"""The model and the code it models agree op for op: every collective the real layers issue,
forward and backward, with and without sequence parallelism, equals the collectives in tpsim's
op graph of the same block (phase, op and nccl-tests bytes, in issue order)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dist_helpers import run_ranks  # noqa: E402

# (block, activation, attention core); sizes split over 2 ranks
CASES = [("mlp", "gelu", "fused"), ("mlp", "swiglu", "fused"),
         ("attention", "gelu", "fused"), ("attention", "gelu", "unfused")]
SEQ, BATCH, HIDDEN, HEADS, KV, FFN = 8, 2, 32, 4, 2, 64


def _issued():
    """Collectives recorded while each real block runs forward, then backward."""
    import torch.distributed as dist
    from tpsim.tp import ParallelAttention, ParallelMLP, record_collectives
    p, r = dist.get_world_size(), dist.get_rank()
    out = {}
    for block, act, core in CASES:
        for sp in (False, True):
            if block == "mlp":
                layer = ParallelMLP(HIDDEN, FFN, activation=act, sequence_parallel=sp)
            else:
                layer = ParallelAttention(HIDDEN, HEADS, KV, sequence_parallel=sp, core=core)
            x = torch.randn(SEQ, BATCH, HIDDEN)
            xin = (x.chunk(p)[r] if sp else x).clone().requires_grad_()   # (s/p or s, b, h)
            with record_collectives() as fwd:
                y = layer(xin)
            with record_collectives() as bwd:
                y.backward(torch.ones_like(y))
            out[(block, act, core, sp)] = [(c.phase, c.op, c.nbytes) for c in fwd + bwd]
    return out


def _expected(block, act, core, sp):
    from tpsim.graph import collectives_in, layer_graph
    from tpsim.model import ModelConfig
    model = ModelConfig(name="t", layers=1, hidden=HIDDEN, heads=HEADS, kv_heads=KV, vocab=256,
                        seq_len=SEQ, ffn_hidden=FFN, activation=act, attention=core)
    g = layer_graph(model, 2, BATCH, SEQ, "fp32", sp, blocks=(block,), bare=True,
                    attention=core)
    return collectives_in(g)


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    return run_ranks(2, _issued, tmpdir=tmp_path_factory.mktemp("counts"))


@pytest.mark.parametrize("case", [c + (sp,) for c in CASES for sp in (False, True)],
                         ids=lambda c: "-".join(map(str, c)))
def test_real_collectives_equal_graph_collectives(issued, case):
    want = _expected(*case)
    for rank_calls in issued:
        assert rank_calls[case] == want


def test_counts_are_the_textbook_ones(issued):
    """No SP: one all-reduce forward and one backward per block, of b*s*h*4 bytes (fp32)."""
    act = SEQ * BATCH * HIDDEN * 4
    assert issued[0][("mlp", "gelu", "fused", False)] == [("forward", "all-reduce", act),
                                                         ("backward", "all-reduce", act)]
    assert [op for _, op, _ in issued[0][("attention", "gelu", "fused", True)]] == \
        ["all-gather", "reduce-scatter", "all-gather", "reduce-scatter"]
