"""The engines' default memory reserve (tpsim.serving.engine_memory): vLLM's
gpu_memory_utilization of the whole memory, SGLang's mem_fraction_static by TP degree, and the
explicit --memory-headroom that overrides both."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, strategies as st

from tpsim.cli import main
from tpsim.cluster.topology import load_topology
from tpsim.serving.engine import kv_cache_blocks
from tpsim.serving.engine_memory import (SGLANG_MEM_FRACTION_STATIC, engine_headroom, headroom,
                                         mem_fraction_static)
from tpsim.serving.infer import infer
from tpsim.spec.model import load_model
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout

H100 = load_topology("dgx-h100").device


def test_vllm_keeps_a_tenth_of_the_whole_memory():
    """usable = (M - R)(1 - h) = 0.9 M - R: the CUDA context counts inside vLLM's 0.9."""
    m, r = H100.memory_bytes, H100.memory_reserved_bytes
    assert H100.usable_bytes(engine_headroom("vllm", H100, 8)) == pytest.approx(0.9 * m - r,
                                                                                rel=1e-12)


@given(st.integers(1, 4096))
def test_sglang_keeps_one_less_its_fraction_falling_with_tp(tp):
    """h = 1 - mem_fraction_static(tp), v0.4.1's 0.88 .. 0.79, never rising with TP; v0.3.0
    differs only from TP 8 (0.83 against 0.81)."""
    for engine in SGLANG_MEM_FRACTION_STATIC:
        f = mem_fraction_static(engine, tp)
        assert engine_headroom(engine, H100, tp) == pytest.approx(1 - f, abs=1e-15)
        assert f <= mem_fraction_static(engine, max(1, tp // 2)) and 0.79 <= f <= 0.88
    assert (mem_fraction_static("sglang-0.4", tp) == mem_fraction_static("sglang-0.3", tp)) \
        == (tp < 8 or tp >= 16)


def test_an_explicit_headroom_wins():
    assert headroom(0.0, "vllm", H100, 1) == 0.0
    assert headroom(0.3, "sglang-0.4", H100, 4) == 0.3


@pytest.mark.parametrize("admission, tp", [("vllm", 1), ("sglang-0.4", 4), ("sglang-0.3", 8)])
def test_serve_sizes_the_cache_as_its_engine(admission, tp):
    """The default layout's cache is the engine's headroom's, and --memory-headroom 0 (the
    cache taking all the memory past the reserve) holds more blocks."""
    m, topo = load_model("llama3-8b"), load_topology("dgx-h100")
    s = ServeSettings(admission=admission)
    default = kv_cache_blocks(m, topo, ServingLayout(tp=tp), s)
    h = engine_headroom(admission, topo.device, tp)
    given = kv_cache_blocks(m, topo, ServingLayout(tp=tp, memory_headroom=h), s)
    assert default == dataclasses.replace(given, memory_rule=default.memory_rule)
    assert default.memory_headroom == h and given.memory_rule == f"--memory-headroom {h:g}"
    full = kv_cache_blocks(m, topo, ServingLayout(tp=tp, memory_headroom=0.0), s)
    assert full.num_gpu_blocks > default.num_gpu_blocks and full.memory_headroom == 0.0


def test_infer_fits_as_vllm_does():
    """tpsim infer's largest batch keeps vLLM's reserve unless --memory-headroom says."""
    kw = dict(tp=8, batch=1)
    default = infer("llama2-70b", "dgx-h100", **kw).memory
    vllm = infer("llama2-70b", "dgx-h100", memory_headroom=engine_headroom("vllm", H100, 8),
                 **kw).memory
    full = infer("llama2-70b", "dgx-h100", memory_headroom=0.0, **kw).memory
    assert default.max_batch == vllm.max_batch < full.max_batch


@pytest.mark.parametrize("flags, says", [([], "vLLM's gpu_memory_utilization 0.9"),
                                         (["--admission", "sglang-0.4", "--tp", "4"],
                                          "SGLang's mem_fraction_static 0.85"),
                                         (["--memory-headroom", "0"], "--memory-headroom 0 ")])
def test_serve_says_whose_reserve_it_kept(capsys, flags, says):
    base = ["serve", "--model", "llama3-8b", "--tp", "1", "--requests", "20", "--prompt", "128",
            "--gen", "16"]
    assert main(base + flags) == 0
    assert says in capsys.readouterr().out
