"""TensorRT-LLM's masked multi-head attention on the CUDA cores (tpsim.cost.mmha): the
instruction count's closed form, by pipe, the pipes' rates, and where the cores term binds."""
from __future__ import annotations

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import decode_attention_time, elementwise_time
from tpsim.cost.mmha import (PIPES, cuda_core_rate, cuda_core_s, mmha_instructions, mmha_s,
                             pipe_rates, token_instructions, token_pipes)

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


@pytest.mark.parametrize("kv_bytes, expected", [
    # fma: 2 Dh FFMA + tk (Dh/tk - 1 + log2 tk) FADD + tk (3 + 1) + tv 1 + 4; fp16: 2 Dh c16 + tv;
    # alu: tk (3 + 2) + 3 tv + 1; xu: 2 Dh c_xu + tk + 1; lsu: tk log2 tk + tk (1 + 1) + 2 tv + 4
    (2, {"fma": 256 + 16 * 11 + 16 * 4 + 16 + 4, "fp16": 256 + 16, "alu": 16 * 5 + 48 + 1,
         "xu": 17, "lsu": 64 + 32 + 32 + 4}),
    (1, {"fma": 256 + 256 + 16 * 11 + 16 * 4 + 16 + 4, "fp16": 256 + 16, "alu": 129,
         "xu": 128 + 17, "lsu": 132}),                   # fp8: + the scale's FMUL, half an F2FP
])
def test_token_pipes_closed_form(kv_bytes, expected):
    """Dh = 128 (tk = tv = 16): each pipe's share (module docstring), summing to the count."""
    assert token_pipes(128, kv_bytes) == expected
    assert sum(expected.values()) == token_instructions(128, kv_bytes)


def test_a_call_is_batch_heads_tokens_times_a_token():
    work = mmha_instructions(64, 16, 3072, 128, 1)
    assert len(work) == len(PIPES) and sum(work) == 64 * 16 * 3072 * 1450
    assert work == tuple(64 * 16 * 3072 * n for n in token_pipes(128, 1).values())
    assert token_instructions(128, 2) / 256 == pytest.approx(4.16, abs=0.01)
    assert token_instructions(128, 1) / 256 == pytest.approx(5.66, abs=0.01)


def test_the_fp32_lanes_rate_is_the_whitepapers():
    """peak_tflops.fp32 / 2: SMs x FP32 lanes x boost clock (H100 SXM 132 x 128 x 1.98 GHz,
    A100 108 x 64 x 1.41 GHz); a device listing no fp32 peak prices no cores term."""
    assert cuda_core_rate(H100) == pytest.approx(132 * 128 * 1.98e9, rel=1e-3)
    assert cuda_core_rate(A100) == pytest.approx(108 * 64 * 1.41e9, rel=1e-3)
    assert cuda_core_s((1e12, 0, 0, 0, 0), H100) == pytest.approx(1e12 / 33.45e12, rel=1e-9)


def test_pipe_rates_are_the_table_over_the_fma_rows_clock():
    """rate_p SMs f with SMs f = peak_fp32 / (2 rate_fma): the A100's issue slots twice its
    FP32 lanes, the H100's equal to them; both convert and shuffle at 16 and 32 a clock an SM
    (1/4 and 1/2 of A100's lanes, 1/8 and 1/4 of H100's); the H100 lists no fp16 pipe."""
    a, h = pipe_rates(A100), pipe_rates(H100)
    lanes_a, lanes_h = cuda_core_rate(A100), cuda_core_rate(H100)
    assert a["issue"] == pytest.approx(2 * lanes_a) and a["fp16"] == pytest.approx(2 * lanes_a)
    assert a["xu"] == pytest.approx(lanes_a / 4) and a["lsu"] == pytest.approx(lanes_a / 2)
    assert h["issue"] == pytest.approx(lanes_h) and "fp16" not in h
    assert h["xu"] == pytest.approx(lanes_h / 8) and h["alu"] == pytest.approx(lanes_h / 2)
    assert pipe_rates(L40S) is None


def test_the_cores_term_by_hand():
    """Dh = 128, a million token-heads: A100 fp16 at max(1066 / 128 issue, 516 / 64 fma, ...)
    clocks a token, the issue slots (8.33 against 8.06), half the one-lane price; H100 fp8 at
    max(1450 / 128, (772 + 272) / 128 fma with its fp16 share, 145 / 16 xu, ...), the issue
    slots again (11.3 against 9.1 and 8.2), the one-lane price."""
    calls = 1e6
    a = cuda_core_s(mmha_instructions(1, 1, calls, 128, 2), A100)
    assert a == pytest.approx(calls * 1066 / (2 * cuda_core_rate(A100)), rel=1e-12)
    h = cuda_core_s(mmha_instructions(1, 1, calls, 128, 1), H100)
    assert h == pytest.approx(calls * 1450 / cuda_core_rate(H100), rel=1e-12)
    fp16_on_fma = (772 + 272) / 128
    assert fp16_on_fma < 145 / 16 < 1450 / 128


@pytest.mark.parametrize("device", [A100, H100, L40S])
def test_the_slowest_pipe_or_the_issue_slots_bind_and_more_work_never_helps(device):
    """Loading one pipe alone, its own rate binds once its count outgrows the issue slots'
    share (xu at 16 a clock: always); adding instructions to any pipe never lowers t_cores."""
    base = mmha_instructions(4, 8, 1000, 128, 1)
    rates = pipe_rates(device)
    xu = tuple(1e9 if p == "xu" else 0.0 for p in PIPES)
    if rates:
        assert cuda_core_s(xu, device) == pytest.approx(1e9 / rates["xu"], rel=1e-12)
    else:
        assert cuda_core_s(xu, device) == pytest.approx(1e9 / cuda_core_rate(device), rel=1e-12)
    t0 = cuda_core_s(base, device)
    for i in range(len(PIPES)):
        more = tuple(n * (3 if j == i else 1) for j, n in enumerate(base))
        assert cuda_core_s(more, device) >= t0


def _times(device, g, kv_bytes, b=64, kv_heads=2, L=3072, d=128):
    """(t, memory-or-L2 t) of one layer's MMHA call with g query heads per KV head."""
    nbytes = b * 2 * L * kv_heads * d * kv_bytes
    work = mmha_instructions(b, g * kv_heads, L, d, kv_bytes)
    l2 = g * nbytes if g > 1 else 0.0
    full = decode_attention_time(nbytes, device, 0, l2, work)
    return full, decode_attention_time(nbytes, device, 0, l2)


@pytest.mark.parametrize("device, kv_bytes, binds_at_8", [(H100, 1, True), (A100, 2, False)])
def test_the_cores_bind_exactly_past_the_crossing_group(device, kv_bytes, binds_at_8):
    """The cores term grows as g, the HBM one not at all, the L2 one as g too: the call's time
    never falls with g, and the cores bind exactly where g t_cores an element exceeds
    max(bytes / (bw eff), g bytes / l2_bw). H100 fp8: past g = 2, so at Llama 2 70B's 8, not
    at Llama 2 7B's 1; A100 fp16: the issue slots' 2.1 FP32-lane slots an element stay under
    the L2's share at every g, so the L2 binds there."""
    per_elem = cuda_core_s(mmha_instructions(1, 1, 1, 128, kv_bytes), device) / 256
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
    assert (_times(device, 8, kv_bytes)[0] > _times(device, 8, kv_bytes)[1]) == binds_at_8


def test_no_rates_no_terms():
    """L40S lists an fp32 peak but no L2 rate: the L2 term drops, the cores one stays."""
    assert mmha_s(1e9, (), L40S) == 0.0
    work = (1e12, 0.0, 0.0, 0.0, 0.0)
    assert mmha_s(1e9, work, L40S) == pytest.approx(cuda_core_s(work, L40S), rel=1e-12)
    assert cuda_core_s(work, L40S) == pytest.approx(1e12 / cuda_core_rate(L40S), rel=1e-12)
    assert decode_attention_time(1e6, L40S, 0, 8e6) == elementwise_time(1e6, L40S)


def test_a_pipe_the_device_does_not_list_runs_on_fma():
    """The field reference says a pipe not listed shares fma; only fp16 did, and a file of
    the two required rates (issue, fma) raised KeyError 'alu' in every trtllm-mmha decode.
    Each unlisted pipe's instructions now count on fma: with issue and fma alone, the time
    is the larger of all instructions at the fma rate and at the issue rate."""
    import dataclasses
    two = dataclasses.replace(H100, cuda_core_pipes={"issue": 128.0, "fma": 64.0})
    work = (1e9, 2e9, 3e9, 4e9, 5e9)
    rates = pipe_rates(two)
    assert cuda_core_s(work, two) == pytest.approx(sum(work) / rates["fma"], rel=1e-12)
    assert cuda_core_s(work, H100) == pytest.approx(max(
        sum(work) / pipe_rates(H100)["issue"], (work[0] + work[1]) / pipe_rates(H100)["fma"],
        *(n / pipe_rates(H100)[p] for p, n in zip(PIPES[2:], work[2:]))), rel=1e-12)
