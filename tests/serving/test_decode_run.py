"""Decode-only stretches taken together (tpsim.serving.decode_run): the same run as one step at
a time, the blocks held equal to the cache's less the free ones throughout (preemptions
included), every block back when the run ends, and a run's end in closed form."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.serving import decode_run
from tpsim.serving.arrivals import draw_requests
from tpsim.serving.engine import EngineLoop, engine_parts
from tpsim.spec.model import load_model
from tpsim.spec.serve import split_settings


def _loop(jump: bool, blocks: int | None = None, **knobs):
    lay, s = split_settings(None, None, dict(tp=1, prompt=128, gen=64, requests=60, rate=40.0,
                                             gen_dist="uniform:2,128", **knobs))
    reqs = draw_requests(s.requests, s.rate, s.seed, lay.prompt, lay.gen, s.prompt_dist,
                         s.gen_dist)
    eng, sm = engine_parts(load_model("llama3-8b"), load_topology("dgx-h100"), lay, s,
                           int((reqs.prompt + reqs.gen).max()))
    loop = EngineLoop(reqs, s, blocks or eng.num_gpu_blocks, sm)
    if not jump:        # one step at a time: a stretch of one decode step each
        loop.since = 0
        loop.run = lambda: _stepwise(loop)
    return loop


def _stepwise(loop) -> None:
    n = len(loop.arr)
    while loop.finished < n:
        if loop.next < n and not loop.running and not loop.waiting:
            loop.t = max(loop.t, float(loop.arr[loop.next]) + loop.lat)
        while loop.next < n and loop.arr[loop.next] + loop.lat <= loop.t:
            loop.waiting.append(loop.next)
            loop.next += 1
        if loop.running or loop.waiting:
            loop._step()


def test_the_blocks_held_are_the_cache_less_the_free_ones_and_all_return(monkeypatch):
    seen = []
    grown = decode_run._grown

    def checked(loop, kv, j):
        bs = loop.bs
        seen.append(int(((kv + bs - 1) // bs).sum()) == loop.capacity - loop.free)
        return grown(loop, kv, j)
    monkeypatch.setattr(decode_run, "_grown", checked)
    loop = _loop(True, blocks=40)        # a small cache: sequences are preempted
    loop.run()
    assert loop.preemptions > 0 and seen and all(seen)
    assert loop.free == loop.capacity and (loop.done == loop.wants).all()


def test_stretches_taken_together_are_the_steps_one_at_a_time():
    together, alone = _loop(True), _loop(False)
    together.run()
    alone.run()
    assert together.steps == alone.steps and together.seq_steps == alone.seq_steps
    for a, b in ((together.first, alone.first), (together.last, alone.last)):
        assert np.allclose(a, b, rtol=1e-9, atol=0)     # a cumulative sum against sums in turn


@given(st.integers(0, 9), st.integers(1, 40), st.integers(1, 10))
@settings(max_examples=60, deadline=None)
def test_a_run_ends_at_the_first_multiple_of_its_steps(since, j, multi):
    class Loop:
        pass
    loop = Loop()
    loop.since, loop.multi = since % multi, multi
    end = decode_run.run_end(loop, j)
    assert end >= j and (loop.since + end) % multi == 0 and end - j < multi
