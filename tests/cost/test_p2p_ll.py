"""NCCL's point-to-point LL as each release runs it: the release table (tpsim.cluster.nccl
NCCL_P2P) against the values read from NCCL's code, and the LL kernel's time
(tpsim.cost.p2p_pipeline.p2p_ll_s) against closed forms."""
from __future__ import annotations

import pytest

from tpsim.cluster.nccl import NCCL_NVLS, NCCL_P2P, with_nccl
from tpsim.cluster.topology import load_topology
from tpsim.cost.collectives import collective_time
from tpsim.cost.p2p_pipeline import P2P_NVL_CHUNK, p2p_ll_s, p2p_recv_warps

KiB, MiB = 2**10, 2**20
P2P_LL_THRESHOLD = 16384                  # enqueue.cc NCCL_PARAM(P2pLLThreshold), 2.18-2.30
LL_STEP = 8 * 512 * 8 * 16 // 8           # DEFAULT_LL_BUFFSIZE / NCCL_STEPS: lines x threads x steps x 16 B
B200_RING_CTA = 2 * 141.0e9 / 32          # tuning.cc llMaxBws[Blackwell][N1] over 32 ring CTAs


def test_release_table_holds_the_codes_values():
    """src/enqueue.cc addP2pToPlan: v2.18.5-1 and v2.21.5-1 test a channel's part against
    P2P_LL_THRESHOLD, a peer's bytes up to 64 KiB one part (calcP2pChunkSize at the 512 KiB
    p2pChunkSize); v2.22.3-1 .. v2.27.3-1 test a peer's bytes against thresholdLL =
    nChannelsMax x P2P_LL_THRESHOLD (p2pnChannelsPerPeer 32 on 8 NVSwitch GPUs) and split them
    at LL's step, buffSizes[LL] / NCCL_STEPS = 64 KiB."""
    assert LL_STEP == 65536
    assert all(NCCL_P2P[f"2.{m}"] == (P2P_LL_THRESHOLD, P2P_NVL_CHUNK) for m in range(18, 22))
    assert all(NCCL_P2P[f"2.{m}"] == (32 * P2P_LL_THRESHOLD, LL_STEP) for m in range(22, 29))
    assert NCCL_P2P["2.28.3"] == NCCL_P2P["2.28.7"] == NCCL_P2P["2.28"]
    assert set(NCCL_P2P) == set(NCCL_NVLS)


def _ll_peer_bytes_2_29(channels_min: int = 32, channels_max: int = 32) -> int:
    """The most bytes to one peer that v2.29.2-1 .. v2.30.7-1 run on LL in a node, by
    addP2pToPlan's own steps: nChannels = min(nChannelsMin, divUp(bytes, p2pChunkSize / 8)),
    doubled while a part exceeds p2pChunkSize x 32; LL where bytes <= nChannels x 16 KiB."""
    def ll(nbytes: int) -> bool:
        n = min(channels_min, -(-nbytes // (P2P_NVL_CHUNK // 8)))
        while -(-nbytes // n) > P2P_NVL_CHUNK * 32 and n <= channels_max // 2:
            n *= 2
        return nbytes <= n * P2P_LL_THRESHOLD
    assert not any(ll(b) for b in range(P2P_LL_THRESHOLD + 1, P2P_LL_THRESHOLD + 4 * KiB))
    return max(b for b in range(512, 2 * MiB + 1, 512) if ll(b))


def test_2_29_and_2_30_run_ll_to_16_kib_a_peer():
    """src/enqueue.cc v2.29.2-1 .. v2.30.7-1: the channels are split at Simple's step first
    (parts of at least p2pChunkSize / 8 = 64 KiB in a node), then LL where ``bytes[dir] <=
    nChannels[dir] * ncclParamP2pLLThreshold()``: 16 KiB a peer, the 2.18-2.21 bound again."""
    assert _ll_peer_bytes_2_29() == P2P_LL_THRESHOLD
    for key in ("2.29", "2.30"):
        assert NCCL_P2P[key] == (_ll_peer_bytes_2_29(), P2P_NVL_CHUNK)


def test_shipped_rule_is_16_kib_a_peer_and_releases_set_theirs():
    topo = load_topology("dgx-b200")
    ll = topo.device.protocols["ll"]
    assert (ll.p2p_peer_bytes, ll.p2p_step_bytes) == (P2P_LL_THRESHOLD, P2P_NVL_CHUNK)
    assert ll.cta_Bps == pytest.approx(B200_RING_CTA, rel=1e-3)
    assert with_nccl(topo, "2.21").device == topo.device
    ll25 = with_nccl(topo, "v2.25.1-1").device.protocols["ll"]
    assert (ll25.p2p_peer_bytes, ll25.p2p_step_bytes) == (512 * KiB, LL_STEP)
    assert ll25.cta_Bps == ll.cta_Bps


@pytest.mark.parametrize("works, warps", [(1, 9), (2, 4), (3, 2), (4, 2), (5, 2), (8, 1), (40, 1)])
def test_receiving_warps_follow_sendrecv(works, warps):
    """sendrecv.h: nWarpPerWork = 20 // w; (W - 1) // 2 receive, W // 2 where W <= 4."""
    assert p2p_recv_warps(works) == warps


def test_ll_time_closed_form():
    """512 KiB a peer on 8 GPUs at LL's step: 4 channels of 128 KiB, one work a CTA, 9 of 16 of
    a ring CTA's warps receiving; 16 KiB: 2 channels of 8 KiB; at Simple's step one channel."""
    rate = B200_RING_CTA * 9 * 32 / 512
    assert p2p_ll_s(512 * KiB, 8, B200_RING_CTA, LL_STEP) == pytest.approx(128 * KiB / rate)
    assert p2p_ll_s(16 * KiB, 8, B200_RING_CTA, LL_STEP) == pytest.approx(8 * KiB / rate)
    assert p2p_ll_s(16 * KiB, 8, B200_RING_CTA, P2P_NVL_CHUNK) == pytest.approx(16 * KiB / rate)
    assert p2p_ll_s(0, 8, B200_RING_CTA, LL_STEP) == 0.0
    # 72 ranks: a peer's 16 KiB on 1 channel, 72 works over 32 CTAs: 3 a CTA, 2 warps receive
    assert p2p_ll_s(16 * KiB, 72, B200_RING_CTA, LL_STEP) == pytest.approx(
        16 * KiB / (B200_RING_CTA * 2 * 32 / 512))


def test_all_to_all_on_ll_as_2_25_runs_it():
    """8 B200, NCCL 2.25: 4 MiB a rank (512 KiB a peer) on LL, its time launch + hop + the LL
    kernel's 128 KiB a CTA (above the wire's (7/8) 4 MiB at half the links' rate); 8 MiB on
    Simple. The shipped rule runs 4 MiB on Simple; dgx-h100 lists no LL CTA rate: the wire."""
    topo = with_nccl(load_topology("dgx-b200"), "2.25")
    c = collective_time("all-to-all", 4 * MiB, 8, topo)
    assert c.protocol == "ll"
    assert c.transfer_s == pytest.approx(4 * MiB * 7 / 8 / (900e9 * 0.802 * 0.5))
    assert c.time_s == pytest.approx(c.launch_s + c.latency_s
                                     + p2p_ll_s(512 * KiB, 8, B200_RING_CTA, LL_STEP), rel=1e-3)
    assert collective_time("all-to-all", 8 * MiB, 8, topo).protocol == "simple"
    assert collective_time("all-to-all", 4 * MiB, 8, load_topology("dgx-b200")).protocol == "simple"
    h100 = with_nccl(load_topology("dgx-h100"), "2.25")
    c = collective_time("all-to-all", 4 * MiB, 8, h100)
    assert c.protocol == "ll" and c.pipeline_s == 0.0
