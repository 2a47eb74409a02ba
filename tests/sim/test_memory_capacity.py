"""What the tensors may take of a device: its memory as the CUDA runtime exposes it, less the
topology's reserve (CUDA context, NCCL buffers), the allocator's fragmentation and the run's
headroom; predict, infer and search all judge ``fits`` against it."""
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


def test_predict_reports_capacity_and_reserve_and_honours_the_headroom():
    kw = dict(model="llama3-70b", topology="dgx-h100-ndr-cluster", tp=8, pp=2, dp=4,
              virtual_stages=5, global_batch=128, sequence_parallel=True,
              distributed_optimizer=True)
    base = tpsim.predict(**kw)
    dev = load_topology("dgx-h100-ndr-cluster").device
    m = base.memory
    assert m.capacity_bytes == 79.11 * GiB
    assert m.reserved_bytes == pytest.approx(79.11 * GiB - (79.11 - 1.5) * GiB * 0.95, rel=1e-12)
    assert all(s.reserved_bytes == m.reserved_bytes for s in base.stage_memory)
    assert m.fits and m.total_bytes > dev.usable_bytes(0.2)
    tight = tpsim.predict(**kw, memory_headroom=0.2)
    assert tight.memory.reserved_bytes == pytest.approx(
        m.capacity_bytes - dev.usable_bytes(0.2), rel=1e-12)
    assert not tight.memory.fits and any(w.code == "memory_does_not_fit" for w in tight.warnings)
    assert tight.step.time_s == base.step.time_s      # memory only: no time moves


def test_infer_largest_batch_follows_the_headroom():
    """max_batch = floor((usable - weights) / per-sequence bytes)."""
    kw = dict(model="llama2-70b", topology="dgx-h100", tp=8, batch=1, prompt=2048, gen=256)
    dev = load_topology("dgx-h100").device
    for h in (0.0, 0.3):
        m = tpsim.infer(**kw, memory_headroom=h).memory
        per_seq = m.kv_cache_bytes + m.activations_bytes
        assert m.max_batch == int((dev.usable_bytes(h) - m.weights_bytes) // per_seq)
        assert m.reserved_bytes == pytest.approx(m.capacity_bytes - dev.usable_bytes(h))


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
