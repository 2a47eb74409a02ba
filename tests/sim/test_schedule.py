"""List scheduling on two streams: hand-derived timelines and invariants on random DAGs."""
from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.sim.schedule import schedule


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


def test_issue_bound_by_hand():
    """A phase of 4 ops whose GPU work takes 5 s: with the host issuing one op every 2 s (8 s)
    the phase takes 8 s, layer after layer; at 1 s per op (4 s) the host runs ahead: 5 s."""
    from tpsim.sim.schedule import issue_bound
    assert issue_bound(5.0, 4, 2.0) == 8.0 and issue_bound(5.0, 4, 1.0) == 5.0


def test_streams_run_in_program_order():
    """Y (compute) is issued before X (compute) but X feeds the long comm op Z: an in-order stream
    still runs Y first (0-2), X 2-3, Z 3-8 (a priority scheduler would reorder them)."""
    g = dag({"Y": ("compute", 2), "X": ("compute", 1), "Z": ("comm", 5)}, [("X", "Z")])
    tl = schedule(g)
    assert (tl.start_s["Y"], tl.start_s["X"], tl.start_s["Z"], tl.makespan_s) == (0, 2, 3, 8)


def test_slowed_end_by_hand():
    """4 s of work from t=0 at half speed inside [1, 3): 1 s done by t=1, 1 s during [1, 3),
    the last 2 s at full speed: ends at 5. Fully inside a long busy interval: 4 / 0.5 = 8."""
    from tpsim.sim.schedule import slowed_end
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


def test_slowed_end_per_interval_losses():
    """One loss per busy interval: 4 s of work from 0 beside [0, 2) at loss 0.5 (1 s done)
    and [2, 4) at loss 0.25 (1.5 s done), the last 1.5 s alone: ends at 5.5; a list of equal
    losses is the single loss."""
    from tpsim.sim.schedule import slowed_end
    assert slowed_end(0.0, 4.0, [(0.0, 2.0), (2.0, 4.0)], [0.5, 0.25]) == pytest.approx(5.5)
    busy = [(1.0, 3.0), (4.0, 4.5)]
    assert slowed_end(0.0, 4.0, busy, [0.3, 0.3]) == slowed_end(0.0, 4.0, busy, 0.3)


def test_each_collective_slows_by_its_own_loss():
    """test_interference_slows_the_overlapped_compute with the loss given per op: B's own 0.5
    in place of the device's 0.1."""
    from tpsim.layer.template import Node, Template
    from tpsim.sim.schedule import run
    names = ("A", "B", "C", "D")
    streams = ("compute", "comm", "compute", "compute")
    tpl = Template.from_nodes(tuple(Node(n, "", "", s, None) for n, s in zip(names, streams)),
                              [("A", "B", "data"), ("A", "C", "data"), ("B", "D", "data"),
                               ("C", "D", "data")], {})
    from tpsim.sim.interference import Losses
    zero = (False,) * 4
    tl = run(tpl, [1.0, 2.0, 3.0, 1.0], 0.1, Losses((0.0, 0.5, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), zero))
    assert (tl.end_s["C"], tl.makespan_s) == (pytest.approx(5.0), pytest.approx(6.0))
    # C persistent: B's 0.5; C not: B's other loss, 0.25 (1 s at full speed, 2 s at 0.75, 0.5 s)
    other = Losses((0.0, 0.5, 0.0, 0.0), (0.0, 0.25, 0.0, 0.0), (False, False, False, False))
    assert run(tpl, [1.0, 2.0, 3.0, 1.0], 0.1, other).end_s["C"] == pytest.approx(4.5)
    mine = Losses((0.0, 0.5, 0.0, 0.0), (0.0, 0.25, 0.0, 0.0), (False, False, True, False))
    assert run(tpl, [1.0, 2.0, 3.0, 1.0], 0.1, mine).end_s["C"] == pytest.approx(5.0)


def test_copies_on_the_copy_engines_are_not_slowed():
    """A copy beside a collective, per-kind losses given: it holds no SMs and loses nothing."""
    from tpsim.layer.template import Node, Template
    from tpsim.sim.interference import Losses
    from tpsim.sim.schedule import run
    tpl = Template.from_nodes((Node("A", "", "", "comm", None), Node("B", "", "", "copy", None)),
                              [], {})
    tl = run(tpl, [2.0, 1.0], 0.5, Losses((0.5, 0.0), (0.5, 0.0), (False, False)))
    assert tl.end_s["B"] == pytest.approx(1.0)


def test_issued_first_runs_first():
    """X (1) is issued before Y (2) and leads to a long comm op: X 0-1, Z 1-6, Y 1-3."""
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
    for s in ("compute", "comm"):                     # each stream in program order
        starts = [tl.start_s[n] for n in g if g.nodes[n]["stream"] == s]
        assert starts == sorted(starts)


@settings(max_examples=150, deadline=None)
@given(random_dags(), st.data(), st.sampled_from([0.0, 0.25, 0.9]))
def test_longer_op_never_shortens_the_schedule(g, data, interference):
    """Monotone: lengthening any op (or adding interference) never makes the makespan shorter,
    and no op starts earlier (Graham's anomalies cannot happen on in-order streams)."""
    before = schedule(g, interference)
    n = data.draw(st.sampled_from(list(g)))
    g.nodes[n]["time_s"] += data.draw(st.floats(0, 10, allow_nan=False))
    after = schedule(g, interference)
    assert after.makespan_s >= before.makespan_s - 1e-9
    assert all(after.start_s[m] >= before.start_s[m] - 1e-9 for m in g)
    assert schedule(g, min(1.0, interference + 0.05)).makespan_s >= after.makespan_s - 1e-9


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


def _synced(ops, edges, syncs):
    """A template of ``ops`` (name -> (stream, time_s, phase)) in order, with ``syncs``:
    (op waited for, op issued after the wait)."""
    from tpsim.layer.template import Node, Template
    waits = {b: a for a, b in syncs}
    nodes = tuple(Node(n, phase, "", s, None, sync=waits.get(n))
                  for n, (s, _, phase) in ops.items())
    tpl = Template.from_nodes(nodes, [(u, v, "data") for u, v in edges], {})
    return tpl, [t for _, t, _ in ops.values()]


def test_sync_exposes_one_issue_when_the_gpu_is_slower():
    """A (compute 10) -> B (comm 20) -> C (compute 20), the host waiting for A before issuing
    B, h = 1: B starts at end_A + h = 11 (not 10), C at B's end 31 (its issue, 12, long past):
    makespan 51 = 50 + h."""
    from tpsim.sim.schedule import run
    ops = {"A": ("compute", 10.0, "forward"), "B": ("comm", 20.0, "forward"),
           "C": ("compute", 20.0, "forward")}
    tpl, t = _synced(ops, [("A", "B"), ("B", "C")], [("A", "B")])
    tl = run(tpl, t, host_s=1.0)
    assert (tl.start_s["B"], tl.start_s["C"], tl.makespan_s) == (11.0, 31.0, 51.0)
    assert run(tpl, t, host_s=0.0).makespan_s == 50.0


def test_sync_exposes_every_issue_when_the_host_is_slower():
    """After a sync on A (10), three ops of 1 s each in a chain, h = 2: each waits for its
    issue, B 12-13, C 14-15, D 16-17: makespan end_A + 3 h + t_D = 17 (13 without the sync)."""
    from tpsim.sim.schedule import run
    ops = {"A": ("compute", 10.0, "forward"), "B": ("compute", 1.0, "forward"),
           "C": ("compute", 1.0, "forward"), "D": ("compute", 1.0, "forward")}
    tpl, t = _synced(ops, [("A", "B"), ("B", "C"), ("C", "D")], [("A", "B")])
    assert run(tpl, t, host_s=2.0).makespan_s == 17.0
    assert run(tpl, t, host_s=2.0).start_s["C"] == 14.0
    plain, _ = _synced(ops, [("A", "B"), ("B", "C"), ("C", "D")], [])
    assert run(plain, t, host_s=2.0).makespan_s == 13.0


def test_sync_waits_when_the_host_is_slower():
    """A host-bound phase of 3 ops with a sync on A (5 s) before C, one op (B) issued between,
    h = 2: the host waits 5 - 2 = 3 s, so the phase takes 3 h + 3 = 9 s, not 6; a backward
    sync counts in the backward."""
    from tpsim.sim.schedule import issue_bound, sync_waits
    ops = {"A": ("compute", 5.0, "forward"), "B": ("compute", 1.0, "forward"),
           "C": ("comm", 1.0, "forward"), "D": ("compute", 4.0, "backward"),
           "E": ("comm", 1.0, "backward")}
    tpl, t = _synced(ops, [("A", "C"), ("D", "E")], [("A", "C"), ("D", "E")])
    assert sync_waits(tpl, t, 2.0) == (3.0, 4.0)
    assert issue_bound(7.0, 3, 2.0, 3.0) == 9.0 and issue_bound(7.0, 3, 2.0) == 7.0


@settings(max_examples=100, deadline=None)
@given(random_dags(), st.data(), st.floats(0, 5, allow_nan=False))
def test_a_sync_is_never_faster(g, data, host):
    """Any syncs on a random DAG: no op starts earlier than without them (so the makespan is
    never shorter), more host time per op is never faster, and no sync is exactly the
    schedule without a host."""
    from tpsim.sim.schedule import run
    names = list(g)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, len(names) - 1),
                                         st.integers(0, len(names) - 1)), max_size=4))
    syncs = {(names[a], names[b]) for a, b in pairs if a < b}
    syncs = {(a, b) for a, b in syncs if b not in {y for x, y in syncs if x != a}}
    phases = data.draw(st.lists(st.sampled_from(["forward", "backward"]), min_size=len(names),
                                max_size=len(names)))
    ops = {n: (g.nodes[n]["stream"], g.nodes[n]["time_s"], p) for n, p in zip(names, phases)}
    plain, t = _synced(ops, list(g.edges), [])
    tpl, _ = _synced(ops, list(g.edges), sorted(syncs))
    before, after = run(plain, t), run(tpl, t, host_s=host)
    assert run(plain, t, host_s=host) == before
    assert all(a >= b - 1e-9 for a, b in zip(after.start, before.start))
    assert after.makespan_s >= before.makespan_s - 1e-9
    assert run(tpl, t, host_s=host + 1.0).makespan_s >= after.makespan_s - 1e-9
