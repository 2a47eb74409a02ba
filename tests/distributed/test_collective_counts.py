"""The model and the code it models agree op for op: every collective the real layers issue,
forward and backward, with and without sequence parallelism, equals the collectives in tpsim's
op graph of the same block (phase, op and nccl-tests bytes, in issue order).

The issued collectives are observed in torch's dispatcher (``comm_observer``), not taken from
the layers' own ``record_collectives`` report, so a collective issued outside
``tpsim.tp.mappings`` is seen too; ``test_observer_sees_collectives_outside_mappings`` checks
that it is."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.comm_observer import observe_collectives  # noqa: E402
from tests.dist_helpers import run_ranks  # noqa: E402

# (block, activation, attention core); sizes split over 2 ranks
CASES = [("mlp", "gelu", "fused"), ("mlp", "swiglu", "fused"),
         ("attention", "gelu", "fused"), ("attention", "gelu", "unfused")]
SEQ, BATCH, HIDDEN, HEADS, KV, FFN = 8, 2, 32, 4, 2, 64


def _layer(block, act, core, sp):
    from tpsim.tp import ParallelAttention, ParallelMLP
    if block == "mlp":
        return ParallelMLP(HIDDEN, FFN, activation=act, sequence_parallel=sp)
    return ParallelAttention(HIDDEN, HEADS, KV, sequence_parallel=sp, core=core)


def _run(layer, sp):
    """Forward then backward of ``layer`` on this rank's input; (observed calls, the calls
    ``record_collectives`` reported), each a list of (phase, op, nbytes)."""
    import torch.distributed as dist
    from tpsim.tp import record_collectives
    p, r = dist.get_world_size(), dist.get_rank()
    x = torch.randn(SEQ, BATCH, HIDDEN)
    xin = (x.chunk(p)[r] if sp else x).clone().requires_grad_()   # (s/p or s, b, h)
    with record_collectives() as recorded:
        with observe_collectives("forward") as fwd:
            y = layer(xin)
        with observe_collectives("backward") as bwd:
            y.backward(torch.ones_like(y))
    seen = [(c.phase, c.op, c.nbytes) for c in fwd + bwd]
    return seen, [(c.phase, c.op, c.nbytes) for c in recorded], {c.overload for c in fwd + bwd}


def _issued():
    """Per case: collectives observed while the real block runs forward, then backward; what
    the layers recorded themselves; the dispatcher overloads seen."""
    out = {}
    for block, act, core in CASES:
        for sp in (False, True):
            out[(block, act, core, sp)] = _run(_layer(block, act, core, sp), sp)
    return out


def _expected(block, act, core, sp):
    from tpsim.layer.graph import collectives_in, layer_graph
    from tpsim.spec.model import ModelConfig
    model = ModelConfig(name="t", layers=1, hidden=HIDDEN, heads=HEADS, kv_heads=KV, vocab=256,
                        seq_len=SEQ, ffn_hidden=FFN, activation=act, attention=core)
    g = layer_graph(model, 2, BATCH, SEQ, "fp32", sp, blocks=(block,), bare=True,
                    attention=core)
    return collectives_in(g)


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    return run_ranks(2, _issued, tmpdir=tmp_path_factory.mktemp("counts"))


CASE_IDS = [c + (sp,) for c in CASES for sp in (False, True)]


@pytest.mark.parametrize("case", CASE_IDS, ids=lambda c: "-".join(map(str, c)))
def test_real_collectives_equal_graph_collectives(issued, case):
    want = _expected(*case)
    for rank_calls in issued:
        seen, _, _ = rank_calls[case]
        assert seen == want


@pytest.mark.parametrize("case", CASE_IDS, ids=lambda c: "-".join(map(str, c)))
def test_recorded_collectives_are_the_observed_ones(issued, case):
    """``record_collectives`` (what validate times) reports exactly what torch ran."""
    for rank_calls in issued:
        seen, recorded, _ = rank_calls[case]
        assert recorded == seen


def test_counts_are_the_textbook_ones(issued):
    """No SP: one all-reduce forward and one backward per block, of b*s*h*4 bytes (fp32)."""
    act = SEQ * BATCH * HIDDEN * 4
    assert issued[0][("mlp", "gelu", "fused", False)][0] == [("forward", "all-reduce", act),
                                                            ("backward", "all-reduce", act)]
    assert [op for _, op, _ in issued[0][("attention", "gelu", "fused", True)][0]] == \
        ["all-gather", "reduce-scatter", "all-gather", "all-gather", "reduce-scatter"]


def _stray():
    """Collectives issued around tpsim's mappings: through torch.distributed directly, through
    the process group, as functional collectives, and from a hook on a real layer."""
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol
    from tpsim.tp import record_collectives
    p = dist.get_world_size()
    t = torch.ones(4, 3)                                           # 48 bytes
    with record_collectives() as recorded, observe_collectives("forward") as direct:
        dist.all_reduce(t)
        dist.group.WORLD.allreduce([t]).wait()
        dist.all_gather([torch.empty_like(t) for _ in range(p)], t)
        dist.all_gather_single(torch.empty(4 * p, 3), t)
        dist.reduce_scatter_single(torch.empty(4 // p, 3), t)
        funcol.wait_tensor(funcol.all_reduce(t, "sum", dist.group.WORLD))
        funcol.wait_tensor(funcol.all_gather_tensor(t, 0, dist.group.WORLD))
        dist.broadcast(t, src=0)
    layer = _layer("mlp", "gelu", "fused", False)
    layer.register_forward_hook(lambda mod, args, y: dist.all_reduce(y.detach().clone()))
    hooked, hooked_recorded, _ = _run(layer, False)
    return ([(c.phase, c.op, c.nbytes) for c in direct], list(recorded), hooked, hooked_recorded)


def test_observer_sees_collectives_outside_mappings(tmp_path):
    """The check can fail: collectives not issued through ``tpsim.tp.mappings`` are observed
    (with nccl-tests bytes), where the layers' own record misses them."""
    p, nb = 2, 4 * 3 * 4
    for direct, recorded, hooked, hooked_recorded in run_ranks(p, _stray, tmpdir=tmp_path):
        assert recorded == []
        assert direct == [("forward", "all-reduce", nb), ("forward", "all-reduce", nb),
                          ("forward", "all-gather", p * nb), ("forward", "all-gather", p * nb),
                          ("forward", "reduce-scatter", nb), ("forward", "all-reduce", nb),
                          ("forward", "all-gather", p * nb), ("forward", "c10d::broadcast_", nb)]
        want = _expected("mlp", "gelu", "fused", False)
        act = SEQ * BATCH * HIDDEN * 4
        assert hooked == [want[0], ("forward", "all-reduce", act), want[1]] != want
        assert hooked_recorded == want                # the old check would have passed
