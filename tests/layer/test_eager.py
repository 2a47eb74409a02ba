"""PyTorch eager's elementwise kernels (tpsim.layer.eager): the bytes its docstring counts."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.training.predict import predict

B, F = 2, 4   # bf16 activations, fp32


def ops(**kw):
    p = predict("llama3-8b", "grand-teton-h100", tp=1, dp=1, seq_len=2048, attention="flash2",
                **kw)
    return {o.name: o for o in p.ops}


def total(rows, prefix):
    return sum(o.bytes for name, o in rows.items()
               if name == prefix or name.startswith(prefix + "."))


def test_bytes_per_element():
    """Per element: RMSNorm 4B + 7F forward (8 kernels) and 8B + 15F backward (13), two of
    each direction per token; rope 2B + 4F on q and k; SwiGLU 5B and 9B on (T, f); GQA's
    K/V copies read kv and write q elements; the attention output copied once."""
    e = ops(eager_kernels=True)
    T, h, f, q, kv = 2048, 4096, 14336, 4096, 1024
    per_token = 2 * F * T
    assert total(e, "fwd.norm1") == (4 * B + 7 * F) * T * h + 2 * per_token
    assert total(e, "bwd.norm1") == (8 * B + 15 * F) * T * h + 2 * per_token
    assert sum(1 for n in e if n.startswith("fwd.norm1")) == 8
    assert sum(1 for n in e if n.startswith("bwd.norm1")) == 13
    assert total(e, "fwd.rope.q") + total(e, "fwd.rope.k") == (2 * B + 4 * F) * T * (q + kv)
    assert total(e, "fwd.act") == 5 * B * T * f and total(e, "bwd.act") == 9 * B * T * f
    assert total(e, "fwd.repeat_kv") == 2 * B * T * (q + kv) == total(e, "bwd.repeat_kv")
    assert e["fwd.attn.contiguous"].bytes == 2 * B * T * q
    fused = ops()
    assert fused["fwd.norm1"].bytes == 2 * B * T * h
    assert not any(n.startswith(("fwd.rope", "fwd.repeat_kv")) for n in fused)
    for name in ("fwd.qkv", "fwd.attn", "fwd.mlp_in", "bwd.mlp_in.wgrad"):
        assert e[name].flops == fused[name].flops


def test_no_copies_without_grouped_queries():
    """repeat_kv returns its input when every query head has its own K/V head."""
    p = predict("llama2-7b", "grand-teton-h100", tp=1, dp=1, seq_len=2048, eager_kernels=True)
    assert all(o.bytes == 0 for o in p.ops if "repeat_kv" in o.name)


@settings(max_examples=6, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.sampled_from(["none", "full"]))
def test_eager_is_never_faster(tp, recompute):
    """More kernels and more bytes: the eager step is never shorter than the fused one."""
    kw = dict(tp=tp, dp=1, seq_len=2048, recompute=recompute, sequence_parallel=tp > 1)
    fused = predict("llama3-8b", "grand-teton-h100", **kw).step.time_s
    eager = predict("llama3-8b", "grand-teton-h100", eager_kernels=True, **kw).step.time_s
    assert eager > fused


def test_full_recompute_reruns_the_eager_kernels():
    """Full recomputation copies every forward kernel, the eager ones too."""
    e = ops(eager_kernels=True, recompute="full")
    assert "rcp.norm1.pow" in e and "rcp.rope.q.complex_mul" in e
    assert e["rcp.norm1.pow"].bytes == pytest.approx(e["fwd.norm1.pow"].bytes)
