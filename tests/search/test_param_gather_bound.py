"""The search's bound with the overlapped weight all-gather (--overlap-param-gather): below the
simulated step for every layout of a small space run with it, and above the bound without it
less the gather it no longer charges after the optimizer."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.search.driver import Space, bound_layouts, enumerate_layouts, _run
from tpsim.search.jobs import Workers
from tpsim.spec.model import load_model, with_overrides

from .bounds import check_bounds


@pytest.fixture(scope="module")
def priced():
    """llama3-8b (4 layers) on two H100 nodes: layers of several gradient buckets at tp 1."""
    model = with_overrides(load_model("llama3-8b"), layers=4)
    run = _run(model, "dgx-h100-ndr-cluster", None, None, None, 8)
    layouts, _ = enumerate_layouts(run.model, run.topo, Space(16, 8), run.seq_len)
    on = [lay.replace(overlap_param_gather=True) for lay in layouts
          if lay.distributed_optimizer and lay.dp > 1]
    off = [lay.replace(overlap_param_gather=False) for lay in on]
    with Workers(run) as w:
        return run, on, bound_layouts(w, on), bound_layouts(w, off)


def test_the_space_has_overlapped_gathers(priced):
    run, on, _, _ = priced
    assert len(on) > 10 and {lay.pp for lay in on} >= {1, 2}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bound_never_exceeds_the_simulated_step(priced, data):
    run, on, bounds, _ = priced
    i = data.draw(st.integers(0, len(on) - 1))
    check_bounds(run, on[i:i + 1], bounds[i:i + 1], 8)


def test_the_bound_counts_the_first_release(priced):
    """The bound with the overlap is below the bound without it (the gather leaves the step's
    end) but not by the whole gather: stage 0's first forward still waits for its release."""
    run, on, bounds, offs = priced
    lower = [b for (b, _, _), (o, _, _) in zip(bounds, offs) if b < o]
    assert lower and all(b > 0 for b, _, _ in bounds)
    for lay, (b, _, _), (o, _, _) in zip(on, bounds, offs):
        assert b <= o * (1 + 1e-12), lay
