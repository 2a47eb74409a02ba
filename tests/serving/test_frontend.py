import numpy as np
import pytest

from tpsim.base.errors import ConfigError
from tpsim.serving.engine import serve
from tpsim.serving.frontend import frontend_s, paced_wall_s
from tpsim.spec.serve import ServeSettings

# few sequences, so that every step's forward is far shorter than 10 ms
RUN = dict(requests=4, max_num_seqs=4, prompt=16, gen=40, rate=float("inf"),
           host_step_us=0.0, host_seq_us=0.0, frontend_latency_us=0.0)


def test_front_end_time_is_affine_in_requests_and_tokens_over_the_processes():
    st = ServeSettings(frontend_request_us=300.0, frontend_token_us=50.0, api_servers=2)
    assert frontend_s(st, np.array([0, 2]), np.array([100, 0])) == \
        pytest.approx([2500e-6, 300e-6])
    assert paced_wall_s(np.array([1e-3, 2e-3]), np.array([1.5e-3, 1.5e-3])) == \
        pytest.approx([1.5e-3, 2e-3])


def test_a_slow_front_end_paces_every_decode_step():
    """Each decode step streams one token per sequence: at 10 ms a token and 4 sequences the
    front end takes 40 ms a step, far above the forward, so TPOT is exactly 40 ms; with two
    processes, 20 ms."""
    one = serve("llama3-8b", "dgx-h100", frontend_token_us=10_000.0, **RUN)
    two = serve("llama3-8b", "dgx-h100", frontend_token_us=10_000.0, api_servers=2, **RUN)
    assert one.latency.tpot_s.mean == pytest.approx(0.04, rel=1e-12)
    assert two.latency.tpot_s.mean == pytest.approx(0.02, rel=1e-12)
    assert one.scheduler.frontend_wait_s > 0


def test_a_request_costs_the_step_that_admits_it():
    """Every request is admitted in the first step (one prefill of 4 prompts): 4 requests at
    50 ms and 4 first tokens at 10 ms pace it to 240 ms, the TTFT of each."""
    p = serve("llama3-8b", "dgx-h100", frontend_request_us=50_000.0,
              frontend_token_us=10_000.0, **RUN)
    assert p.latency.ttft_s.p50 == pytest.approx(0.24, rel=1e-12)


def test_no_front_end_waits_nothing_and_a_faster_one_never_slows_the_run():
    runs = [serve("llama3-8b", "dgx-h100", frontend_token_us=us, **dict(RUN, requests=12))
            for us in (0.0, 500.0, 2_000.0, 8_000.0)]
    assert runs[0].scheduler.frontend_wait_s == 0.0
    durations = [p.throughput.duration_s for p in runs]
    assert durations == sorted(durations)


def test_the_latency_adds_to_a_lone_requests_ttft_and_nothing_else():
    """One user: each request finds the engine idle, so its TTFT is the latency + its prefill
    step, exactly; its decode steps do not change."""
    one = dict(RUN, max_num_seqs=256, requests=5, users=1)
    none = serve("llama3-8b", "dgx-h100", **one)
    late = serve("llama3-8b", "dgx-h100", **dict(one, frontend_latency_us=7_000.0))
    assert late.latency.ttft_s.p50 - none.latency.ttft_s.p50 == pytest.approx(7e-3, rel=1e-9)
    assert late.latency.tpot_s.mean == pytest.approx(none.latency.tpot_s.mean, rel=1e-12)


def test_a_closed_loop_runs_as_an_engine_holding_that_many_sequences():
    """With no latency, C clients each sending as their last request ends is the engine
    holding C sequences with every request queued: the same steps and throughput; but each
    TTFT counts from its client's sending, not from the run's start."""
    loop = serve("llama3-8b", "dgx-h100", **dict(RUN, max_num_seqs=256, requests=24, users=4))
    held = serve("llama3-8b", "dgx-h100", **dict(RUN, requests=24))
    assert loop.scheduler.steps == held.scheduler.steps
    assert loop.throughput.output_tokens_per_s == \
        pytest.approx(held.throughput.output_tokens_per_s, rel=1e-12)
    assert loop.latency.ttft_s.p99 < held.latency.ttft_s.p99 / 3


def test_a_closed_loop_needs_an_infinite_rate():
    with pytest.raises(ConfigError, match="--users"):
        ServeSettings(users=4, rate=2.0)
