"""When a prefill step's tokens stream under multi-step scheduling (tpsim.serving.output_lag):
at the end of the next step when it prefills too, or at the first arrival the engine sees
during it, else at the next step's start; closed forms on hand-placed arrivals."""
from __future__ import annotations

import numpy as np
import pytest

from tpsim.cluster.topology import load_topology
from tpsim.serving.arrivals import Requests, draw_requests
from tpsim.serving.engine import EngineLoop, engine_parts
from tpsim.spec.model import load_model
from tpsim.spec.serve import split_settings

PROMPT, GEN = 512, 21


def run(arrivals, multi, prompt=PROMPT, gen=GEN, reqs=None):
    lay, st = split_settings(None, None, dict(tp=1, prompt=prompt, gen=gen, separate_prefill=True,
                                              num_scheduler_steps=multi))
    n = len(arrivals)
    reqs = reqs or Requests(np.array(arrivals, float), np.full(n, prompt), np.full(n, gen))
    eng, sm = engine_parts(load_model("llama2-7b"), load_topology("dgx-h100"), lay, st,
                           int((reqs.prompt + reqs.gen).max()))
    loop = EngineLoop(reqs, st, eng.num_gpu_blocks, sm)
    loop.run()
    return loop


def test_a_prefill_followed_by_a_prefill_streams_with_the_second():
    """A at 0 s prefills alone; B, arriving during it, prefills in the next step. Scheduling
    every step, A's first token leaves at its own step's end; with runs of 10 it leaves with
    B's, at the end of B's prefill step (B's own goes at the start of the decode run after
    it, the same time), and B's is the same either way."""
    one, ten = run([0.0, 1e-3], 1), run([0.0, 1e-3], 10)
    assert one.first[0] < one.first[1]
    assert ten.first[0] == ten.first[1] == one.first[1]


def test_an_arrival_during_the_second_prefill_wakes_the_first_token():
    """C arrives halfway through B's prefill step: the engine process's event loop wakes for
    its message and A's held token leaves then, at C's arrival plus the front end's latency;
    B's waits for C's prefill step, which follows, and leaves with C's."""
    one = run([0.0, 1e-3], 1)
    lat = one.lat
    seen = (one.first[0] + one.first[1]) / 2
    ten = run([0.0, 1e-3, seen - lat], 10)
    assert ten.first[0] == pytest.approx(seen, abs=1e-12)
    assert ten.first[1] == ten.first[2] > seen


def test_each_requests_gaps_still_sum_to_its_e2e_less_its_ttft():
    """However the chunks are held, every request's chunks stream in order, its first at its
    TTFT and its last at its e2e: the pooled gaps sum to the sum of e2e - TTFT."""
    reqs = draw_requests(120, 12.0, 4, 256, 60, "exponential", "exponential")
    loop = run(reqs.arrival_s, 10, reqs=reqs)
    v, w = loop.gaps.pooled()
    assert float(v @ w) == pytest.approx(float((loop.last - loop.first).sum()), rel=1e-9)
    assert (loop.first >= reqs.arrival_s).all() and (loop.last >= loop.first).all()
