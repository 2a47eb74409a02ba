"""dgx-h100-ndr-cluster's efficiency.hybridep is the fit ``bench/hybridep_published.py`` makes on
HybridEP's published H100 table (tests/data/published_collectives/hybridep_h100.csv, BF16,
kernel only, 16 SMs), and the rows the fit leaves pinned come within the spread it shows."""
from __future__ import annotations

import sys

import pytest

from tpsim.cluster.topology import load_topology

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import hybridep_published  # noqa: E402


def test_shipped_efficiencies_are_the_fit():
    nvl, net = hybridep_published.fit()
    levels = load_topology("dgx-h100-ndr-cluster").levels
    assert levels[0].efficiency.hybridep == pytest.approx(nvl, abs=5e-4)
    assert levels[1].efficiency.hybridep == pytest.approx(net, abs=5e-4)


def test_every_row_within_eight_percent_and_the_bound_stage_as_fitted():
    """At the fitted efficiencies: the NVLink stage binds at 16 ranks (2 nodes), the network
    at 32 and 64; every kernel time within 8% of the measured one."""
    nvl, net = hybridep_published.fit()
    for ranks, phase, t, _, d in hybridep_published.rows():
        stages = d.nvlink_s / nvl, d.network_s / net
        assert (stages[0] > stages[1]) == (ranks == 16), (ranks, phase)
        assert d.launch_s + d.latency_s + max(stages) == pytest.approx(t, rel=0.08)
