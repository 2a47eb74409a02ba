"""The search over combinations that fold into one another: context parallelism beside the
experts (ep folded out of tp x cp x dp); each layout's bound at most predict's step and its
memory predict's."""
from __future__ import annotations

import pytest

from tpsim.search.driver import Space, bound_layouts, enumerate_layouts, _run
from tpsim.search.jobs import Workers
from tpsim.search.pins import check_pins
from tpsim.spec.model import load_model, with_overrides

from .bounds import check_bounds


def _priced(model, topology: str, seq: int, gpus: int, batch: int, pins: dict,
            zero_with_pp: bool = False):
    run = _run(model, topology, None, seq, None, batch)
    space = Space(gpus, batch, pins=check_pins(pins, gpus), zero_with_pp=zero_with_pp)
    layouts, dropped = enumerate_layouts(run.model, run.topo, space, run.seq_len)
    if not layouts:
        return run, layouts, dropped, []
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    return run, layouts, dropped, priced


@pytest.fixture(scope="module")
def cp_moe():
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    return _priced(model, "dgx-h100", 16384, 8, 4,
                   {"cp": (2, 4), "micro_batch": 1, "recompute": "none", "tp": 2})


def test_cp_beside_experts_is_enumerated(cp_moe):
    """At 16K tokens an MoE model's layouts take CP; ep folds out of tp x cp x dp: with
    tp 2 x cp 4 (dp 1) ep 8 with expert TP 1."""
    _, layouts, dropped, _ = cp_moe
    assert {lay.cp for lay in layouts} == {2, 4} and "cp_moe" not in dropped
    assert any(lay.cp == 4 and lay.dp == 1 and lay.ep == 8 and lay.expert_tp == 1
               for lay in layouts)


def test_cp_moe_bounds_below_the_simulation(cp_moe):
    run, layouts, _, priced = cp_moe
    check_bounds(run, layouts, priced, 4)


@pytest.fixture(scope="module")
def zero_cp():
    model = with_overrides(load_model("llama3-8b"), layers=4)
    return _priced(model, "dgx-h100-ndr-cluster", 16384, 16, 8,
                   {"cp": (2, 4), "micro_batch": 1, "recompute": "none", "pp": 1,
                    "zero": (2, 3), "tp": (1, 2)})


def test_zero_beside_cp_is_enumerated_and_bounded(zero_cp):
    """ZeRO-2/3 with CP (the state sharded over dp x cp; cp 4 x tp 2 leaves dp 2): enumerated,
    each bound at most predict's step, its memory predict's."""
    run, layouts, _, priced = zero_cp
    assert {(lay.cp, lay.zero) for lay in layouts} >= {(2, 2), (2, 3), (4, 2), (4, 3)}
    check_bounds(run, layouts, priced, 8)


@pytest.fixture(scope="module")
def zero_moe():
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    return _priced(model, "dgx-h100", 2048, 8, 8,
                   {"micro_batch": (1, 2), "recompute": "none", "pp": 1, "zero": (2, 3)})


def test_zero_beside_experts_is_enumerated_and_bounded(zero_moe):
    """ZeRO-2/3 with experts (dense over dp, folded experts over expert DP): enumerated at
    every ep, each bound at most predict's step, its memory predict's."""
    run, layouts, dropped, priced = zero_moe
    assert "moe_zero" not in dropped and {lay.ep for lay in layouts} == {1, 2, 4, 8}
    check_bounds(run, layouts, priced, 8)


def test_cp_comms_closed_form():
    """llama3-8b (32 heads, 8 key/value heads), nodes of 8: at tp 2 each rank has 16 and 4
    heads, so a2a runs at cp 2 and 4 (4 divides both), not 8; a2a+p2p only where tp x cp
    spans nodes (cp 8: a = 4 ranks of a node, ring over 2); cp 1 has no exchange."""
    from tpsim.search.cp_comms import cp_comms
    m = load_model("llama3-8b")
    assert cp_comms(m, 2, 1, 8, ()) == ["p2p"]
    assert cp_comms(m, 2, 4, 8, ()) == ["p2p", "all-gather", "a2a"]
    assert cp_comms(m, 2, 8, 8, ()) == ["p2p", "all-gather", "a2a+p2p"]
    assert cp_comms(m, 2, 8, 8, (("cp_comm", ("a2a",)),)) == []
    with pytest.raises(Exception, match="--cp-comm"):
        check_pins({"cp_comm": "ring"}, 16)


@pytest.fixture(scope="module")
def comms():
    model = with_overrides(load_model("llama3-8b"), layers=4)
    return _priced(model, "dgx-h100-ndr-cluster", 16384, 16, 8,
                   {"cp": (2, 4, 8), "micro_batch": 1, "recompute": "none", "pp": 1,
                    "tp": (1, 2), "distributed_optimizer": False, "zero": 0})


def test_every_cp_comm_is_enumerated_and_bounded(comms):
    """Every exchange where it runs (a2a+p2p where cp spans the nodes), a pinned a2a that
    cannot run dropped by reason; each bound at most predict's step, its memory predict's."""
    run, layouts, _, priced = comms
    assert {lay.cp_comm for lay in layouts} == {"p2p", "all-gather", "a2a", "a2a+p2p"}
    assert all(lay.tp * lay.cp > 8 for lay in layouts if lay.cp_comm == "a2a+p2p")
    check_bounds(run, layouts, priced, 8)
    model = with_overrides(load_model("llama3-8b"), layers=4)
    _, pinned, dropped, _ = _priced(model, "dgx-h100-ndr-cluster", 16384, 16, 8,
                                    {"cp": 16, "tp": 1, "cp_comm": "a2a", "micro_batch": 1,
                                     "recompute": "none"})
    assert not pinned and dropped["pinned_cp_comm"]


@pytest.fixture(scope="module")
def zero_pp():
    model = with_overrides(load_model("llama3-8b"), layers=8)
    return _priced(model, "dgx-h100-ndr-cluster", 4096, 16, 32,
                   {"pp": (2, 4), "zero": (2, 3), "recompute": "none", "tp": (1, 2),
                    "micro_batch": (1, 2)}, zero_with_pp=True)


def test_zero_with_a_pipeline_is_bounded(zero_pp):
    """--zero-with-pp: ZeRO-2/3 layouts with a pipeline enumerated (interleaved too), each
    bound at most predict's step (its per-micro-batch backward gathers, the step-level
    reduce-scatter and start-of-step gathers), its memory predict's; without it none."""
    run, layouts, _, priced = zero_pp
    assert {(lay.pp, lay.zero) for lay in layouts} == {(2, 2), (2, 3), (4, 2), (4, 3)}
    assert any(lay.virtual_stages > 1 for lay in layouts)
    check_bounds(run, layouts, priced, 32)
    model = with_overrides(load_model("llama3-8b"), layers=8)
    _, without, _, _ = _priced(model, "dgx-h100-ndr-cluster", 4096, 16, 32,
                               {"pp": (1, 2), "zero": (2, 3), "tp": (1, 2)})
    assert {lay.pp for lay in without} == {1}


def test_zero_with_pp_takes_a_boolean():
    from tpsim.base.errors import ConfigError
    from tpsim.search.driver import search
    with pytest.raises(ConfigError) as e:
        search("gpt3-125m", "dgx-h100", 8, 8, zero_with_pp="yes")
    assert e.value.source == "--zero-with-pp"
