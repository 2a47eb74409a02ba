"""The engine loop (tpsim.serving.engine): latency at low load against infer's prefill, load
raising the tail and the throughput, the offline run the fastest, determinism, preemption
that still completes every request, token conservation, speed."""
from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings, strategies as st

import tpsim
from tpsim.base.errors import ConfigError, TpsimError
from tpsim.serving.engine import serve
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout

SMALL = dict(prompt=512, gen=64, requests=200)


@pytest.fixture(scope="module")
def by_rate():
    return {r: serve("llama2-70b", "dgx-h100", rate=r, seed=1, **SMALL)
            for r in (0.5, 4.0, 16.0, 64.0, math.inf)}


def test_low_load_ttft_is_the_unloaded_prefill():
    """One request at a time: TTFT p50 within 25% of infer's prefill of the same prompt and
    the front end's latency (the engine's host work for one sequence, 0.5 ms, the rest)."""
    p = serve("llama2-70b", "dgx-h100", rate=0.02, requests=40, prompt=2048, gen=32)
    pre = tpsim.infer("llama2-70b", "dgx-h100", batch=1, prompt=2048, gen=32).prefill.time_s
    pre += ServeSettings().frontend_latency_us * 1e-6
    assert p.latency.ttft_s.p50 == pytest.approx(pre, rel=0.25)
    assert p.latency.ttft_s.p50 == pytest.approx(pre, rel=0.01)     # measured: equal
    tpot = tpsim.infer("llama2-70b", "dgx-h100", batch=1, prompt=2048,
                       gen=32).decode.time_per_token_s
    assert p.latency.tpot_s.p50 == pytest.approx(tpot, rel=0.25)


def test_load_raises_the_tail_and_the_throughput(by_rate):
    rates = (0.5, 4.0, 16.0, 64.0)
    ttft = [by_rate[r].latency.ttft_s.p99 for r in rates]
    thr = [by_rate[r].throughput.output_tokens_per_s for r in rates]
    assert ttft == sorted(ttft) and ttft[-1] > 2 * ttft[0]
    assert thr == sorted(thr) and thr[-1] > 10 * thr[0]


def test_offline_throughput_is_the_highest(by_rate):
    best = by_rate[math.inf].throughput.output_tokens_per_s
    assert all(p.throughput.output_tokens_per_s <= best * (1 + 1e-9)
               for p in by_rate.values())


def test_a_seed_fixes_the_run():
    kw = dict(rate=8.0, requests=150, prompt=700, gen=50, prompt_dist="exponential",
              gen_dist="uniform:2,100")
    a, b = serve("llama2-70b", seed=7, **kw), serve("llama2-70b", seed=7, **kw)
    c = serve("llama2-70b", seed=8, **kw)
    assert a.latency == b.latency and a.throughput == b.throughput
    assert a.latency != c.latency


def test_kv_exhaustion_preempts_and_completes_every_request():
    """TP=2 leaves ~57k tokens of cache: 200 prompts of 2048 + 256 cannot all run."""
    p = serve("llama2-70b", "dgx-h100", tp=2, requests=200, prompt=2048, gen=256)
    assert p.engine.kv_cache_tokens < 200 * 2304
    assert p.scheduler.preemptions > 0
    assert (p.generated == 256).all()
    assert (p.e2e > 0).all() and (p.e2e >= p.ttft).all()


@pytest.mark.parametrize("dist", ["fixed", "exponential", "uniform:1,300"])
def test_every_request_gets_exactly_its_tokens(dist):
    from tpsim.serving.arrivals import draw_requests
    kw = dict(rate=20.0, requests=300, seed=3, prompt=300, gen=40, gen_dist=dist,
              max_num_seqs=32, max_num_batched_tokens=512)
    p = serve("llama2-7b", "dgx-h100", tp=1, **kw)
    want = draw_requests(300, 20.0, 3, 300, 40, "fixed", dist).gen
    assert (p.generated == want).all()
    assert p.inputs.output_tokens == want.sum()
    assert p.scheduler.mean_running <= 32


def test_the_token_budget_chunks_long_prompts():
    """A prompt 4x the budget takes at least 4 prefill steps before its first token."""
    one = serve("llama2-7b", tp=1, requests=1, prompt=8192, gen=2, max_num_batched_tokens=2048)
    assert one.scheduler.prefill_steps == 4
    whole = serve("llama2-7b", tp=1, requests=1, prompt=8192, gen=2)
    assert whole.scheduler.prefill_steps == 1
    assert one.latency.ttft_s.p50 > whole.latency.ttft_s.p50


def test_eager_is_slower_than_cuda_graphs():
    kw = dict(requests=20, prompt=128, gen=64, rate=1.0)
    assert serve("llama2-7b", tp=1, eager=True, **kw).latency.tpot_s.p50 > \
        serve("llama2-7b", tp=1, **kw).latency.tpot_s.p50


def test_padding_to_the_captured_graphs_slows_only_graph_steps():
    """9 sequences, all at once: every decode step replays the graph of 16 (--cuda-graph-align
    8); eager steps have no graph to pad."""
    kw = dict(tp=1, rate=math.inf, requests=9, prompt=256, gen=64)
    plain, padded = (serve("llama3-8b", "dgx-a100", cuda_graph_align=a, **kw) for a in (0, 8))
    assert padded.throughput.duration_s > plain.throughput.duration_s
    assert padded.latency.ttft_s.p50 == plain.latency.ttft_s.p50      # the prefill step
    eager = [serve("llama3-8b", "dgx-a100", eager=True, cuda_graph_align=a, **kw)
             for a in (0, 8)]
    assert eager[0].throughput.duration_s == eager[1].throughput.duration_s


def test_two_thousand_requests_under_a_cpu_second():
    t0 = time.process_time()
    p = serve("llama2-70b", "dgx-h100", requests=2000, rate=20.0, prompt=1024, gen=256,
              prompt_dist="exponential", gen_dist="uniform:10,500")
    spent = time.process_time() - t0
    assert p.inputs.requests == 2000
    assert spent < 3.0, spent


def test_settings_objects_and_keywords():
    lay, st = ServingLayout(tp=4, prompt=256, gen=16), ServeSettings(requests=30, rate=5.0)
    a = serve("llama2-70b", layout=lay, settings=st)
    b = serve("llama2-70b", tp=4, prompt=256, gen=16, requests=30, rate=5.0)
    assert a.latency == b.latency
    with pytest.raises(TpsimError):
        serve("llama2-70b", settings=st, requests=31)


@pytest.mark.parametrize("kw, flag", [
    (dict(rate=0), "--rate"), (dict(rate=-1.0), "--rate"), (dict(prompt_dist="zipf"),
                                                            "--prompt-dist"),
    (dict(gen_dist="uniform:9,3"), "--gen-dist"), (dict(tp=8, pp=2), "--tp"),
    (dict(prompt=10**7), "--prompt"), (dict(max_num_seqs=0), "--max-num-seqs"),
    (dict(tp=1), "--tp: expected a split whose 128.5 GiB")])   # 69B of bf16 weights: no cache
def test_bad_settings_name_their_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        serve("llama2-70b", requests=2, **kw)


def test_multi_step_scheduling_admits_at_the_end_of_a_run():
    """vLLM V0's --num-scheduler-steps S: a request arriving during a run of S decode steps
    waits for its end, so the TTFT grows by less than S steps (TPOT p99 bounds a step) and
    more with S; the decode steps themselves hardly change, and a request's last tokens wait
    for its run's end, at most S - 1 steps over its 127 gaps."""
    runs = {s: serve("llama2-7b", "dgx-h100", tp=1, rate=20.0, requests=300, prompt=256,
                     gen=128, seed=2, num_scheduler_steps=s) for s in (1, 4, 10)}
    base = runs[1].latency
    for s in (4, 10):
        wait = runs[s].latency.ttft_s.mean - base.ttft_s.mean
        assert 0 < wait < s * base.tpot_s.p99
        grow = runs[s].latency.tpot_s.p50 / base.tpot_s.p50
        assert 0.95 < grow < (1 + (s - 1) / 127) * 1.05
    assert runs[10].latency.ttft_s.mean > runs[4].latency.ttft_s.mean


def test_a_sequence_ending_inside_a_run_ends_with_the_run():
    """All at once, 1 + 94 tokens each: the 94 decodes end 4 steps into the tenth run of 10,
    so each request ends 100 decode steps after its first token, not 94."""
    kw = dict(tp=1, rate=math.inf, requests=8, prompt=128, gen=95)
    one, ten = (serve("llama2-7b", "dgx-h100", num_scheduler_steps=s, **kw) for s in (1, 10))
    assert ten.latency.ttft_s.p50 == one.latency.ttft_s.p50
    assert ten.latency.tpot_s.p50 == pytest.approx(one.latency.tpot_s.p50 * 100 / 94, rel=1e-3)


def test_separate_prefill_steps_stall_the_decodes():
    """--separate-prefill: a step that prefills runs no decodes, so every arrival pauses the
    running sequences for a whole prefill step: the TPOT grows, the more the higher the rate;
    the mixed step prices the same prompts beside the decodes instead."""
    def tpot(rate, sep):
        return serve("llama2-7b", "dgx-h100", tp=1, rate=rate, requests=300, prompt=512,
                     gen=128, seed=3, separate_prefill=sep).latency.tpot_s.mean
    rise = [tpot(r, True) / tpot(r, False) for r in (5.0, 20.0)]
    assert 1 < rise[0] < rise[1]


@settings(max_examples=25, deadline=None)
@given(requests=st.integers(1, 60), prompt=st.integers(1, 3000), gen=st.integers(2, 300),
       gen_dist=st.sampled_from(["fixed", "exponential"]),
       seqs=st.integers(1, 64), budget=st.integers(16, 4096), block=st.sampled_from([1, 16, 32]),
       headroom=st.sampled_from([0.0, 0.75, 0.8]), rate=st.sampled_from([math.inf, 3.0, 50.0]),
       seed=st.integers(0, 10), multi=st.sampled_from([1, 10]), separate=st.booleans())
def test_conservation_under_any_knobs(requests, prompt, gen, gen_dist, seqs, budget, block,
                                      headroom, rate, seed, multi, separate):
    """Whatever the knobs and however short the cache (0.8 headroom leaves Llama 2 7B a few
    thousand tokens), every request gets exactly its tokens, after it arrives, first token
    before last, and no step holds more than max_num_seqs."""
    try:
        p = serve("llama2-7b", "dgx-h100", tp=1, requests=requests, prompt=prompt, gen=gen,
                  max_num_seqs=seqs, max_num_batched_tokens=budget, block_size=block,
                  memory_headroom=headroom, rate=rate, seed=seed, prompt_dist="exponential",
                  gen_dist=gen_dist, num_scheduler_steps=multi, separate_prefill=separate)
    except ConfigError as e:          # a request longer than the whole cache: refused
        assert "--prompt" in str(e)
        return
    from tpsim.serving.arrivals import draw_requests
    want = draw_requests(requests, rate, seed, prompt, gen, "exponential", gen_dist).gen
    assert (p.generated == want).all()
    assert (p.ttft > 0).all() and (p.e2e >= p.ttft).all()
    assert p.scheduler.mean_running <= seqs
    assert p.throughput.output_tokens_per_s > 0
