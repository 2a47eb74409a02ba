"""FSDP2's copies around its collectives (tpsim.training.fsdp_copies): the copy-out of each
all-gather and the copy-in of each reduce-scatter, on the compute stream."""
import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.training.fsdp_copies import unit_copies_s, with_unit_copies
from tpsim.training.sharded_dp import Sharding
from tpsim.training.step import Chunk, Part

DEV = load_topology("dgx-h100").device
FSDP2 = Sharding(3, 8, copies="fsdp2")


def test_copy_out_moves_the_gathered_bytes_twice_and_copy_in_casts_to_fp32():
    """bf16 all-gather: read 2 + write 2 a parameter per gather (forward, and backward when
    resharded); the gradients' chunk_cat reads 2 and writes fp32's 4."""
    P = 218_112_000
    out, again, copy_in = unit_copies_s(P, 2, 4, FSDP2, DEV)
    assert out == again == elementwise_time(4.0 * P, DEV)
    assert copy_in == elementwise_time(6.0 * P, DEV)
    assert unit_copies_s(P, 2, 4, Sharding(3, 8, reshard_after_forward=False, copies="fsdp2"),
                         DEV)[1] == 0
    assert unit_copies_s(P, 2, 4, Sharding(2, 8, copies="fsdp2"), DEV)[:2] == (0, 0)
    assert unit_copies_s(P, 2, 4, Sharding(3, 1, copies="fsdp2"), DEV) == (0, 0, 0)


def test_each_units_forward_and_backward_grow_by_its_copies():
    part = Part(forward_s=3.0, backward_s=6.0, compute_s=9.0, tp_exposed_s=0.0,
                host_wait_s=0.0, flops=1.0, hardware_flops=1.0, saved_bytes=0.0)
    chunk = Chunk(2, part, ((2.0, 10**8, 2), (1.0, 10**7, 1)), (1.0, 0.5))
    out = with_unit_copies(chunk, FSDP2, 2, 4, DEV)
    big, small = (unit_copies_s(n, 2, 4, FSDP2, DEV) for n in (10**8, 10**7))
    assert out.forwards == (1.0 + big[0], 0.5 + small[0])
    assert out.units == ((2.0 + big[1] + big[2], 10**8, 2), (1.0 + small[1] + small[2], 10**7, 1))
    grown = 2 * sum(big) + sum(small)
    assert out.part.compute_s == pytest.approx(9.0 + grown, rel=1e-15)
    assert out.part.forward_s + out.part.backward_s == pytest.approx(9.0 + grown, rel=1e-15)
    assert with_unit_copies(chunk, Sharding(3, 8), 2, 4, DEV) is chunk


def test_the_flag_slows_a_zero3_step_and_nothing_below_zero2():
    kw = dict(tp=1, dp=8, global_batch=16, micro_batch=1, seq_len=2048)
    for zero, slower in ((3, True), (1, False)):
        a = tpsim.predict("llama3-8b", "dgx-h100", zero=zero, **kw)
        b = tpsim.predict("llama3-8b", "dgx-h100", zero=zero, fsdp2_copies=True, **kw)
        assert (b.step.time_s > a.step.time_s) is slower
    with pytest.raises(ConfigError):
        tpsim.predict("llama3-8b", "dgx-h100", zero=3, fsdp2_copies=True,
                      fsdp_flat_params=True, **kw)
