"""FSDP1's flat parameters (tpsim.training.fsdp_flat): each unit's backward copies its 16-bit
gradients into the flat gradient, in every micro-batch, on the compute stream."""
import pytest

import tpsim
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.spec.model import ModelConfig
from tpsim.training import terms
from tpsim.training.fsdp_flat import flat_grad_copy_s, with_flat_grad_copies
from tpsim.training.step import Chunk, Part

DEV = load_topology("dgx-h100").device


def test_the_copy_reads_and_writes_each_16bit_gradient_once():
    """at::cat of the unit's bf16 gradients: 2 bytes read and 2 written a parameter."""
    for params in (1, 12 * 4096 ** 2, 616_562_688):
        assert flat_grad_copy_s(params, DEV) == elementwise_time(4.0 * params, DEV)


def test_each_units_backward_and_the_chunks_compute_grow_by_its_copies():
    part = Part(forward_s=3.0, backward_s=6.0, compute_s=8.5, tp_exposed_s=0.5,
                host_wait_s=0.0, flops=1.0, hardware_flops=1.0, saved_bytes=0.0)
    chunk = Chunk(2, part, ((2.0, 10**8, 2), (1.0, 10**7, 1)), (1.0, 0.5))
    out = with_flat_grad_copies(chunk, DEV)
    big, small = flat_grad_copy_s(10**8, DEV), flat_grad_copy_s(10**7, DEV)
    assert out.units == ((2.0 + big, 10**8, 2), (1.0 + small, 10**7, 1))
    assert out.part.backward_s == pytest.approx(6.0 + 2 * big + small, rel=1e-15)
    assert out.part.compute_s == pytest.approx(8.5 + 2 * big + small, rel=1e-15)
    assert (out.part.forward_s, out.part.tp_exposed_s, out.forwards) == (3.0, 0.5, (1.0, 0.5))


def test_a_zero3_step_computes_every_units_copy_in_every_micro_batch():
    """The same ZeRO-3 job with FSDP1's flat parameters: its compute grows by micro-batches x
    the copies of the stage's units (the layers, the embedding serving as the output layer);
    below ZeRO-2 the flag changes nothing."""
    m = ModelConfig(name="mpt-1b", layers=24, hidden=2048, heads=16, vocab=50368,
                    seq_len=2048, bias=True, tie_embeddings=True)
    kw = dict(tp=1, dp=8, global_batch=8 * 3, micro_batch=1, zero=3, dtype="bf16")
    flat, plain = (tpsim.predict(m, "dgx-h100", fsdp_flat_params=f, **kw).step
                   for f in (True, False))
    units = terms.chunk_units(m, 1, m.layers, True, True)
    copies = sum(n * flat_grad_copy_s(params, DEV) for _, params, n in units)
    assert flat.micro_batches == 3
    assert flat.compute_s - plain.compute_s == pytest.approx(3 * copies, rel=1e-9)
    assert flat.time_s > plain.time_s
    kw.update(zero=0)
    assert (tpsim.predict(m, "dgx-h100", fsdp_flat_params=True, **kw).step.time_s ==
            tpsim.predict(m, "dgx-h100", **kw).step.time_s)


def test_the_llm_foundry_preset_runs_fsdp1():
    from tpsim.spec.frameworks import FRAMEWORKS
    assert FRAMEWORKS["llm-foundry"]["fsdp_flat_params"] is True
    assert not any(FRAMEWORKS[k].get("fsdp_flat_params") for k in ("torchtitan",
                                                                    "torchtitan-compile"))
