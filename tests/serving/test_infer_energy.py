"""tpsim.infer's energy and cost: the batch's GPUs busy from the prompt to the last token,
the prefill at full activity and the decode memory-bound (tpsim.serving.energy.run_energy)."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.power import BOUND_ACTIVITY, power_W
from tpsim.cluster.topology import load_topology


@pytest.mark.parametrize("tp, pp, batch", [(1, 1, 1), (4, 2, 16)])
def test_energy_and_cost_in_closed_form(tp, pp, batch):
    p = tpsim.infer("llama3-8b", "dgx-h100", tp=tp, pp=pp, batch=batch, prompt=1024, gen=128,
                    usd_per_gpu_hour=2.5)
    dev, pue = load_topology("dgx-h100").device, load_topology("dgx-h100").pue
    pre, total = p.prefill.time_s, p.total.time_s
    want = tp * pp * (power_W(dev, 1.0) * pre + power_W(dev, BOUND_ACTIVITY) * (total - pre))
    assert p.energy.j == pytest.approx(want * pue, rel=1e-12)
    assert p.energy.j_per_output_token == pytest.approx(p.energy.j / (batch * 128))
    assert p.cost.usd == pytest.approx(tp * pp * total / 3600 * 2.5, rel=1e-12)


def test_a_bigger_batch_spends_less_per_token():
    a = tpsim.infer("llama3-8b", "dgx-h100", tp=1, batch=1, prompt=512, gen=64)
    b = tpsim.infer("llama3-8b", "dgx-h100", tp=1, batch=32, prompt=512, gen=64)
    assert b.energy.j_per_output_token < a.energy.j_per_output_token / 4
    assert a.cost.usd is None


def test_a_bad_price_names_its_flag():
    with pytest.raises(ConfigError, match="--usd-per-gpu-hour"):
        tpsim.infer("llama3-8b", "dgx-h100", tp=1, usd_per_gpu_hour=-1.0)
