"""Each DP gradient bucket's reduction is priced once per step: the walk's DP intervals and the
step's DP ops are the same seconds (:mod:`tpsim.training.step_reduce`)."""
from __future__ import annotations

import pytest

from tpsim.spec.model import load_model, with_overrides
from tpsim.training import terms
from tpsim.training.predict import predict
from tpsim.training.step import build_step, time_step


@pytest.fixture(scope="module")
def run():
    """GPT-3 1.3B cut to 8 layers, PP 2 x 2 virtual stages, DP 4, overlapped reduction."""
    model = with_overrides(load_model("gpt3-1.3b"), layers=8)
    p = predict(model, "dgx-a100", seq_len=1024, global_batch=16, tp=1, pp=2, dp=4,
                virtual_stages=2)
    return p.step_run._setup, p.step_run._topo


def _counting(monkeypatch) -> list:
    calls, price = [], terms.grad_reduce_s
    monkeypatch.setattr(terms, "grad_reduce_s",
                        lambda *a: calls.append(a[0]) or price(*a))
    return calls


def test_each_bucket_is_priced_once(run, monkeypatch):
    """One grad_reduce_s per bucket of every chunk's last backward (a dense model: one
    collective a bucket), in the one-pass timing and in the op-by-op graph built after it."""
    setup, topo = run
    calls = _counting(monkeypatch)
    g = time_step(setup, topo)
    buckets = sum(len(s) for s in g.reductions.values())
    assert len(g.reductions) == 2 * 2 and buckets > 4
    assert len(calls) == buckets
    assert sum(calls) == sum(setup.stage_params)       # every gradient reduced once
    calls.clear()
    build_step(setup, topo)
    assert len(calls) == buckets


def test_dp_ops_last_the_seconds_the_walk_timed(run):
    """Each stage's DP stream holds its buckets' reductions in walk order, each as long as
    the seconds the walk timed it with."""
    setup, topo = run
    g = time_step(setup, topo)
    for r in range(setup.parallelism.pp):
        ops = g.on[f"stage{r}.dp"]
        timed = [s for (stage, _), seconds in g.reductions.items() if stage == r
                 for s in seconds]
        assert [g.end[i] - g.start[i] for i in ops] == pytest.approx(timed, rel=1e-12)
