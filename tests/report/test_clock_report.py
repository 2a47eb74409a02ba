"""tpsim predict states the clock model that priced the step (tpsim.cluster.sustained): its text
and --json's inputs.clock_window, sustained_clock, sustained_utilisation, layer_clock."""
from __future__ import annotations

import dataclasses

import tpsim
from tpsim.cluster.sustained import sustained
from tpsim.report.render import prediction_json, prediction_report
from tpsim.report.summary import prediction_summary as summary_report
from tpsim.sim.price import window_clock

KEYS = ("clock_window", "sustained_clock", "sustained_utilisation", "layer_clock")


def _clock(p) -> tuple:
    inputs = prediction_json(p)["inputs"]
    return tuple(inputs[k] for k in KEYS)


def _device(name: str = "dgx-h100", **changes):
    topo = tpsim.load_topology(name)
    return topo.replaced(device=dataclasses.replace(topo.device, **changes))


def test_a_device_without_a_sustained_clock_says_nothing_in_text():
    p = tpsim.predict("gpt3-125m", "dgx-a100", tp=2)
    assert _clock(p) == ("none", 1.0, None, 1.0)
    assert "tensor clock" not in summary_report(p) + prediction_report(p)


def test_the_per_kernel_clock_is_stated_with_its_formula():
    p = tpsim.predict("gpt3-125m", "dgx-h100", tp=2)
    assert _clock(p) == ("kernel", 0.855, 0.746, None)
    line = "tensor clock per kernel (clock_window kernel): min(1, 0.855 (0.746 / (u w))^(1/3))"
    assert line in summary_report(p) and line in prediction_report(p)


def test_one_clock_for_every_kernel_without_a_utilisation():
    p = tpsim.predict("gpt3-125m", _device(sustained_utilisation=None), tp=2)
    assert _clock(p) == ("kernel", 0.855, None, 0.855)
    assert "tensor clock 0.855 of boost at the power limit" in summary_report(p)


def test_the_window_clock_is_the_one_that_priced_the_layer():
    """clock_window step: layer_clock is window_clock of the layer's ops, below 1 for GPT-3 at
    TP 8 in fp8."""
    topo = _device(clock_window="step")
    p = tpsim.predict("gpt3", topo, tp=8, dtype="fp8")
    window, clock = _clock(p)[0], _clock(p)[3]
    assert window == "step" and 0.3 < clock < 1
    assert clock == window_clock(p.run.template.at(p.run.dims)[0], sustained(topo).device)
    assert f"tensor clock {clock:.3f} of boost: the layer's mean draw" in summary_report(p)
