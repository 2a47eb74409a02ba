"""Pricing a sliding-window attention kernel (:func:`tpsim.sim.price.kernel_time`): the flash
kernel's loop runs over the window's keys, and an op standing for banded and full layers
costs their share-weighted mean."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.cluster.topology import load_topology
from tpsim.cost import compute
from tpsim.layer.ops import Attention
from tpsim.sim.price import kernel_time

H100 = load_topology("dgx-h100").device
OP = Attention(1, 64, 8, 4096, 4096, 64, "bf16", backward=True, window=128)


def test_band_priced_at_the_keys_it_streams():
    """Executed FLOPs x (1 + causal_block / W) x 1.25 (backward), at the efficiency of the
    W + causal_block keys a query tile streams: attention_time(exec, bytes, s, W + cb, ...)."""
    k = H100.attention_kernels[H100.attention_kernel]
    flops = OP.flops * (1 + k.causal_block / 128) * compute.FLASH_BACKWARD_FACTOR / 2
    assert kernel_time(OP, H100) == pytest.approx(compute.attention_time(
        flops, OP.bytes, 4096, 128 + k.causal_block, 64, H100, "bf16", True, None, True),
        rel=1e-12)
    assert kernel_time(OP, H100) < kernel_time(dataclasses.replace(OP, window=0), H100)


@pytest.mark.parametrize("u", [0.0, 0.25, 0.5])
def test_share_of_banded_layers_is_the_weighted_mean(u):
    band, full = kernel_time(OP, H100), kernel_time(dataclasses.replace(OP, window=0), H100)
    mixed = dataclasses.replace(OP, windowed=u)
    assert kernel_time(mixed, H100) == pytest.approx(u * band + (1 - u) * full, rel=1e-12)


def test_backward_takes_its_own_causal_terms():
    """A kernel listing backward_causal_*: the backward executes x (1 + backward_causal_block /
    s) at backward_causal_efficiency; the forward keeps causal_block and causal_efficiency; a
    kernel listing neither prices both passes with the forward's."""
    a100 = load_topology("dgx-a100").device
    k = a100.attention_kernels["triton"]
    assert k.causal(True) == (k.backward_causal_efficiency, k.backward_causal_block)
    assert k.causal(True) != k.causal(False)
    s, d = 8192, 128
    for backward in (False, True):
        op = Attention(1, 16, 16, s, s, d, "bf16", True, backward, "triton")
        eff, block = k.causal(backward)
        flops = compute.attention_exec_flops(op.flops, True, backward, s, block, op.full_flops)
        peak = a100.peak("bf16") * k.at(d, backward) * s / (s + k.seq_half_efficiency) * eff
        assert kernel_time(op, a100) == pytest.approx(a100.kernel_launch_s + flops / peak,
                                                      rel=1e-12)
    plain = dataclasses.replace(k, backward_causal_block=None, backward_causal_efficiency=None)
    assert plain.causal(True) == plain.causal(False) == (k.causal_efficiency, k.causal_block)
