"""ServeSettings (tpsim.spec.serve): vLLM's defaults, the length distributions, the rate kind."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tpsim.base.errors import ConfigError
from tpsim.serving.arrivals import draw_requests
from tpsim.spec.serve import ServeSettings, length_dist


def test_defaults_are_vllms():
    s = ServeSettings()
    assert (s.max_num_seqs, s.max_num_batched_tokens, s.block_size) == (256, 8192, 16)
    assert math.isinf(s.rate)


@pytest.mark.parametrize("text, parsed", [("fixed", ("fixed",)),
                                          ("exponential", ("exponential",)),
                                          ("uniform:3,9", ("uniform", 3, 9)),
                                          ("uniform: 5, 5", ("uniform", 5, 5))])
def test_length_dists(text, parsed):
    assert length_dist(text, "--gen-dist") == parsed


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, True, "2"])
def test_a_rate_is_positive(rate):
    with pytest.raises(ConfigError, match="--rate"):
        ServeSettings(rate=rate)


def test_arrivals_are_poisson_and_lengths_in_range():
    r = draw_requests(20000, 4.0, 5, 100, 50, "uniform:10,20", "exponential")
    gaps = np.diff(r.arrival_s)
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert gaps.std() == pytest.approx(0.25, rel=0.05)        # exponential: std = mean
    assert r.prompt.min() == 10 and r.prompt.max() == 20
    assert r.gen.mean() == pytest.approx(50.5, rel=0.03) and r.gen.min() >= 1
    offline = draw_requests(10, math.inf, 0, 100, 50)
    assert (offline.arrival_s == 0).all() and (offline.prompt == 100).all()
