"""TensorRT-LLM's masked multi-head attention on the CUDA cores (tpsim.cost.mmha): the
instruction count's closed form, the FP32 lanes' rate, and where the cores term binds."""
from __future__ import annotations

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import decode_attention_time, elementwise_time
from tpsim.cost.mmha import (cuda_core_rate, cuda_core_s, mmha_instructions, mmha_s,
                             token_instructions)

H100 = load_topology("dgx-h100").device
A100 = load_topology("dgx-a100").device
L40S = load_topology("pcie-l40s").device


@pytest.mark.parametrize("head_dim, kv_bytes, expected", [
    # 2 Dh (c + 1) + tk (Dh / tk - 1 + 2 log2 tk + 8 + 4) + 7 tv + 10
    (128, 2, 2 * 128 * 2 + 16 * (7 + 8 + 12) + 7 * 16 + 10),       # 1,066: tk = tv = 16
    (128, 1, 2 * 128 * 3.5 + 16 * (7 + 8 + 12) + 7 * 16 + 10),     # 1,450: fp8, c = 2.5
    (64, 2, 2 * 64 * 2 + 8 * (7 + 6 + 12) + 7 * 8 + 10),           # 522: tk = tv = 8
    (256, 2, 2 * 256 * 2 + 32 * (7 + 10 + 12) + 7 * 32 + 10),      # tk capped at a warp
    (128, 4, 2 * 128 * 1 + 16 * (7 + 8 + 12) + 7 * 16 + 10),       # fp32 cache: no conversion
])
def test_token_instructions_closed_form(head_dim, kv_bytes, expected):
    assert token_instructions(head_dim, kv_bytes) == expected


def test_a_call_is_batch_heads_tokens_times_a_token():
    assert mmha_instructions(64, 16, 3072, 128, 1) == 64 * 16 * 3072 * 1450
    assert token_instructions(128, 2) / 256 == pytest.approx(4.16, abs=0.01)
    assert token_instructions(128, 1) / 256 == pytest.approx(5.66, abs=0.01)


def test_the_fp32_lanes_rate_is_the_whitepapers():
    """peak_tflops.fp32 / 2: SMs x FP32 lanes x boost clock (H100 SXM 132 x 128 x 1.98 GHz,
    A100 108 x 64 x 1.41 GHz); a device listing no fp32 peak prices no cores term."""
    assert cuda_core_rate(H100) == pytest.approx(132 * 128 * 1.98e9, rel=1e-3)
    assert cuda_core_rate(A100) == pytest.approx(108 * 64 * 1.41e9, rel=1e-3)
    assert cuda_core_s(1e12, H100) == pytest.approx(1e12 / 33.45e12, rel=1e-9)


def _times(device, g, kv_bytes, b=64, kv_heads=2, L=3072, d=128):
    """(t, memory-or-L2 t) of one layer's MMHA call with g query heads per KV head."""
    nbytes = b * 2 * L * kv_heads * d * kv_bytes
    work = mmha_instructions(b, g * kv_heads, L, d, kv_bytes)
    l2 = g * nbytes if g > 1 else 0.0
    full = decode_attention_time(nbytes, device, 0, l2, work)
    return full, decode_attention_time(nbytes, device, 0, l2)


@pytest.mark.parametrize("device, kv_bytes", [(H100, 1), (A100, 2)])
def test_the_cores_bind_exactly_past_the_crossing_group(device, kv_bytes):
    """The cores term grows as g, the HBM one not at all, the L2 one as g too but at a lower
    rate on both presets: the call's time never falls with g, and the cores bind exactly
    where g N / (2 Dh) / rate exceeds max(bytes / (bw eff), g bytes / l2_bw) an element (H100
    fp8 and A100 fp16: past g = 2, so at Llama 2 70B's 8, not at Llama 2 7B's 1)."""
    per_elem = token_instructions(128, kv_bytes) / 256 / cuda_core_rate(device)
    hbm = kv_bytes / (device.memory_bandwidth_Bps * device.memory_efficiency)
    l2 = kv_bytes / device.l2_bandwidth_Bps
    previous = 0.0
    for g in range(1, 17):
        full, without = _times(device, g, kv_bytes)
        assert full >= previous and full >= without
        binds = g * per_elem > max(hbm, l2 * g if g > 1 else 0.0)
        assert (full > without) == binds, g
        previous = full
    assert not (_times(device, 1, kv_bytes)[0] > _times(device, 1, kv_bytes)[1])
    assert _times(device, 8, kv_bytes)[0] > _times(device, 8, kv_bytes)[1]


def test_no_rates_no_terms():
    """L40S lists an fp32 peak but no L2 rate: the L2 term drops, the cores one stays."""
    assert mmha_s(1e9, 0.0, L40S) == 0.0
    assert mmha_s(1e9, 1e12, L40S) == pytest.approx(cuda_core_s(1e12, L40S), rel=1e-12)
    assert decode_attention_time(1e6, L40S, 0, 8e6) == elementwise_time(1e6, L40S)
