"""The host's lag behind a layer's forward at a device-to-host sync (tpsim.sim.host_lag):
DeepEP's dispatch holds it, a layer without a forward sync has none."""
from __future__ import annotations

import pytest

from tpsim.sim.host_lag import forward_lag_s
from tpsim.training.predict import predict

MOE = dict(tp=1, dp=8, ep=8, micro_batch=1, seq_len=4096, moe_dispatcher="flex",
           moe_flex_backend="deepep")


def test_deepep_lag_is_the_sync_then_the_rest_of_the_forward():
    sim = predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", nodes=1, **MOE).run
    tpl = sim.template
    (a, b), = [(a, b) for a, b in tpl.syncs if b in tpl.forward]
    assert tpl.nodes[b].name == "fwd.moe.dispatch"
    rest = sum(tpl.nodes[i].host_ops for i in tpl.forward if i >= b)
    assert rest > 0
    assert forward_lag_s(sim) == pytest.approx(
        sim.timeline.end[a] + rest * sim.host_dispatch_s + sum(
            sim.launch_s[i] for i in tpl.forward if i >= b), rel=1e-12)


def test_no_forward_sync_no_lag():
    sim = predict("llama3-8b", "dgx-h100-ndr-cluster", nodes=1, tp=1, dp=8, seq_len=2048).run
    assert forward_lag_s(sim) == 0.0
