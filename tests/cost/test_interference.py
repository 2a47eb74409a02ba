"""The compute kernel's loss beside a communication kernel, by the kernels' kinds."""
import math

from hypothesis import given, strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.cost.interference import compute_loss, is_persistent
from tpsim.layer.ops import Attention, Gemm, MemoryBound

H100 = load_topology("dgx-h100").device


def test_copy_engines_hold_no_sms():
    assert compute_loss(0, 132, True) == 0.0 == compute_loss(0, 132, False)


@given(st.integers(1, 66))
def test_a_persistent_kernel_runs_a_second_pass(held):
    """Any 1 <= s <= N/2 held SMs leave the displaced CTAs to a second pass: half speed."""
    assert compute_loss(held, 132, True) == 0.5


@given(st.integers(1, 131), st.integers(132, 200))
def test_other_kernels_lose_the_held_share(held, sms):
    assert math.isclose(compute_loss(held, sms, False), held / sms)
    assert math.isclose(compute_loss(held, sms, True, margin=True), held / sms)
    assert compute_loss(held, sms, True) >= compute_loss(held, sms, False)


def test_passes_past_half_the_sms():
    """100 of 132 held: 32 CTAs run at once, ceil(132 / 32) = 5 passes."""
    assert math.isclose(compute_loss(100, 132, True), 1 - 1 / 5)
    assert compute_loss(132, 132, False) == 1.0


def test_hopper_persistent_kinds():
    """Hopper's GEMMs and FlashAttention-3's forward are persistent; its backward and memory-
    bound kernels are not; the device's step-level figure is the persistent GEMMs' loss."""
    att = Attention(1, 8, 8, 1024, 1024, 128, "bf16")
    assert is_persistent(Gemm(64, 64, 64, "bf16"), H100)
    assert is_persistent(att, H100)
    assert not is_persistent(Attention(1, 8, 8, 1024, 1024, 128, "bf16", backward=True), H100)
    assert not is_persistent(MemoryBound(1e6, (1,)), H100)
    assert H100.comm_compute_interference == compute_loss(H100.collective_sms, H100.sm_count,
                                                          True)
