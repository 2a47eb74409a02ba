"""List scheduling on two streams: hand-derived timelines and invariants on random DAGs."""
from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.schedule import schedule


def dag(ops, edges) -> nx.DiGraph:
    """ops: name -> (stream, time_s)."""
    g = nx.DiGraph()
    for n, (s, t) in ops.items():
        g.add_node(n, stream=s, time_s=t)
    g.add_edges_from(edges)
    return g


def test_overlap_by_hand():
    """A (compute 1) feeds B (comm 2) and C (compute 3); D (compute 1) needs B and C.
    B runs 1-3 beside C 1-4, D 4-5: makespan 5, comm 2, nothing exposed."""
    g = dag({"A": ("compute", 1), "B": ("comm", 2), "C": ("compute", 3), "D": ("compute", 1)},
            [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])
    tl = schedule(g)
    assert (tl.start_s["B"], tl.start_s["C"], tl.start_s["D"], tl.makespan_s) == (1, 1, 4, 5)
    assert tl.busy_s("comm") == 2 and tl.exposed_s() == 0


def test_exposed_by_hand():
    """A (compute 1) -> B (comm 4) -> D; C (compute 1) beside B: B runs 1-5, C 1-2, so 3 of
    B's 4 are exposed; makespan 1 + 4 + 1 = 6."""
    g = dag({"A": ("compute", 1), "B": ("comm", 4), "C": ("compute", 1), "D": ("compute", 1)},
            [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])
    tl = schedule(g)
    assert tl.makespan_s == 6 and tl.exposed_s() == 3


def test_host_dispatch_by_hand():
    """Same graph as test_overlap_by_hand, host issuing one op every 2 s in graph order A, B, C, D:
    issuing takes 8 > 5 of GPU work, so the layer is host-bound. A issued at 2 runs 2-3; B
    issued at 4 runs 4-6; C issued at 6 runs 6-9; D issued at 8, needs C: runs 9-10. With 1 s per
    op, issuing (4) is faster than the GPU (5): the host runs ahead and is invisible."""
    g = dag({"A": ("compute", 1), "B": ("comm", 2), "C": ("compute", 3), "D": ("compute", 1)},
            [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])
    tl = schedule(g, host_dispatch_s=2.0)
    assert [tl.start_s[n] for n in "ABCD"] == [2, 4, 6, 9] and tl.makespan_s == 10
    assert schedule(g, host_dispatch_s=1.0).makespan_s == 5


def test_slowed_end_by_hand():
    """4 s of work from t=0 at half speed inside [1, 3): 1 s done by t=1, 1 s during [1, 3),
    the last 2 s at full speed: ends at 5. Fully inside a long busy interval: 4 / 0.5 = 8."""
    from tpsim.schedule import slowed_end
    assert slowed_end(0.0, 4.0, [(1.0, 3.0)], 0.5) == pytest.approx(5.0)
    assert slowed_end(0.0, 4.0, [(0.0, 100.0)], 0.5) == pytest.approx(8.0)
    assert slowed_end(0.0, 4.0, [(5.0, 6.0)], 0.5) == pytest.approx(4.0)
    assert slowed_end(2.0, 1.0, [(0.0, 1.0)], 0.9) == pytest.approx(3.0)


def test_interference_slows_the_overlapped_compute():
    """test_overlap_by_hand with interference 0.5: C (3 s) runs beside B (comm, 1-3) at half speed
    for 2 s (1 s of work), then 2 s alone: C ends at 5, D at 6 instead of 5."""
    g = dag({"A": ("compute", 1), "B": ("comm", 2), "C": ("compute", 3), "D": ("compute", 1)},
            [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])
    tl = schedule(g, interference=0.5)
    assert (tl.end_s["C"], tl.makespan_s) == (pytest.approx(5.0), pytest.approx(6.0))
    assert schedule(g, interference=0.0).makespan_s == 5


def test_critical_path_first():
    """Two ready compute ops: X (1) leads to a long comm op, Y (2) to nothing. Critical path
    first runs X, so the comm (5) starts at 1 and ends at 6; Y-first would end at 7."""
    g = dag({"X": ("compute", 1), "Y": ("compute", 2), "Z": ("comm", 5)}, [("X", "Z")])
    tl = schedule(g)
    assert tl.start_s["X"] == 0 and tl.makespan_s == 6


@st.composite
def random_dags(draw):
    n = draw(st.integers(1, 25))
    times = draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=n, max_size=n))
    streams = draw(st.lists(st.sampled_from(["compute", "comm"]), min_size=n, max_size=n))
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    ops = {f"op{i}": (streams[i], times[i]) for i in range(n)}
    return dag(ops, [(f"op{a}", f"op{b}") for a, b in edges if a < b])


@settings(max_examples=150, deadline=None)
@given(random_dags())
def test_schedule_invariants(g):
    tl = schedule(g)
    for u, v in g.edges:                              # never before its inputs
        assert tl.start_s[v] >= tl.end_s[u] - 1e-12
    for s in ("compute", "comm"):                     # one op at a time on a stream
        runs = sorted((tl.start_s[n], tl.end_s[n]) for n in g if g.nodes[n]["stream"] == s)
        for (a0, a1), (b0, b1) in zip(runs, runs[1:]):
            assert b0 >= a1 - 1e-12
    total = sum(a["time_s"] for _, a in g.nodes(data=True))
    path = _critical_path(g)
    busiest = max(tl.busy_s("compute"), tl.busy_s("comm"))
    assert max(path, busiest) - 1e-9 <= tl.makespan_s <= total + 1e-9
    assert 0 <= tl.exposed_s() <= tl.busy_s("comm") + 1e-9
    assert schedule(g) == tl                          # deterministic


def _critical_path(g) -> float:
    """Longest path through the DAG, counting op times: a lower bound on any schedule."""
    done: dict[str, float] = {}
    for n in nx.topological_sort(g):
        done[n] = g.nodes[n]["time_s"] + max((done[p] for p in g.predecessors(n)), default=0.0)
    return max(done.values(), default=0.0)


def test_cycle_is_an_error():
    g = dag({"A": ("compute", 1), "B": ("compute", 1)}, [("A", "B"), ("B", "A")])
    with pytest.raises(ValueError, match="cycle"):
        schedule(g)
