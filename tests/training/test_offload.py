"""Activation offloading (tpsim.training.offload): the closed forms of the bytes moved and of
the copies' exposed time against Transformer Engine's schedule run event by event, and what
predict makes of them: the activations drop by the offloaded bytes exactly, the step grows by
the exposure only, and the settings Megatron-core refuses are refused."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.training import offload
from tpsim.training.step import Part


def te_schedule_stall(n: int, layers: int, copy: float, compute: float) -> float:
    """Transformer Engine's DefaultOffloadSynchronizer, event by event: layer i's copy starts
    when its forward ends (at layer i + 1's fwd_step), one copy at a time; layer L - N + i's
    forward waits for copy i. Returns the forward's end less L x compute."""
    t, copy_end, done = 0.0, 0.0, {}
    for j in range(layers):
        i = j - (layers - n)
        if 0 <= i < n:
            t = max(t, done[i])
        t += compute
        if j < n:
            copy_end = max(copy_end, t) + copy
            done[j] = copy_end
    return t - layers * compute


@settings(max_examples=200, deadline=None)
@given(layers=st.integers(2, 96), frac=st.floats(0, 1), copy=st.floats(1e-4, 1.0),
       compute=st.floats(1e-4, 1.0))
def test_exposed_time_is_the_schedules_stall(layers, frac, copy, compute):
    n = min(int(frac * layers), layers - 1)
    want = te_schedule_stall(n, layers, copy, compute)
    assert offload.exposed_s(n, layers, copy, compute) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_exposed_time_closed_forms():
    # hidden: N c <= (L - 2) f
    assert offload.exposed_s(40, 80, 0.008, 0.010) == 0.0
    assert offload.exposed_s(0, 80, 1.0, 0.001) == 0.0
    # copy-bound: N c - (L - 2) f
    assert offload.exposed_s(30, 32, 0.015, 0.005) == pytest.approx(30 * 0.015 - 30 * 0.005)
    # one layer left on the GPU: nothing overlaps
    assert offload.exposed_s(31, 32, 0.001, 1.0) == pytest.approx(31 * 0.001)


def test_bytes_closed_forms():
    a = 3.9e9
    assert offload.offloaded_bytes(a, 40) == 40 * a
    assert offload.copy_s(a, 450e9) == a / 450e9


def test_offloaded_part_keeps_the_split_and_the_layers_bytes():
    part = Part(forward_s=0.01, backward_s=0.02, compute_s=0.028, tp_exposed_s=0.001,
                host_wait_s=0.001, flops=1e12, hardware_flops=1e12, saved_bytes=4e9)
    n, layers, bw = 30, 32, 64e9
    got = offload.offload_part(part, n, layers, bw)
    assert got.saved_bytes * layers == pytest.approx((layers - n) * part.saved_bytes)
    c = part.saved_bytes / bw
    exposed = (offload.exposed_s(n, layers, c, part.forward_s)
               + offload.exposed_s(n, layers, c, part.backward_s))
    assert got.offload_exposed_s * layers == pytest.approx(exposed)
    assert got.forward_s + got.backward_s == pytest.approx(
        got.compute_s + got.tp_exposed_s + got.host_wait_s + got.offload_exposed_s)
    assert offload.offload_part(part, 0, layers, bw) == part     # N = 0: the same values


FSDP_70B = dict(model="llama3-70b", seq_len=8192, tp=1, dp=64, micro_batch=2, global_batch=256,
                zero=3, dtype="fp8", fp8_param_gather=True, grad_reduce_in_bf16=True)


def test_gb300_recipe_fits_with_its_offloaded_layers_only():
    """Megatron-Bridge's 70B FSDP GB300 recipe (20 of 80 layers offloaded): over memory without
    the offloading, within it with; the activations drop by the host's bytes exactly, and the
    NVLink-C2C copies hide behind the compute (the step unchanged)."""
    base = tpsim.predict(topology="gb300-nvl72", **FSDP_70B)
    off = tpsim.predict(topology="gb300-nvl72", cpu_offload_layers=20, **FSDP_70B)
    assert not base.memory.fits and off.memory.fits
    host = off.memory.offloaded_bytes
    assert host > 0
    assert base.memory.activations_bytes - off.memory.activations_bytes == pytest.approx(host)
    assert off.step.offload_exposed_s == 0.0
    assert off.step.time_s == pytest.approx(base.step.time_s, rel=1e-12)


def test_pcie_copies_are_exposed_as_the_closed_form_says():
    kw = dict(model="llama3-8b", topology="dgx-h100", tp=1, dp=8, seq_len=8192, dtype="fp8",
              zero=3)
    n = 30
    p = tpsim.predict(cpu_offload_layers=n, **kw)
    layers = p.model.layers
    c = p.memory.offloaded_bytes / n / load_topology("dgx-h100").device.host_link_Bps
    want = sum(offload.exposed_s(n, layers, c, t) for t in (p.layer.forward_s, p.layer.backward_s))
    assert want > 0
    assert p.step.offload_exposed_s == pytest.approx(p.step.micro_batches * want, rel=1e-9)
    assert p.step.time_s > tpsim.predict(**kw).step.time_s


@pytest.mark.parametrize("kw", [dict(pp=2), dict(recompute="full")])
def test_megatron_refusals_in_the_layout(kw):
    with pytest.raises(ConfigError, match="--cpu-offload-layers"):
        tpsim.Layout(cpu_offload_layers=4, **kw)


def test_all_layers_and_an_unknown_host_link_are_refused():
    with pytest.raises(ConfigError, match="fewer than the model's 32 layers"):
        tpsim.predict("llama3-8b", "dgx-h100", tp=1, cpu_offload_layers=32)
    topo = load_topology("dgx-h100")
    bare = dataclasses.replace(topo, device=dataclasses.replace(topo.device, host_link_Bps=None))
    with pytest.raises(ConfigError, match="host_link_bandwidth_GBps"):
        tpsim.predict("llama3-8b", bare, tp=1, cpu_offload_layers=4)


def test_remedies_offer_no_recomputation_beside_offloading():
    """Megatron-core refuses recomputation with offloading: the advice does not offer it."""
    from tpsim.spec.model import load_model
    from tpsim.training.remedies import memory_remedies
    kw = dict(FSDP_70B, cpu_offload_layers=36)
    kw.pop("model")
    p = tpsim.predict("llama3-70b", "gb200-nvl72", **kw)
    assert not p.memory.fits
    lay = tpsim.Layout(**{k: v for k, v in kw.items()})
    model = load_model("llama3-70b")
    got = memory_remedies(model, load_topology("gb200-nvl72"), lay.replace(
        seq_len=8192, dtype="fp8"), p.memory)
    assert got and not any("recompute" in r for r in got)
    plain = lay.replace(cpu_offload_layers=0, seq_len=8192, dtype="fp8")
    assert any("recompute" in r for r in memory_remedies(
        model, load_topology("gb200-nvl72"), plain, p.memory))
