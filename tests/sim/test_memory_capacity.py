"""What the tensors may take of a device: its memory as the CUDA runtime exposes it, less the
topology's reserve (CUDA context, NCCL buffers) and the run's headroom, less the allocator's
fragmentation, a share of the bytes that churn (activations, the step's copy); predict, infer
and search all judge ``fits`` against it."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.cluster.topology import load_topology
from tpsim.sim.memory import stage_memory

GiB = 2**30


def test_stage_memory_fits_within_the_usable_bytes():
    """18 bytes a parameter (bf16 mixed-precision Adam) + activations, against usable."""
    m = stage_memory(10**9, "bf16", 4 * GiB, 80 * GiB, usable_bytes=22 * GiB)
    assert m.total_bytes == 18e9 + 4 * GiB
    assert (m.capacity_bytes, m.reserved_bytes) == (80 * GiB, 58 * GiB)
    assert m.fits                                    # 20.76 GiB <= 22 GiB
    assert not stage_memory(10**9, "bf16", 4 * GiB, 80 * GiB, usable_bytes=20 * GiB).fits
    assert stage_memory(10**9, "bf16", 0.0, 80 * GiB).reserved_bytes == 0.0


def test_the_allocator_wastes_a_share_of_the_churned_bytes_only():
    """usable_bytes as a function of the churned bytes: max(activations, step's copy) churn,
    the weights, gradients and optimizer state (allocated once) do not."""
    dev = load_topology("dgx-h100").device
    acts = 10 * GiB
    m = stage_memory(10**9, "bf16", acts, dev.memory_bytes,
                     usable_bytes=lambda churned: dev.usable_bytes(0.0, churned))
    room = dev.memory_bytes - dev.memory_reserved_bytes
    assert m.reserved_bytes == pytest.approx(dev.memory_reserved_bytes + 0.047 * acts, rel=1e-12)
    big = stage_memory(10**10, "bf16", acts, dev.memory_bytes,
                       usable_bytes=lambda churned: dev.usable_bytes(0.0, churned))
    assert big.reserved_bytes == m.reserved_bytes        # 10x the state, the same waste
    assert m.fits and m.total_bytes + 0.047 * acts <= room


def test_predict_reports_capacity_and_reserve_and_honours_the_headroom():
    kw = dict(model="llama3-70b", topology="dgx-h100-ndr-cluster", tp=8, pp=2, dp=4,
              virtual_stages=5, global_batch=128, sequence_parallel=True,
              distributed_optimizer=True)
    base = tpsim.predict(**kw)
    dev = load_topology("dgx-h100-ndr-cluster").device
    m = base.memory
    assert m.capacity_bytes == 79.11 * GiB
    for s in base.stage_memory:
        churned = max(s.activations_bytes, s.step_copy_bytes)
        assert s.reserved_bytes == pytest.approx(1.5 * GiB + 0.047 * churned, rel=1e-12)
    churned = max(m.activations_bytes, m.step_copy_bytes)
    assert m.fits and m.total_bytes > dev.usable_bytes(0.25, churned)
    tight = tpsim.predict(**kw, memory_headroom=0.25)
    assert tight.memory.reserved_bytes == pytest.approx(
        m.capacity_bytes - dev.usable_bytes(0.25, churned), rel=1e-12)
    assert not tight.memory.fits and any(w.code == "memory_does_not_fit" for w in tight.warnings)
    assert tight.step.time_s == base.step.time_s      # memory only: no time moves


def test_infer_largest_batch_follows_the_headroom():
    """max_batch = floor((usable - weights) / per-sequence bytes), the allocator wasting a
    share of each sequence's activations (the KV cache and weights, allocated once, none)."""
    kw = dict(model="llama2-70b", topology="dgx-h100", tp=8, batch=1, prompt=2048, gen=256)
    dev = load_topology("dgx-h100").device
    for h in (0.0, 0.3):
        m = tpsim.infer(**kw, memory_headroom=h).memory
        per_seq = m.kv_cache_bytes + m.activations_bytes * 1.047
        assert m.max_batch == int((dev.usable_bytes(h) - m.weights_bytes) // per_seq)
        assert m.reserved_bytes == pytest.approx(
            m.capacity_bytes - dev.usable_bytes(h, m.activations_bytes))


def test_headroom_is_a_flag_of_predict_infer_and_search(capsys):
    from tpsim.cli import main
    assert main(["predict", "--model", "gpt3-125m", "--tp", "1", "--memory-headroom", "0.5",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert '"reserved_bytes"' in out
    assert main(["infer", "--model", "llama3-8b", "--tp", "1", "--memory-headroom", "0.99"]) == 0
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["search", "--gpus", "8", "--global-batch", "8", "--memory-headroom", "1.5"]) == 2
    assert "--memory-headroom" in capsys.readouterr().err
