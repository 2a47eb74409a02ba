"""The training step's energy and cost (tpsim.training.energy) against the step's own split."""
from __future__ import annotations

import json
import math

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.layout import Layout
from tpsim.training.predict import predict

SETUP = dict(tp=2, pp=2, dp=2, global_batch=8, seq_len=1024)


def _by_hand(step, gpus: int, tdp: float, idle: float, pue: float) -> float:
    """GPUs x [P(1) compute + P(0.5) (exposed TP, PP, DP, optimizer) + P_idle (bubble, host)]
    x PUE, written out."""
    bound = step.tp_comm_exposed_s + step.pp_comm_exposed_s + step.dp_comm_exposed_s \
        + step.optimizer_s
    idle_s = step.bubble_s + step.host_wait_s
    half = idle + (tdp - idle) * 0.5
    return gpus * (tdp * step.compute_s + half * bound + idle * idle_s) * pue


def test_step_energy_is_the_closed_form_of_its_split():
    """dgx-a100: 400 W TDP, 55 W idle, PUE 1.2; the split sums to the step, so its parts are
    the busy, bound and idle times."""
    p = predict("gpt3-350m", "dgx-a100", **SETUP)
    st = p.step
    assert st.bubble_s > 0 and st.compute_s > 0
    assert st.energy_j == pytest.approx(_by_hand(st, 8, 400.0, 55.0, 1.2), rel=1e-9)
    assert 8 * 55 * st.time_s * 1.2 < st.energy_j < 8 * 400 * st.time_s * 1.2


def test_cost_needs_a_price_and_changes_no_time():
    free = predict("gpt3-350m", "dgx-a100", **SETUP)
    paid = predict("gpt3-350m", "dgx-a100", usd_per_gpu_hour=2.5, **SETUP)
    dear = predict("gpt3-350m", "dgx-a100", usd_per_gpu_hour=4.0, **SETUP)
    assert free.step.cost_usd is None
    assert paid.step.time_s == free.step.time_s and paid.step.energy_j == free.step.energy_j
    assert paid.step.cost_usd == pytest.approx(8 * paid.step.time_s / 3600 * 2.5)
    assert dear.step.cost_usd > paid.step.cost_usd


def test_more_replicas_spend_more_energy_per_step():
    """DP 2 -> 4 at the same micro-batches per replica: the step's time barely moves, twice
    the GPUs draw power through it."""
    two = predict("gpt3-350m", "dgx-a100", tp=2, dp=2, global_batch=8, seq_len=1024)
    four = predict("gpt3-350m", "dgx-a100", tp=2, dp=4, global_batch=16, seq_len=1024)
    assert four.step.energy_j > 1.5 * two.step.energy_j


def test_json_carries_energy_and_null_cost_without_a_price(capsys):
    argv = ["predict", "--model", "gpt3-350m", "--topology", "dgx-a100", "--tp", "2", "--json"]
    assert main(argv) == 0
    step = json.loads(capsys.readouterr().out)["step"]
    assert step["energy_j"] > 0 and step["cost_usd"] is None
    assert step["formula"]["energy_j"] == "tpsim.training.energy.step_energy_j"
    assert main(argv + ["--usd-per-gpu-hour", "3"]) == 0
    step = json.loads(capsys.readouterr().out)["step"]
    assert step["cost_usd"] == pytest.approx(2 * step["time_s"] / 3600 * 3)


@pytest.mark.parametrize("price", ["-1", "inf", "nan", "cheap"])
def test_a_bad_price_is_refused(price, capsys):
    argv = ["predict", "--model", "gpt3-350m", "--tp", "2", "--usd-per-gpu-hour", price]
    assert main(argv) == 2 and "--usd-per-gpu-hour" in capsys.readouterr().err


@pytest.mark.parametrize("price", [-1.0, math.inf, math.nan, True, "2"])
def test_a_bad_price_is_refused_by_the_layout(price):
    with pytest.raises(ConfigError, match="--usd-per-gpu-hour"):
        Layout(usd_per_gpu_hour=price)
