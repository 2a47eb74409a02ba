"""tpsim serve's energy and cost (tpsim.serving.energy) against the engine's busy time."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import main
from tpsim.cluster.topology import load_topology
from tpsim.serving.energy import run_energy
from tpsim.serving.engine import serve
from tpsim.spec.serve import ServeSettings

RUN = dict(tp=1, requests=20, prompt=300, gen=20)


def test_run_energy_in_closed_form():
    """dgx-h100: 700 W TDP, 70 W idle, PUE 1.2; 2 GPUs over 10 s, 1 s with prefill, 4 s
    decode-only, 5 s idle: 2 x (700 + 385 x 4 + 70 x 5) x 1.2 = 6216 J; 1000 tokens; $3 per
    GPU-hour: 2 x 10 / 3600 x 3 = $1/60, $16.67 per million tokens."""
    energy, cost = run_energy(load_topology("dgx-h100"), 2, 10.0, 1.0, 4.0, 1000, 3.0)
    assert energy.j == pytest.approx(6216.0) and energy.j_per_output_token == pytest.approx(6.216)
    assert cost.usd == pytest.approx(1 / 60)
    assert cost.usd_per_million_output_tokens == pytest.approx(1e6 / 60 / 1000)


def test_offline_run_is_busy_or_waits_for_the_host_and_its_energy_is_the_closed_form():
    """Offline, the GPU is never idle but while the engine's host work runs between steps,
    the front end paces a step, or the requests pass the front end before the first step
    (idle power, 70 W on dgx-h100)."""
    p = serve("llama2-7b", "dgx-h100", **RUN)
    e, dur, s = p.energy, p.throughput.duration_s, p.scheduler
    idle = s.host_wait_s + s.frontend_wait_s + ServeSettings().frontend_latency_us * 1e-6
    assert e.prefill_busy_s > 0 and e.decode_busy_s > 0
    assert e.prefill_busy_s + e.decode_busy_s + idle == pytest.approx(dur, rel=1e-9)
    assert p.scheduler.host_wait_s > 0
    by_hand = (700 * e.prefill_busy_s + 385 * e.decode_busy_s + 70 * idle) * 1.2
    assert e.j == pytest.approx(by_hand, rel=1e-9)
    assert e.j_per_output_token == pytest.approx(e.j / p.inputs.output_tokens)
    assert p.cost.usd is None and p.cost.usd_per_million_output_tokens is None


def test_a_slow_arrival_rate_idles_and_costs_more_per_token():
    """At 2 requests/s the engine waits for arrivals: its busy time is below the duration, and
    each token carries more idle power and more rented time than offline."""
    fast = serve("llama2-7b", "dgx-h100", usd_per_gpu_hour=2.0, **RUN)
    slow = serve("llama2-7b", "dgx-h100", usd_per_gpu_hour=2.0, rate=2.0, **RUN)
    e = slow.energy
    assert e.prefill_busy_s + e.decode_busy_s < 0.9 * slow.throughput.duration_s
    assert slow.energy.j_per_output_token > fast.energy.j_per_output_token
    assert slow.cost.usd_per_million_output_tokens > fast.cost.usd_per_million_output_tokens


def test_a_higher_price_never_costs_less_and_changes_no_time():
    cheap = serve("llama2-7b", "dgx-h100", usd_per_gpu_hour=1.0, **RUN)
    dear = serve("llama2-7b", "dgx-h100", usd_per_gpu_hour=3.0, **RUN)
    assert dear.throughput.duration_s == cheap.throughput.duration_s
    assert dear.cost.usd_per_million_output_tokens == pytest.approx(
        3 * cheap.cost.usd_per_million_output_tokens)
    assert cheap.cost.usd == pytest.approx(cheap.throughput.duration_s / 3600 * 1.0)


def test_json_and_text_carry_energy_and_cost(capsys):
    argv = ["serve", "--model", "llama2-7b", "--tp", "1", "--requests", "20", "--prompt", "300",
            "--gen", "20"]
    assert main(argv + ["--json", "--usd-per-gpu-hour", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["energy"]["j_per_output_token"] > 0
    assert out["cost"]["usd_per_million_output_tokens"] > 0
    assert out["energy"]["formula"] == "tpsim.serving.energy.run_energy"
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "J per output token" in text and "per million output tokens" not in text
