"""The search's bound for ZeRO-2/3 layouts (tpsim.search.sharded): below the simulated step
for every such layout of a small space, the memory exact, and the per-layer bounds' closed
forms."""

import pytest

from tpsim.search.driver import Space, bound_layouts, enumerate_layouts, _run
from tpsim.search.jobs import Workers
from tpsim.search.pins import check_pins
from tpsim.search.sharded import layer_times
from tpsim.spec.model import load_model, with_overrides
from tpsim.training.sharded_dp import ForwardRun, backward_s, forward_s

from .bounds import check_bounds


@pytest.fixture(scope="module")
def priced():
    """llama3-8b (4 layers) on two H100 nodes, ZeRO-2 and 3 pinned."""
    model = with_overrides(load_model("llama3-8b"), layers=4)
    run = _run(model, "dgx-h100-ndr-cluster", None, None, None, 8)
    space = Space(16, 8, pins=check_pins({"zero": (2, 3), "recompute": ("none",)}, 16))
    layouts, _ = enumerate_layouts(run.model, run.topo, space, run.seq_len)
    with Workers(run) as w:
        return run, layouts, bound_layouts(w, layouts)


def test_bound_never_exceeds_the_simulated_step(priced):
    run, layouts, bounds = priced
    assert len(layouts) > 10 and {lay.zero for lay in layouts} == {2, 3}
    sims = check_bounds(run, layouts[::3], bounds[::3], 8)
    for lay, (bound, _, _), p in zip(layouts[::3], bounds[::3], sims):
        assert bound >= 0.6 * p.step.time_s, lay     # 4 layers: the ends weigh


@pytest.mark.parametrize("f, b, g, g2, r", [(1.0, 2.0, 0.5, 0.5, 0.5), (1.0, 2.0, 3.0, 3.0, 1.0),
                                             (1.0, 1.0, 0.0, 0.0, 2.0), (2.0, 2.0, 0.6, 0.7, 0.5)])
def test_layer_bounds_are_below_the_recurrences(f, b, g, g2, r):
    """k identical layers: k f'(k) and k b'(k) never exceed the recurrences' times, with and
    without the compute slowed beside the collectives."""
    for k in (1, 2, 5, 40):
        for i in (0.0, 0.24):
            fk, bk = layer_times(f, b, g, g2, r, k, i)
            assert k * fk <= forward_s([ForwardRun(f, g, k)], i) + 1e-12
            assert k * bk <= backward_s([(b, g2, r, k)], i) + 1e-12
    assert layer_times(f, b, g, g2, r, 5, 0.24) >= layer_times(f, b, g, g2, r, 5)
