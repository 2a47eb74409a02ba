"""The power model (tpsim.cluster.power): closed forms on a hand device, bounds, and every
shipped topology's power figures."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.base.errors import ConfigError
from tpsim.cluster.power import gpu_energy_j, gpu_hours_usd, idle_W, job_energy_j, power_W
from tpsim.cluster.topology import load_topology, shipped_topologies

from tests.conftest import make_topology

LEVELS = [{"name": "nvlink", "size": 8, "bandwidth_GBps": 100, "latency_us": 1}]


def _topo(pue=1.5, **device):
    return dataclasses.replace(make_topology(LEVELS, device), pue=pue)


def test_energy_of_a_hand_device_in_closed_form():
    """tdp 500 W, idle 100 W, PUE 1.5; 10 s with 4 s computing, 2 s bound, 4 s idle:
    500 x 4 + (100 + 400 x 0.5) x 2 + 100 x 4 = 3000 J per GPU; 3 GPUs: 9000 x 1.5 = 13500 J."""
    topo = _topo(tdp_W=500, idle_W=100)
    assert power_W(topo.device, 0.0) == 100 and power_W(topo.device, 1.0) == 500
    assert gpu_energy_j(topo.device, 10.0, 4.0, 2.0) == pytest.approx(3000.0)
    assert job_energy_j(topo, 3, 10.0, 4.0, 2.0) == pytest.approx(13500.0)


def test_idle_power_defaults_to_a_tenth_of_tdp_and_no_tdp_gives_no_energy():
    assert idle_W(_topo(tdp_W=600).device) == pytest.approx(60.0)
    assert job_energy_j(_topo(), 8, 1.0, 1.0, 0.0) is None


def test_idle_power_must_stay_below_tdp():
    with pytest.raises(ConfigError, match="idle_W"):
        make_topology(LEVELS, {"tdp_W": 300, "idle_W": 300})
    with pytest.raises(ConfigError, match="idle_W"):
        make_topology(LEVELS, {"idle_W": 50})


@given(time=st.floats(0.01, 100), busy=st.floats(0, 1), bound=st.floats(0, 1),
       gpus=st.integers(1, 64))
def test_energy_lies_between_idle_and_full_power_and_grows_with_gpus(time, busy, bound, gpus):
    """gpus x P_idle x t x PUE <= E <= gpus x P_tdp x t x PUE; one more GPU for the same step
    (equal time and split) never spends less."""
    topo = _topo(tdp_W=700, idle_W=70)
    busy_s = busy * time
    bound_s = bound * (time - busy_s)
    e = job_energy_j(topo, gpus, time, busy_s, bound_s)
    assert gpus * 70 * time * 1.5 * (1 - 1e-9) <= e <= gpus * 700 * time * 1.5 * (1 + 1e-9)
    assert job_energy_j(topo, gpus + 1, time, busy_s, bound_s) >= e


def test_more_activity_never_less_energy():
    topo = _topo(tdp_W=700, idle_W=70)
    assert (job_energy_j(topo, 8, 1.0, 0.0, 0.0) < job_energy_j(topo, 8, 1.0, 0.0, 0.5)
            < job_energy_j(topo, 8, 1.0, 0.5, 0.5) < job_energy_j(topo, 8, 1.0, 1.0, 0.0))


@given(price=st.floats(0, 100), more=st.floats(0, 100), gpus=st.integers(1, 1024),
       time=st.floats(0, 1e4))
def test_cost_is_gpu_hours_times_price_and_a_higher_price_never_costs_less(price, more, gpus,
                                                                         time):
    cost = gpu_hours_usd(gpus, time, price)
    assert cost == pytest.approx(gpus * time / 3600 * price)
    assert gpu_hours_usd(gpus, time, price + more) >= cost


def test_no_price_no_cost():
    assert gpu_hours_usd(8, 3600.0, None) is None
    assert gpu_hours_usd(8, 3600.0, 2.0) == pytest.approx(16.0)


TDP_W = {"A100-SXM4-80GB": 400, "A100-SXM4-40GB": 400, "H100-SXM5-80GB": 700, "H200-SXM-141GB": 700, "L40S-48GB": 350,
         "B200-180GB": 1000, "GB200-186GB": 1200, "GB300-288GB": 1400,
         "H100-SXM-96GB-HBM2e-500W": 500}   # torchtitan's Grand Teton page: "the default 500W power limit"


@pytest.mark.parametrize("name", sorted(shipped_topologies()))
def test_every_shipped_topology_gives_power_and_pue(name):
    topo = load_topology(name)
    dev = topo.device
    assert dev.tdp_W == TDP_W[dev.name]
    assert dev.idle_W is not None and 0 < dev.idle_W < 0.2 * dev.tdp_W
    assert topo.pue == 1.2


def test_minus_zero_price_in_the_api_costs_zero():
    import math

    import tpsim
    p = tpsim.predict("gpt3-125m", "dgx-h100", tp=1, usd_per_gpu_hour=-0.0)
    assert p.step.cost_usd == 0 and math.copysign(1, p.step.cost_usd) == 1
