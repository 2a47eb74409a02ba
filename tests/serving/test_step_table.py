"""The step-time tables priced lazily (tpsim.serving.step_table): every lookup, one number or an
array, below, inside or above the grid, gives the whole table's np.interp bit for bit, while
pricing only the points around it."""
from __future__ import annotations

import numpy as np
import pytest

from tpsim.cluster.topology import load_topology
from tpsim.serving.infer import _Server
from tpsim.serving.step_model import StepModel
from tpsim.serving.step_table import Table
from tpsim.spec.model import load_model


def jumpy(x: int) -> float:
    """A price with tile steps every 64 and an algorithm switch at 1,000: the bisection's work."""
    return 1e-6 * (5 + -(-x // 64) * 64 * 0.01 + (3 if x > 1000 else 0))


def whole(table: Table, x):
    xs, ys = Table(table.f, table.coarse[-1], table.log).full()
    if table.log:
        return np.exp(np.interp(np.log(x), np.log(xs), np.log(np.maximum(ys, 1e-30))))
    return np.interp(x, xs, ys)


QUERIES = (0.5, 1, 1.5, 7, 8.25, 63.9, 64, 65, 999, 1000.5, 1001, 4000, 4095.5, 4096, 5000)


@pytest.mark.parametrize("log", [False, True])
def test_each_lookup_is_the_whole_tables_bit_for_bit(log):
    table = Table(jumpy, 4096, log)
    for x in QUERIES:
        assert table(x) == whole(table, x), x
    assert table.prices < len(Table(jumpy, 4096, log).full()[0])
    fresh = Table(jumpy, 4096, log)
    arr = np.array(QUERIES + (2.0, 3000.0))
    assert np.array_equal(fresh(arr), whole(fresh, arr))
    assert np.array_equal(fresh(arr * 0.9), whole(fresh, arr * 0.9))
    nan = np.array([np.nan, 5.5])
    for t in (Table(jumpy, 4096, log), fresh):
        assert np.isnan(t(np.nan)) and np.array_equal(t(nan), whole(t, nan), equal_nan=True)


def test_a_lookup_prices_only_the_points_around_it():
    table = Table(jumpy, 4096)
    table(1)
    assert table.prices == 1                   # a grid point: itself
    table(3000.5)              # its grid interval's ends, then one bisection chain: log2(262)
    assert 4 <= table.prices <= 1 + 2 + 9
    assert table.full()[0].size == table.prices > 300      # the whole table, every point


def test_a_step_models_lookups_are_the_whole_tables():
    """Llama 3 8B at TP 2 and PP 2: every table of a StepModel (prefill, attention in log-log,
    decode, the ends, the stage transfers) against the whole table, random lookups."""
    srv = _Server(load_model("llama3-8b"), load_topology("dgx-h100"), 2, 2, "bf16", "bf16",
                  "bf16", "nccl", False)
    sm = StepModel(srv, 2048, 64, 3000, 8)
    rng = np.random.default_rng(1)
    for table in sm.tables:
        top = table.coarse[-1]
        xs = np.concatenate([rng.uniform(0.5, top + 3, 40), rng.integers(1, top + 2, 40)])
        for x in xs[:60]:
            assert table(float(x)) == whole(table, float(x))
        assert np.array_equal(table(xs[60:]), whole(table, xs[60:]))
    assert 2 + sum(t.prices for t in sm.tables) == sm.prices
