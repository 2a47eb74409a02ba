"""The expert-parallel MoE layer (tpsim.tp.moe) against a single-device reference with every
expert, on 2 gloo ranks: forward output, input gradient, the router's (summed) and each local
expert's weight gradients; dispatch and combine are one all-to-all each way."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.dist_helpers import run_ranks  # noqa: E402


def _suite():
    from tpsim.tp.check import check_moe, failures
    from tpsim.tp.mappings import record_collectives
    from tpsim.tp.moe import ExpertParallelMoE
    results = check_moe()
    layer = ExpertParallelMoE(16, 32, 4, 2, seed=7)
    x = torch.randn(4, 2, 16, requires_grad=True)
    with record_collectives() as calls:
        layer(x).sum().backward()
    return failures(results), len(results), [(c.phase, c.op, c.nbytes) for c in calls]


def _graph_collectives():
    """tpsim's MoE slot at the same sizes: T = 8 tokens a rank, top-2, h 16, 2 local experts
    of width 32, EP 2, fp32."""
    from tpsim.layer.infer_graph import InferDims
    from tpsim.layer.infer_moe import infer_moe_fwd
    from tpsim.layer.template import Builder
    B = Builder(False)
    infer_moe_fwd(B, None, False, False)
    tpl = B.compile({"tp": 1, "ep": 2})
    d = InferDims(b=2, s=4, h=16, tp=1, dtype="fp32", heads=1, kv_heads=1, d=1, f=32, sp=False,
                  experts=2, topk=2, fe=32, act_dtype="fp32", kv_dtype="fp32", ep=2)
    return [(op.op, op.nbytes) for n, op in zip(tpl.nodes, tpl.ops(d)) if n.stream == "comm"]


def test_moe_matches_single_device_reference(tmp_path):
    """Also: the layer issues the collectives tpsim's MoE slot has, forward (dispatch and
    combine) and their mirror images backward. A rank dispatches exactly T k h bpe bytes;
    what it combines depends on the routing, balanced in total over the ranks."""
    graph = _graph_collectives()
    assert graph == [("all-to-all", 8 * 2 * 16 * 4)] * 2
    ranks = run_ranks(2, _suite, tmpdir=tmp_path)
    for bad, count, calls in ranks:
        assert bad == [] and count == 10, bad
        ops = [(phase, op) for phase, op, _ in calls]
        assert ops == [("forward", "all-to-all")] * 2 + [("backward", "all-to-all")] * 2
        assert (calls[0][1], calls[0][2]) == graph[0]
    assert sum(calls[1][2] for _, _, calls in ranks) == 2 * graph[1][1]

