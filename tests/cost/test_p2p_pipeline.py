"""NCCL's p2p schedule inside one node (tpsim.cost.p2p_pipeline): channels a peer, CTAs shared,
the chunked pipeline; and what it adds to an all-to-all."""
import math

import pytest
from hypothesis import given, strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.cost.collectives import collective_time
from tpsim.cost.p2p_pipeline import (P2P_CHANNELS, P2P_NVL_CHUNK, p2p_channels_per_peer,
                                     p2p_ll_s, p2p_pipeline_s)

KiB, MiB = 2**10, 2**20


@pytest.mark.parametrize("peer_bytes, ranks, k", [
    (16 * KiB, 8, 1), (64 * KiB, 8, 1), (64 * KiB + 1, 8, 2), (200 * KiB, 8, 4),
    (64 * MiB, 8, 4), (64 * MiB + 1, 8, 8), (128 * MiB + 1, 8, 16), (1 << 30, 8, 32),
    (1 * MiB, 4, 8), (1 * MiB, 2, 16), (1 * MiB, 72, 1)])
def test_channels_per_peer_follow_nccls_rule(peer_bytes, ranks, k):
    """addP2pToPlan: min(k_min, ceil(b / 64 KiB)), k_min n <= 32; doubled above 16 MiB a part."""
    assert p2p_channels_per_peer(peer_bytes, ranks) == k


def test_pipeline_closed_form():
    """4 MiB a peer on 8 GPUs: 4 channels of 1 MiB, two 512 KiB chunks and the fill, one part a
    CTA: 3 c / r. 128 MiB a peer: 16 channels of 8 MiB (16 chunks), 4 parts a CTA."""
    r = 22.1e9
    assert p2p_pipeline_s(4 * MiB, 8, r) == pytest.approx(3 * P2P_NVL_CHUNK / r)
    assert p2p_pipeline_s(128 * MiB + 1, 8, r) == pytest.approx(
        ((128 * MiB + 1) / 16 / P2P_NVL_CHUNK + 1) * P2P_NVL_CHUNK * 4 / r)
    assert p2p_pipeline_s(0, 8, r) == 0.0


@given(st.floats(1.0, 2.0**34), st.sampled_from([2, 4, 8, 16, 72]))
def test_pipeline_brackets_the_parts_data(b, n):
    """A part's data at r / w, plus at most one chunk of fill."""
    r = 20e9
    k = p2p_channels_per_peer(b, n)
    w = math.ceil(n * k / P2P_CHANNELS)
    data = b / k * w / r
    t = p2p_pipeline_s(b, n, r)
    assert data < t <= data + P2P_NVL_CHUNK * w / r + 1e-15


def test_all_to_all_adds_the_pipeline_only_where_it_binds():
    """On dgx-b200 (22.1 GB/s an SM) 256 MiB a rank runs at 4 channels a peer: 28 CTAs x 22.1
    GB/s bound it, below the links' 722 GB/s; the pipeline adds the difference; on LL the
    LL kernel's (:func:`p2p_ll_s`). Across nodes and on a device without the SM rate
    (dgx-h100) it adds nothing."""
    b200 = load_topology("dgx-b200")
    c = collective_time("all-to-all", 256 * MiB, 8, b200)
    assert c.pipeline_s > 0
    assert c.transfer_s + c.pipeline_s == pytest.approx(p2p_pipeline_s(32 * MiB, 8, 22.1e9))
    assert c.time_s == pytest.approx(c.launch_s + c.latency_s + c.transfer_s + c.pipeline_s
                                     + c.copy_s)
    ll = collective_time("all-to-all", 8 * KiB, 8, b200)       # LL: its own kernel's rate
    assert ll.protocol == "ll" and ll.transfer_s + ll.pipeline_s == pytest.approx(
        p2p_ll_s(KiB, 8, 8.81e9, P2P_NVL_CHUNK))
    assert collective_time("all-to-all", 256 * MiB, 8, load_topology("dgx-h100")).pipeline_s == 0.0
    assert collective_time("all-to-all", 256 * MiB, 16,
                           load_topology("dgx-b200-ndr-cluster")).pipeline_s == 0.0
