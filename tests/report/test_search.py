"""``tpsim search``'s table: the bound's share of the simulated steps said plainly, and the
columns in line whatever the length of a layout's label."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.report.search import layout_label, search_report
from tpsim.search.driver import search
from tpsim.spec.layout import Layout


@pytest.fixture(scope="module")
def result():
    return search("gpt3-350m", "dgx-h100", gpus=8, global_batch=64, top=2)


@pytest.mark.parametrize("gap, shown", [(0.8782, "12.1%"), (0.0049, "99.5%"), (0.0, "100.0%"),
                                        (0.0004, "99.9%")])
def test_the_bound_is_said_as_its_share_of_the_steps_rounded_down(result, gap, shown):
    text = search_report(dataclasses.replace(result, max_gap=gap))
    assert f"the bound that ranked them was at least {shown} of each one's simulated step " \
           "(a lower bound that only orders and prunes: the steps shown are simulated, so a " \
           "looser bound costs search time, not accuracy)" in text
    assert "within" not in text.splitlines()[2]


def test_the_columns_stay_in_line_with_a_label_past_34_characters(result):
    long = Layout.unchecked(tp=4, pp=8, dp=32, ep=8, expert_tp=1, micro_batch=4,
                            sequence_parallel=True, distributed_optimizer=True, recompute="full",
                            first_stage_layers=7, last_stage_layers=6)
    cands = (dataclasses.replace(result.candidates[0], layout=long), *result.candidates[1:])
    assert len(layout_label(long)) > 34
    lines = search_report(dataclasses.replace(result, candidates=cands)).splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#  layout"))
    rows = lines[head:head + 1 + len(cands)]
    assert len({len(line) for line in rows}) == 1, rows     # fixed-width columns end together
