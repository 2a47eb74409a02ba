import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.serving.engine import serve
from tpsim.serving.gaps import TokenGaps, run_end_steps
from tpsim.serving.serve_result import Percentiles

RUN = dict(tp=1, requests=48, prompt=128, prompt_dist="exponential")


def test_a_first_token_opens_the_gaps_and_each_later_chunk_adds_one_per_request():
    g = TokenGaps(3)
    g.deliver([0, 1], 1.0)                      # first tokens: no gap
    g.deliver([0, 1], [1.5, 2.5, 2.75])
    g.deliver([2], 3.0)
    g.flush([0], 2.75)                          # already streamed: nothing
    g.flush([1], 4.0)
    gaps = np.repeat(*g.pooled()).tolist()
    assert sorted(gaps) == [0.25, 0.25, 0.5, 0.5, 1.0, 1.0, 1.25]


@given(st.integers(0, 9), st.integers(1, 40), st.integers(1, 10))
@settings(max_examples=60, deadline=None)
def test_tokens_stream_at_every_step_or_at_each_run_end(since, k, multi):
    ends = run_end_steps(since % multi, k, multi)
    assert list(ends) == [j for j in range(1, k + 1) if (since % multi + j) % multi == 0]
    assert len(run_end_steps(since, k, 1)) == k


def test_one_step_a_chunk_the_gaps_of_a_request_sum_to_its_e2e_less_its_ttft():
    """Without multi-step each token is a chunk: gen - 1 gaps a request, which telescope to
    e2e - TTFT, so with every request of one length the ITL's mean is the TPOT's."""
    p = serve("llama3-8b", "dgx-h100", rate=6.0, gen=40, **RUN)
    assert p.latency.itl_s.mean == pytest.approx(p.latency.tpot_s.mean, rel=1e-9)
    assert p.latency.itl_s.p99 > p.latency.itl_s.p50      # the prefill steps between tokens


def test_multi_step_streams_a_run_of_s_steps_as_one_chunk():
    """All requests at once, 1 + 10 x 10 tokens each: every gap is one run of 10 decode steps,
    so the ITL is ten of the TPOT; one step a chunk it is the TPOT."""
    kw = dict(rate=float("inf"), gen=101, **RUN)
    multi = serve("llama3-8b", "dgx-h100", num_scheduler_steps=10, **kw).latency
    assert multi.itl_s.p50 == pytest.approx(10 * multi.tpot_s.p50, rel=1e-9)
    one = serve("llama3-8b", "dgx-h100", **kw).latency
    assert one.itl_s.mean == pytest.approx(one.tpot_s.mean, rel=1e-9)


@given(st.lists(st.tuples(st.floats(1e-4, 1.0), st.integers(1, 5)), min_size=1, max_size=30))
@settings(max_examples=80, deadline=None)
def test_the_counted_gaps_percentiles_are_those_of_the_gaps_written_out(pairs):
    g = TokenGaps(1)
    g.parts = [(np.array([v]), c) for v, c in pairs]
    written = np.repeat([v for v, _ in pairs], [c for _, c in pairs])
    want, got = Percentiles.of(written), g.percentiles()
    for f in ("mean", "p50", "p90", "p99"):
        assert getattr(got, f) == pytest.approx(getattr(want, f), rel=1e-12, abs=1e-15)
