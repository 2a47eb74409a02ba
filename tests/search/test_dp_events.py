"""The search's DP events (tpsim.search.dp_events): the stage's end beside its reductions is
beside(D, w) after the bucket's end, in closed form, and the events' terms are the buckets'."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.search.dp_events import event_arrays, events, stage_end
from tpsim.training.moe_overlap import beside


@settings(max_examples=50, deadline=None)
@given(end=st.floats(0, 10), later=st.floats(0, 5), d=st.floats(0, 5), w=st.floats(0, 5),
       i=st.floats(0, 1))
def test_the_stage_ends_after_the_bucket_and_beside(end, later, d, w, i):
    """L + I min(D, w / (1 - I)) with L = E + l: with the DP stream's E + D, the stage's end
    E + beside(D, w) once w is the chunk's own later compute l (w = l)."""
    at, const = np.array([[end + w]]), np.array([[d - 0.1]])
    got = stage_end(at, np.array([[w]]), const, np.array([[d]]), np.array([i]))[0, 0]
    assert max(got, end + d) == pytest.approx(end + beside(d, w, i), rel=1e-9, abs=1e-12)


def test_padding_and_no_interference():
    at, work, dp = np.ones((1, 2)), np.ones((1, 2)), np.full((1, 2), 3.0)
    const = np.array([[0.5, -np.inf]])
    assert stage_end(at, work, const, dp, np.array([0.0])).tolist() == [[1.0, -np.inf]]
    assert stage_end(at, work, const, dp, np.array([0.5]))[0, 0] == 1.0 + min(0.5 * 3, 1.0)


def test_events_of_two_chunks():
    """Stage 0 of pp 2, v 2: chunk 1's last backward runs first; its bucket's D holds every
    reduction after it, its w the pp last backwards of chunk 0 and their pre-scales."""
    class St:
        buckets = {0: ((2, False, False, 10, 0), (1, True, False, 20, 0)),
                   2: ((3, False, True, 30, 0),)}
    scale = {0: [0.1, 0.2], 2: [0.3]}
    ev = events(St, scale, lambda n, e: n / 10, 2, 2, 0, 0)
    # chunk 0 read backwards (its last bucket first), then chunk 1
    assert ev[0] == (0, 0, 0, 0, 2.0, 2.0, 0, 0, 0, 0)
    assert ev[1][:6] == (0, 1, 1, 0, pytest.approx(3.0 - 0.2), 3.0)
    assert ev[2][:6] == (1, 0, 0, 0, 6.0, 6.0)
    assert ev[2][6:] == (2 * 3, 2 * 1, 0, pytest.approx(0.3))
    cols, coef, const, dp, work, work_s = event_arrays([ev], 4)
    assert cols.tolist() == [[0, 0, 1, 0]] and const[0, 3] == -np.inf
    assert work[0, 2].tolist() == [6, 2, 0] and work_s[0, 2] == pytest.approx(0.3)
