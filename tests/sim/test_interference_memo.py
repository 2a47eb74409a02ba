"""The per-op interferences (:func:`tpsim.sim.interference.interferences`) are kept per template
and device (``tpsim.sim.simulate._LOSSES``): that holds only if they are the same at every size.
Checked on Hopper layers of every comm kind (NCCL collectives, TE's pipelined reduce-scatter
with its SM margin, DeepEP and HybridEP dispatches, CP's exchanges) at several sizes."""
from __future__ import annotations

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.sim.interference import interferences
from tpsim.spec.layout import Layout
from tpsim.spec.model import load_model, with_overrides
from tpsim.training.predict import _settings, _step_plan, experts_of, layout_layer

CASES = {  # model, topology, layout settings
    "dense-tp-overlap": ("llama3-8b", "dgx-h100", dict(tp=4, sequence_parallel=True,
                                                      tp_comm_overlap=True)),
    "cp": ("llama3-8b", "dgx-h100", dict(tp=2, cp=2, sequence_parallel=True)),
    "deepep": ("mixtral-8x7b", "dgx-h100-ndr-cluster",
               dict(tp=1, ep=8, dp=16, moe_dispatcher="flex")),
    "hybridep": ("mixtral-8x7b", "dgx-h100-ndr-cluster",
                 dict(tp=1, ep=8, dp=16, moe_dispatcher="flex", moe_flex_backend="hybridep")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_interferences_do_not_depend_on_the_sizes(case):
    name, topology, settings = CASES[case]
    model = with_overrides(load_model(name), layers=2)
    found = []
    for seq, mb in ((2048, 1), (4096, 2), (8192, 1)):
        m, topo, lay = _settings(model, topology, Layout.of(
            dict(settings, seq_len=seq, micro_batch=mb)))
        experts = experts_of(m, lay, _step_plan(m, topo, lay)[0]) if m.moe else None
        sim = layout_layer(m, topo, lay, m.moe, experts)[0]
        found.append((sim.template, interferences(sim.ops, topo.device)))
    assert found[0][1] is not None
    assert all(t is found[0][0] and losses == found[0][1] for t, losses in found)
    assert load_topology(topology).device.collective_sms
