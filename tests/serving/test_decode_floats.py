"""A decode stretch timed as Python floats (tpsim.serving.decode_floats): numpy's pairwise sum
bit for bit, and a run whose stretches are all timed so the same run, bit for bit, as one
whose stretches are all numpy's arrays (open and closed loops, the host overlap, multi-step
scheduling, a queue)."""
from __future__ import annotations

import numpy as np
import pytest

from tpsim.serving import decode_floats
from tpsim.serving.engine import serve


@pytest.mark.parametrize("n", [*range(0, 140), 255, 256, 257, 1000, 4099])
def test_the_pairwise_sum_is_numpys(n):
    rng = np.random.default_rng(n)
    x = rng.random(n) * 10.0 ** rng.uniform(-6, 6, n)      # magnitudes that round apart
    assert decode_floats.pairwise_sum(x.tolist()) == float(np.add.reduce(x))
    assert decode_floats.pairwise_sum([0.0, *x.tolist()], 1) == float(np.add.reduce(x))


def _run(**knobs):
    p = serve("llama3-8b", tp=1, prompt=512, gen=64, requests=150, gen_dist="uniform:2,128",
              **knobs)
    return (p.ttft.tolist(), p.e2e.tolist(), p.scheduler, p.latency, p.throughput, p.energy)


@pytest.mark.parametrize("knobs", [dict(rate=20.0), dict(rate=60.0, host_overlap=True),
                                   dict(rate=20.0, num_scheduler_steps=4),
                                   dict(users=8), dict(rate=float("inf"), max_num_seqs=16)])
def test_floats_and_arrays_time_a_stretch_alike(monkeypatch, knobs):
    floats = _run(**knobs)
    monkeypatch.setattr(decode_floats, "FEW_STEPS", 10**9)       # every stretch as floats
    every = _run(**knobs)
    monkeypatch.setattr(decode_floats, "FEW_STEPS", 0)           # none: numpy's arrays
    arrays = _run(**knobs)
    assert floats == arrays and every == arrays
