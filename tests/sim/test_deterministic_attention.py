"""The attention backward under --deterministic-mode (tpsim.sim.deterministic_attention):
the key-loop price where the kernel lists a deterministic_tile, the dP workspace where it lists
deterministic_workspace_bytes, every other op as given."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost.dp_workspace import workspace_backward_time
from tpsim.cost.key_loop import deterministic_backward_time
from tpsim.layer.ops import Attention, MemoryBound
from tpsim.sim.deterministic_attention import deterministic_attention_times


def _ops(kernel):
    fwd = Attention(1, 32, 8, 8192, 8192, 128, "bf16", True, False, kernel)
    return [fwd, dataclasses.replace(fwd, backward=True), MemoryBound(1e6)]


def test_only_a_listed_kernels_backward_changes():
    dev = load_topology("dgx-a100").device
    times = [1e-3, 2e-3, 3e-3]
    got = deterministic_attention_times(_ops("flash2"), times, dev)
    assert got[0] == times[0] and got[2] == times[2]
    assert got[1] == pytest.approx(deterministic_backward_time(
        2e-3, 1, 32, 8192, 8192, 128, True, dev, (64, 128)), rel=1e-12)
    assert got[1] > 1.5 * times[1]
    assert deterministic_attention_times(_ops("triton"), times, dev) == times   # no tile listed
    h100 = load_topology("dgx-h100").device     # flash3 (cuDNN on Hopper): the dP workspace
    got = deterministic_attention_times(_ops(None), times, h100)
    assert got[0] == times[0] and got[2] == times[2]
    assert got[1] == pytest.approx(workspace_backward_time(
        2e-3, 1, 32, 8192 * 8193 / 2, 2, h100), rel=1e-12)
    b200 = load_topology("dgx-b200").device     # Blackwell's own deterministic engine: none
    assert deterministic_attention_times(_ops(None), times, b200) == times
