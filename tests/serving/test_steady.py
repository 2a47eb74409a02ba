"""The steady state of a closed loop: genai-perf's measurement window, the clients' phases,
Little's law (tpsim/serving/steady.py)."""
import math

import numpy as np
import pytest

from tpsim.base.errors import ConfigError
from tpsim.serving.engine import serve
from tpsim.serving.steady import (little_ttft_s, serve_steady, staggered_sends,
                                  steady_window)

KW = dict(tp=1, prompt=256, gen=64, rate=math.inf, requests=80, users=8)


@pytest.fixture(scope="module")
def runs():
    return {s: serve_steady("llama2-7b", "dgx-h100", stagger=s, **KW) for s in (True, False)}


def test_window_closed_form():
    # two users; each request: sent, first token 1 s later, last token 4 s after sending
    sent = np.array([0.0, 0.5, 4.0, 4.5, 8.0, 8.5])
    first, last, gen = sent + 1.0, sent + 4.0, np.full(6, 5)
    w = steady_window(sent, first, last, gen, users=2)
    assert (w.t0_s, w.t1_s) == (4.5, 8.5)            # both first requests ended; last sending
    assert w.requests == 1          # sent at 4.5; those sent at 8.0 and 8.5 end after 8.5
    assert w.ttft_s.mean == pytest.approx(1.0) and w.tpot_s.mean == pytest.approx(3.0 / 4)
    assert w.output_tokens_per_s == pytest.approx(2 * 5 / 4.0)   # ends at 8.0 and 8.5


def test_window_excludes_warmup_and_drain(runs):
    for p, w in runs.values():
        assert 0 < w.requests <= KW["requests"] - KW["users"]
        assert w.ttft_s.p99 >= w.ttft_s.p50 and w.tpot_s.p99 >= w.tpot_s.p50


def test_staggered_sends():
    assert staggered_sends(4, 2.0).tolist() == [0.0, 0.5, 1.0, 1.5]


def test_little_law_holds_in_the_window(runs):
    """C = X_req x (TTFT + (gen - 1) TPOT) over the steady window: the TTFT from the window's
    throughput and TPOT is its measured TTFT."""
    for _, w in runs.values():
        got = little_ttft_s(KW["users"], KW["gen"], w.output_tokens_per_s, w.tpot_s.mean)
        cycle = KW["gen"] * w.tpot_s.mean
        assert got == pytest.approx(w.ttft_s.mean, abs=0.02 * cycle)


def test_staggered_clients_wait_less_than_lockstep(runs):
    """In lockstep the C prompts prefill together; staggered, each finds the others
    decoding."""
    assert runs[True][1].ttft_s.mean < runs[False][1].ttft_s.mean


def test_offline_throughput_is_the_highest(runs):
    off = serve("llama2-7b", "dgx-h100", **{**KW, "users": None})
    for _, w in runs.values():
        assert off.throughput.output_tokens_per_s > w.output_tokens_per_s


def test_no_window_without_a_second_round():
    with pytest.raises(ConfigError):
        steady_window([0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [4, 4], users=2)
