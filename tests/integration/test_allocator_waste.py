"""bench/allocator_waste_published.py: tpsim's allocator share is its first report's measurement,
and the others measured in the same way exceed it (MoE with DeepEP, 0.20-0.43)."""
from __future__ import annotations

import sys

import pytest

from tpsim.cluster.topology import load_topology

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from allocator_waste_published import rows  # noqa: E402


def test_the_default_share_is_the_megatron_gpt_345m_report():
    """89 MiB held over the 1,880 its step churns: 0.047, the devices' default."""
    (run, churned, waste, share, predicted), *others = rows()
    assert "GPT 345M" in run and round(share, 3) == 0.047
    assert load_topology("dgx-h100").device.memory_fragmentation == round(share, 3)
    assert predicted == pytest.approx(0.047 * churned, rel=1e-12)
    assert len(others) == 4 and all(0.19 < s < 0.43 and p < w for _, _, w, s, p in others)
