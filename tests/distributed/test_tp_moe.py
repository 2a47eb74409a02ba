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


def test_moe_matches_single_device_reference(tmp_path):
    for bad, count, calls in run_ranks(2, _suite, tmpdir=tmp_path):
        assert bad == [] and count == 10, bad
        # forward: dispatch and combine of the rank's T k rows (8 tokens x 2 x 16 x 4 bytes in
        # all, split by where they go); backward: the two again, the other way
        ops = [(phase, op) for phase, op, _ in calls]
        assert ops == [("forward", "all-to-all")] * 2 + [("backward", "all-to-all")] * 2
        assert calls[0][2] == 8 * 2 * 16 * 4

