"""The search over a mixture-of-experts model: its ep and expert TP enumerated, every layout's
bound below predict's step and its memory predict's (every layer carries experts), the best
ones the brute-force optimum."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.search.driver import Space, bound_layouts, enumerate_layouts, equivalent, search, _run
from tpsim.search.jobs import Workers
from tpsim.spec.model import load_model, with_overrides

from .bounds import check_bounds, simulate


@pytest.fixture(scope="module")
def space():
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    run = _run(model, "dgx-h100", None, 1024, None, 8)
    layouts, dropped = enumerate_layouts(run.model, run.topo, Space(8, 8), run.seq_len)
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    sims = simulate(run, layouts, 8)
    return run, layouts, dropped, priced, sims


def test_ep_and_expert_tp_are_enumerated(space):
    """Every ep dividing 8 experts and tp x dp, expert TP 1 or tp; MoE layouts with tp > 1
    run sequence parallelism and no TP overlap."""
    run, layouts, dropped, _, _ = space
    assert {lay.ep for lay in layouts} == {1, 2, 4, 8}
    assert {lay.expert_tp for lay in layouts if lay.tp > 1} == {None, 1}
    assert all(lay.sequence_parallel and not lay.tp_comm_overlap for lay in layouts
               if lay.tp > 1)
    assert dropped["moe_sp"] and dropped["moe_overlap"]


def test_bounds_below_the_simulation_and_memory_exact(space):
    run, layouts, _, priced, sims = space
    check_bounds(run, layouts, priced, 8, sims)


def test_search_finds_the_brute_force_optimum(space):
    run, layouts, _, _, sims = space
    result = search(run.model, run.topo, 8, 8, seq_len=run.seq_len, top=3)
    distinct = {equivalent(run, lay): p for lay, p in zip(layouts, sims)}
    truth = sorted(p.step.time_s for p in distinct.values() if p.memory.fits)
    assert [c.step_s for c in result.candidates] == truth[:3]


def test_a_pinned_ep_that_divides_no_gpus_is_refused():
    with pytest.raises(ConfigError, match="--ep"):
        search("mixtral-8x7b", "dgx-h100", 8, 8, seq_len=1024, pins={"ep": 3})


def test_dense_layers_bound_below_the_simulation():
    """A model whose first layer is dense: the bound counts it as the smaller share of an MoE
    layer (search.parts.bound_layers), never above predict's step."""
    model = dataclasses.replace(with_overrides(load_model("mixtral-8x7b"), layers=3),
                                first_dense_layers=1)
    run = _run(model, "dgx-h100", None, 1024, None, 8)
    layouts, _ = enumerate_layouts(run.model, run.topo, Space(8, 8), run.seq_len)
    layouts = [lay for lay in layouts if lay.recompute == "none"]
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    check_bounds(run, layouts, priced, 8, memory=False)


def test_the_space_holds_expert_dp_layouts_at_dp_1(space):
    """TP 4 or 8 with EP x expert TP below it and dp 1: expert DP > 1 reduces the experts'
    gradients (tpsim.training.grad_buckets); their bounds are checked above."""
    run, layouts, _, priced, sims = space
    folded = [(lay, p) for lay, p in zip(layouts, sims)
              if lay.dp == 1 and p.inputs.expert_dp > 1]
    assert folded and all(p.step.dp_comm_exposed_s > 0 for _, p in folded)
