"""The search prices AutoModel's fake gate (``--moe-routing round-robin`` held fixed) as predict
does: each layout's bound at most predict's step and its memory predict's, the router's weight
left out of both."""
from __future__ import annotations

import pytest

from tpsim.cluster.nccl import topology_of
from tpsim.search.driver import _priced, bound_layouts
from tpsim.search.fixed import held
from tpsim.search.jobs import Workers
from tpsim.spec.model import load_model, with_overrides
from tpsim.spec.model_params import router_params

from .bounds import check_bounds


@pytest.mark.parametrize("zero", [0, 3])
def test_fixed_round_robin_bounds_and_memory_are_predicts(zero):
    """Each layout's bytes are predict's (tests/search/bounds.py) with the fake gate too, and
    every layout's rank holds the 2 MoE layers' router weights, 2 h E, fewer."""
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    params = {}
    for routing in ("uniform", "round-robin"):
        values, pins = held({"moe_dispatcher": "flex", "moe_routing": routing}, None,
                            {"pp": (1,), "tp": (1,), "ep": (2, 4), "micro_batch": (1,),
                             "recompute": ("none",), "zero": (zero,)})
        run, layouts, _ = _priced(model, topology_of("dgx-h100"), 8, 8, 1024, None, None, 1, 1,
                                  False, pins=pins, fixed=values)
        with Workers(run) as w:
            priced = bound_layouts(w, layouts)
        sims = check_bounds(run, layouts, priced, 8)
        assert {lay.moe_routing for lay in layouts} == {routing}
        params[routing] = [p.memory.params_per_gpu for p in sims]
    assert len(params["uniform"]) >= 2
    assert [a - b for a, b in zip(params["uniform"], params["round-robin"], strict=True)] == \
        [2 * router_params(model)] * len(params["uniform"])
