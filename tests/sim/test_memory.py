"""A stage's peak memory: the persistent state plus the larger of its two phases, the
activations (forward and backward) and the optimizer step's fp32 gradient copy."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tpsim.sim.memory import stage_memory, userbuffers_bytes
from tpsim.spec.precision import precision_key

GiB = 2**30
BF16_GRADS = precision_key("bf16", grad_reduce_in_bf16=True)


def test_the_step_copy_is_held_instead_of_the_activations_not_beside_them():
    """--grad-reduce-in-bf16 with the distributed optimizer over d = 8: 2 + 2 + 12/8 bytes a
    parameter held throughout, then max(activations, 4/8 bytes a parameter)."""
    n, d = 10**9, 8
    state = n * (2 + 2 + 12 / d)
    busy = stage_memory(n, BF16_GRADS, 3 * GiB, 80 * GiB, d)
    assert busy.step_copy_bytes == n * 4 / d
    assert busy.total_bytes == state + 3 * GiB                 # the activations' phase peaks
    idle = stage_memory(n, BF16_GRADS, 0.1 * GiB, 80 * GiB, d)
    assert idle.total_bytes == state + n * 4 / d               # the optimizer's phase peaks
    assert idle.state_bytes == state


def test_fp32_main_gradients_need_no_copy():
    m = stage_memory(10**9, "bf16", 2 * GiB, 80 * GiB, 4)
    assert m.step_copy_bytes == 0.0
    assert m.total_bytes == 10**9 * (2 + 4 + 12 / 4) + 2 * GiB


@given(st.integers(1, 10**10), st.floats(0, 1e11), st.integers(1, 512))
def test_the_peak_is_the_larger_phase(params, acts, shards):
    m = stage_memory(params, "fp16", acts, 1e12, shards)
    phases = (m.state_bytes + acts, m.state_bytes + params * 4 / shards)
    assert m.total_bytes == max(phases)


def test_userbuffers_are_ten_token_by_hidden_buffers():
    """Transformer Engine's initialize_ub: 6 all-gather buffers (fp8 under FP8) and 4
    reduce-scatter buffers (bf16) of (seq x micro-batch, h); none without TP overlap."""
    t, h = 2048 * 2, 6144           # NeMo 24.07 GPT-3 20B: seq 2048, micro-batch 2
    assert userbuffers_bytes(t, h, "fp8") == t * h * (6 * 1 + 4 * 2)
    assert userbuffers_bytes(t, h, "bf16") == t * h * 10 * 2
    assert userbuffers_bytes(t, h, "fp8", overlap=False) == 0.0


@given(st.integers(1, 10**10), st.floats(0, 1e11), st.floats(0, 1e10))
def test_the_tp_buffers_are_held_in_both_phases(params, acts, buffers):
    m = stage_memory(params, "fp16", acts, 1e12, 8, tp_buffers=buffers)
    bare = stage_memory(params, "fp16", acts, 1e12, 8)
    assert m.tp_buffers_bytes == buffers
    assert m.total_bytes == pytest.approx(bare.total_bytes + buffers)
