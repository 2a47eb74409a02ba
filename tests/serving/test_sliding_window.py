"""Sliding-window attention (gpt-oss's alternating 128-token band) in serving: the attention's
pairs, the kinds of layer, the decode's reads and the KV cache, against closed forms."""
from __future__ import annotations

import dataclasses

from hypothesis import given, strategies as st

from tpsim.layer.ops import Attention
from tpsim.cluster.topology import load_topology
from tpsim.serving.infer import _Server, infer
from tpsim.serving.memory import kv_bytes_per_token
from tpsim.spec.model import load_model
from tpsim.spec.model_params import is_moe_layer, layer_kinds

OSS = load_model("gpt-oss-120b")


def _pairs(sq, skv, w):
    return Attention(1, 1, 1, sq, skv, 64, "bf16", True, window=w).pairs


def test_window_pairs_closed_form():
    """s 1024, W 128: 128 x 129 / 2 + (1024 - 128) x 128 = 122,944; a chunk of 4 queries at
    positions 127..130 sees 127 + 128 + 128 + 128 = 511 keys; W >= s is plain causal."""
    assert _pairs(1024, 1024, 128) == 122_944
    assert _pairs(4, 130, 128) == 511
    assert _pairs(100, 100, 128) == _pairs(100, 100, 0) == 100 * 101 / 2


@given(st.integers(1, 300), st.integers(0, 300), st.integers(1, 200))
def test_window_pairs_brute_force(sq, extra, w):
    skv = sq + extra
    assert _pairs(sq, skv, w) == sum(min(p, w) for p in range(skv - sq + 1, skv + 1))


@given(st.integers(1, 60), st.integers(0, 5), st.integers(1, 4), st.integers(1, 4),
       st.booleans())
def test_layer_kinds_count_every_layer_once(layers, first, moe_freq, window_freq, window):
    m = dataclasses.replace(OSS, layers=layers, first_dense_layers=min(first, layers - 1),
                            moe_layer_freq=moe_freq, sliding_window_freq=window_freq,
                            sliding_window=128 if window else None)
    brute = {}
    for i in range(layers):
        key = (is_moe_layer(m, i), 128 if window and i % window_freq == 0 else 0)
        brute[key] = brute.get(key, 0) + 1
    assert {(moe, w): n for n, moe, w in layer_kinds(m)} == brute


def test_gpt_oss_kinds_and_cache():
    """36 MoE layers, every other one banded; the cache of a 1,000-token context holds all
    1,000 tokens in 18 layers and the last 128 in the other 18."""
    assert layer_kinds(OSS) == ((18, True, 0), (18, True, 128))
    p = infer(OSS, "dgx-h200", tp=4, batch=2, prompt=901, gen=100)
    per_layer = kv_bytes_per_token(OSS, 4, 1, "bf16") / 36
    assert p.memory.kv_cache_bytes == 2 * per_layer * (18 * 1000 + 18 * 128)


def test_decode_mean_across_the_window_is_exact():
    """A window inside the generated range (kv_len 101..160, W 128): the mean step equals the
    mean of every step priced on its own."""
    m = dataclasses.replace(load_model("llama3-8b"), sliding_window=128, sliding_window_freq=2,
                            name="llama3-8b-banded")
    p = infer(m, "dgx-h100", tp=1, batch=4, prompt=100, gen=61)
    srv = _Server(m, load_topology("dgx-h100"), 1, 1, "bf16", "bf16", "bf16", "nccl", False)
    steps = [srv.decode_layer(4, n).time_s for n in range(101, 161)]
    fixed = p.decode.time_per_token_s - m.layers * sum(steps) / len(steps)
    assert abs(fixed - (p.decode.first_step_s - m.layers * steps[0])) < 1e-12
