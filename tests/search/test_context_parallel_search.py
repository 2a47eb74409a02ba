"""The search enumerates context parallelism: pinned like tp, tried unpinned at long sequences,
its bound below the simulated step."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.search.driver import enumerate_layouts, search, Space
from tpsim.search.pins import CP_FROM_SEQ, check_pins
from tpsim.spec.model import load_model
from tpsim.cluster.topology import load_topology

from .bounds import check_bounds

M = load_model("llama2-7b")


def _cps(seq: int, pins=()):
    lays, _ = enumerate_layouts(M, load_topology("dgx-h100"), Space(32, 32, pins=pins), seq)
    return {lay.cp for lay in lays}, lays


def test_cp_is_tried_at_long_sequences_only():
    assert _cps(CP_FROM_SEQ // 2)[0] == {1}
    cps, lays = _cps(131072)
    assert cps == {1, 2, 4, 8, 16, 32}
    assert all(lay.tp * lay.cp * lay.pp * lay.dp == 32 for lay in lays)


def test_pinned_cp():
    cps, lays = _cps(4096, check_pins({"cp": 2}, 32))
    assert cps == {2} and all(lay.dp * lay.tp * lay.pp == 16 for lay in lays)
    with pytest.raises(ConfigError, match="--cp"):
        check_pins({"cp": 3}, 32)


def test_cp_bound_is_below_the_simulation_and_memory_decides():
    """At 64K tokens llama2-7b without recomputation fits on 8 GPUs of a node only with CP;
    every re-priced layout's bound is at most its simulated step."""
    res = search("llama2-7b", "dgx-h100", 8, 8, seq_len=65536, top=5, pins={"recompute": "none"})
    assert res.candidates and all(c.layout.cp > 1 for c in res.candidates)
    assert all(c.bound_s <= c.step_s * (1 + 1e-9) for c in res.candidates)
    assert all(c.memory.fits for c in res.candidates)


def test_cp_bounds_and_memory_are_predicts():
    """Every CP layout of a small space: bound <= predict's step, the fullest stage's bytes
    and fit predict's (the bound's dp x cp gradient group is the step's)."""
    from tpsim.search.driver import _run, bound_layouts
    from tpsim.search.jobs import Workers
    from tpsim.spec.model import with_overrides
    model = with_overrides(load_model("llama3-8b"), layers=4)
    run = _run(model, "dgx-h100-ndr-cluster", None, 16384, None, 8)
    pins = check_pins({"cp": (2, 4), "micro_batch": 1, "recompute": "none"}, 16)
    layouts, _ = enumerate_layouts(run.model, run.topo, Space(16, 8, pins=pins), run.seq_len)
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    assert {lay.cp for lay in layouts} == {2, 4}
    check_bounds(run, layouts, priced, 8)
