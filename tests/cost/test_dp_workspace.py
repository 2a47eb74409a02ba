"""cuDNN's deterministic backward on Hopper (tpsim.cost.dp_workspace): the fused kernel less
its dQ matmul, plus the dP workspace's dS written and read back at the memory rate."""
from __future__ import annotations

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost.dp_workspace import DQ_SHARE, workspace_backward_time
from tpsim.layer.ops import Attention


def test_the_workspace_bytes_by_hand():
    """The Megatron CI TP 1 layer on H100: b 1, 32 heads, causal s 8192: dS is
    32 x 8192 x 8193 / 2 pairs of 2 bytes, written once and read once: 4.30 GB at the
    device's memory rate, less a fifth of the default kernel."""
    dev = load_topology("dgx-h100").device
    pairs = Attention(1, 32, 8, 8192, 8192, 128, "bf16", True, True).pairs
    assert pairs == 8192 * 8193 / 2
    nbytes = 2 * 32 * pairs * 2
    rate = dev.memory_bandwidth_Bps * dev.memory_efficiency
    t = workspace_backward_time(3e-3, 1, 32, pairs, 2, dev)
    assert t == pytest.approx(3e-3 * (1 - DQ_SHARE) + dev.kernel_launch_s + nbytes / rate,
                              rel=1e-12)
    assert 4.29e9 < nbytes < 4.31e9


def test_no_workspace_is_the_default_and_it_grows_with_heads():
    dev = load_topology("dgx-h200").device
    assert workspace_backward_time(2e-3, 1, 32, 1e6, 0, dev) == 2e-3
    one, two = (workspace_backward_time(2e-3, 1, h, 4e6, 2, dev) for h in (32, 64))
    assert two - one == pytest.approx(2 * 32 * 4e6 * 2 / (dev.memory_bandwidth_Bps
                                                          * dev.memory_efficiency), rel=1e-9)
