"""A search's pinned dimensions: a pinned space is the unpinned space's layouts that hold the
pinned values, nothing else; pins that can never run are refused in one line, pins that cannot
run in some layouts drop them by reason; a search of more GPUs than its topology holds sizes
the network."""
import pytest

from tpsim.base.errors import ConfigError
from tpsim.search.driver import REASONS, Space, _run, enumerate_layouts, search
from tpsim.search.pins import PIN_REASONS, PINNABLE, check_pins, knobs
from tpsim.spec.layout import RECOMPUTE
from tpsim.spec.model import load_model, with_overrides

GPUS, GB = 8, 16


@pytest.fixture(scope="module")
def run():
    return _run(with_overrides(load_model("gpt3-125m"), layers=4), "dgx-a100", None, None, None,
                GB)


def layouts(run, pins=None):
    pinned = check_pins(pins, GPUS)
    rc = next((v for n, v in pinned if n == "recompute"), RECOMPUTE)
    return enumerate_layouts(run.model, run.topo, Space(GPUS, GB, recompute=tuple(rc),
                                                        pins=pinned), run.seq_len)


def test_without_pins_the_knobs_are_the_searchs():
    """Unpinned, the knob combinations are those the search enumerates: ZeRO 0 and the
    distributed optimizer (ZeRO-1) at dp > 1, ZeRO-2 and 3 too without a pipeline."""
    for tp, dp, pp in ((1, 1, 1), (2, 1, 2), (1, 4, 1), (8, 2, 1), (8, 2, 2)):
        zeros = [(False, 0)] + ([(True, 0)] if dp > 1 else []) + \
            ([(False, 2), (False, 3)] if dp > 1 and pp == 1 else [])
        want = [(sp, ov, rc, z) for sp in ((False, True) if tp > 1 else (False,))
                for ov in ((False, True) if sp else (False,)) for rc in RECOMPUTE
                for z in zeros]
        assert knobs(tp, dp, RECOMPUTE, (), pp) == (want, None)


@pytest.mark.parametrize("pins", [
    {"tp": (2,)}, {"pp": (2, 4)}, {"dp": (2,)}, {"virtual_stages": (2,)}, {"micro_batch": (2,)},
    {"recompute": ("full",)}, {"sequence_parallel": (True,)}, {"sequence_parallel": (False,)},
    {"tp_comm_overlap": (True,)}, {"distributed_optimizer": (False,)}, {"zero": (2, 3)},
    {"tp": (1, 2), "pp": (2,), "micro_batch": (1, 4), "distributed_optimizer": (True,)},
])
def test_pinned_space_is_the_unpinned_space_filtered(run, pins):
    every, _ = layouts(run)
    got, _ = layouts(run, pins)
    want = [lay for lay in every if all(getattr(lay, k) in v for k, v in pins.items())]
    assert got == want and got


def test_pins_that_cannot_run_somewhere_are_dropped_by_reason(run):
    _, dropped = layouts(run, {"sequence_parallel": True})
    assert dropped["pinned_tp1"] > 0
    _, dropped = layouts(run, {"distributed_optimizer": True})
    assert dropped["pinned_dp1"] > 0
    _, dropped = layouts(run, {"virtual_stages": (2,)})
    assert dropped["pinned_vs_pp"] > 0
    _, dropped = layouts(run, {"micro_batch": (3, 4)})    # 3 divides no replica's batch
    assert dropped["pinned_mb"] > 0
    assert PIN_REASONS.keys() <= REASONS.keys()


@pytest.mark.parametrize("pins, flag", [
    ({"tp": 3}, "--tp"), ({"dp": (16,)}, "--dp"), ({"tp": 8, "pp": 2}, "--tp 8 --pp 2"),
    ({"tp_comm_overlap": True, "sequence_parallel": False}, "--tp-comm-overlap"),
    ({"recompute": ("some",)}, "--recompute"), ({"seq_len": 2}, "pins"),
])
def test_pins_that_never_run_are_refused(pins, flag):
    with pytest.raises(ConfigError) as e:
        check_pins(pins, GPUS)
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


def test_search_reports_its_pins_and_sizes_the_network():
    """--gpus above the topology's: the network is sized to ceil(gpus / per node) nodes,
    said in a note and kept for the predict command; a pinned search keeps its pins."""
    model = with_overrides(load_model("gpt3-125m"), layers=4)
    res = search(model, "dgx-a100-hdr-cluster", 8 * 70, 560, top=1,
                 pins={"tp": 4, "pp": (1,), "recompute": "none"})
    assert res.nodes == 70 and res.nodes_from_gpus
    assert any("sized to 70 nodes" in n for n in res.notes)
    assert not any("selective" in n for n in res.notes)       # recompute pinned to none
    lay = res.candidates[0].layout
    assert (lay.tp, lay.pp, lay.recompute) == (4, 1, "none")
    assert dict(res.pins) == {"tp": (4,), "pp": (1,), "recompute": ("none",)}
    small = search(model, "dgx-a100-hdr-cluster", 8, 8, top=1, pins={"tp": 4})
    assert small.nodes is None and not small.nodes_from_gpus
    assert set(PINNABLE) >= {"tp", "pp", "dp"}


def test_zero_1_pins_the_distributed_optimizer(run):
    """ZeRO-1 is enumerated as Megatron's distributed optimizer (zero 0, the flag on)."""
    got, _ = layouts(run, {"zero": (1,)})
    assert got and all(lay.distributed_optimizer and lay.zero == 0 for lay in got)
    assert got == layouts(run, {"distributed_optimizer": (True,)})[0]
