"""The op graph of one layer: FLOPs, bytes, collectives and saved activations against closed forms
derived by hand, and its structure (acyclic, every backward op after its forward)."""
from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cost.collectives import bus_factor
from tpsim.layer.graph import collectives_in, layer_graph
from tpsim.training.predict import predict
from tpsim.spec.model import ModelConfig, with_overrides
from tpsim.base.schema import from_mapping


def gpt(**kw) -> ModelConfig:
    data = {"name": "toy-gpt", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000,
            "seq_len": 128, "dropout": 0.1, **kw}
    return from_mapping(ModelConfig, data, "<test>")


def flops(g, phase, kinds=("gemm", "attention")):
    return sum(a["op"].flops for _, a in g.nodes(data=True)
               if a["phase"] == phase and a["kind"] in kinds)


@pytest.mark.parametrize("tp", [1, 2, 4, 8])
@pytest.mark.parametrize("attention", ["fused", "unfused"])
def test_gpt_layer_flops(tp, attention):
    """Narayanan et al. 2021: a GPT layer's forward GEMMs are 24 b s h^2 / t (QKV 6, proj 2, MLP
    8 + 8); the causal attention core needs 4 b h/t s(s+1)/2 (the pairs on or below the
    diagonal; Narayanan et al. count the full 4 b s^2 h / t); backward is twice the forward."""
    b, s, h = 2, 128, 256
    g = layer_graph(gpt(), tp, b, s, "bf16", attention=attention)
    scores = [a["op"].flops for _, a in g.nodes(data=True) if a["phase"] == "forward"
              and a["block"] == "attention" and a["name"] not in ("fwd.qkv", "fwd.proj")
              and a["kind"] in ("gemm", "attention")]
    core = 4 * b * h / tp * s * (s + 1) / 2
    assert sum(scores) == core
    assert flops(g, "forward") == 24 * b * s * h * h / tp + core
    assert flops(g, "backward") == 2 * flops(g, "forward")


def test_swiglu_gqa_flops():
    """Llama-style: forward GEMMs 2bs[h(q + 2kv) + q h + 3 h f]/t with q = 256, kv = 64 (2 of 8
    heads), f = 512: 2*128*(256*384 + 65536 + 3*256*512)/2 = 128*(98304 + 65536 + 393216).
    Gate and up are one GEMM of width 2f/t = 512 (Megatron-core's linear_fc1)."""
    m = gpt(kv_heads=2, ffn_hidden=512, activation="swiglu", norm="rmsnorm")
    g = layer_graph(m, 2, 1, 128, "bf16")
    assert flops(g, "forward", ("gemm",)) == 128 * (98304 + 65536 + 393216)
    assert g.nodes["fwd.mlp_in"]["op"].shape == "128x256 @ 256x512"
    assert not [n for n in g if "gate" in n]


def test_bytes_of_simple_ops():
    """b*s = 256 tokens, h = 256, bf16: the norm reads and writes 256*256*2 bytes each (262144);
    the fused bias-dropout-add reads the block output and the residual, writes the sum and a
    1-byte mask (256*256*7 = 458752); gelu on f/t = 512 columns with tp 2: 2 * 256*512*2 =
    524288; the QKV GEMM (256x256 @ 256x384) moves (256*256 + 256*384 + 256*384) * 2 = 524288
    bytes; its weight gradient (256x256 @ 256x384) reads both operands in bf16 and reads and
    writes the fp32 main gradient: (256*256 + 256*384) * 2 + 256*384 * 8 = 1114112; the QKV
    bias gradient reads the 256 x 384 output gradient: 196608."""
    g = layer_graph(gpt(bias=True), 2, 2, 128, "bf16")
    assert g.nodes["fwd.norm1"]["op"].bytes == 262144
    assert g.nodes["fwd.bias_dropout_add1"]["op"].bytes == 458752
    assert g.nodes["bwd.dropout1"]["op"].bytes == 256 * 256 * 5
    assert g.nodes["fwd.act"]["op"].bytes == 524288
    assert g.nodes["fwd.qkv"]["op"].bytes == 524288
    assert g.nodes["bwd.qkv.wgrad"]["op"].bytes == 1114112
    assert g.nodes["bwd.qkv.bias_grad"]["op"].bytes == 196608
    assert "bwd.qkv.bias_grad" not in layer_graph(gpt(), 2, 2, 128, "bf16")


@pytest.mark.parametrize("sp", [False, True])
@pytest.mark.parametrize("attention", ["fused", "unfused"])
def test_structure(sp, attention):
    g = layer_graph(gpt(), 4, 1, 128, "bf16", sequence_parallel=sp, attention=attention)
    assert nx.is_directed_acyclic_graph(g)
    last_fwd = max((n for n in g if g.nodes[n]["phase"] == "forward"),
                   key=lambda n: list(g).index(n))
    for n, a in g.nodes(data=True):
        assert a["kind"] in ("gemm", "attention", "elementwise", "collective")
        assert a["stream"] == ("comm" if a["kind"] == "collective" else "compute")
        assert n.startswith("fwd." if a["phase"] == "forward" else "bwd.")
        if a["phase"] == "backward":
            assert a["forward_of"] in g and g.nodes[a["forward_of"]]["phase"] == "forward"
            assert nx.has_path(g, a["forward_of"], n)
            assert nx.has_path(g, last_fwd, n)       # backward starts after the forward


def test_megatron_overlap_order():
    """Megatron issues dgrad, then the async all-reduce of the input gradient, then wgrad: the
    all-reduce needs only the dgrad, so it runs beside the wgrad; the norm backward needs it."""
    g = layer_graph(gpt(), 8, 1, 128, "bf16")
    ar = "bwd.mlp_in.all-reduce"
    order = list(g)
    assert order.index("bwd.mlp_in.dgrad") < order.index(ar) < order.index("bwd.mlp_in.wgrad")
    assert set(g.predecessors(ar)) == {"bwd.mlp_in.dgrad", "fwd.mlp_in"}
    assert not nx.has_path(g, "bwd.mlp_in.wgrad", ar) and not nx.has_path(g, ar, "bwd.mlp_in.wgrad")
    assert ar in g.predecessors("bwd.norm2")
    p = predict(gpt(), "dgx-a100", tp=8)
    start = {o.name: o.start_s for o in p.ops}
    assert start[ar] == start["bwd.mlp_in.wgrad"]


def test_collectives_megatron_and_sp():
    """No SP: 2 forward and 2 backward all-reduces of b*s*h*bpe = 2*128*256*2 = 131072 bytes.
    SP: each becomes an all-gather and a reduce-scatter of the same full size; in the backward
    each column-parallel linear also re-gathers its input (Megatron-core keeps only the shard)."""
    nbytes = 2 * 128 * 256 * 2
    g = layer_graph(gpt(), 4, 2, 128, "bf16")
    assert collectives_in(g) == [("forward", "all-reduce", nbytes)] * 2 + \
        [("backward", "all-reduce", nbytes)] * 2
    g = layer_graph(gpt(), 4, 2, 128, "bf16", sequence_parallel=True)
    ops = [(p, op) for p, op, n in collectives_in(g)]
    assert ops == [("forward", "all-gather"), ("forward", "reduce-scatter")] * 2 + \
        [("backward", "all-gather"), ("backward", "all-gather"), ("backward", "reduce-scatter")] * 2
    assert {n for _, _, n in collectives_in(g)} == {nbytes}


def test_tp1_has_no_collectives():
    for sp in (False, True):
        assert collectives_in(layer_graph(gpt(), 1, 1, 128, "bf16", sequence_parallel=sp)) == []


@settings(max_examples=40, deadline=None)
@given(tp=st.sampled_from([2, 4, 8]), b=st.integers(1, 4), swiglu=st.booleans())
def test_sp_moves_the_same_bytes_plus_the_regather(tp, b, swiglu):
    """Korthikanti et al. 2022: an all-reduce is a reduce-scatter plus an all-gather, so SP moves
    the same bytes per rank in the forward; the backward adds the re-gather of the two
    column-parallel linears' inputs: 2 (t-1)/t b s h bpe."""
    m = gpt(activation="swiglu" if swiglu else "gelu")

    def wire(g, phase):
        return sum(bus_factor(op, tp) * n for p, op, n in collectives_in(g) if p == phase)
    plain = layer_graph(m, tp, b, 128, "bf16")
    sp = layer_graph(m, tp, b, 128, "bf16", sequence_parallel=True)
    assert wire(sp, "forward") == pytest.approx(wire(plain, "forward"))
    regather = 2 * (tp - 1) / tp * b * 128 * 256 * 2
    assert wire(sp, "backward") == pytest.approx(wire(plain, "backward") + regather)


def saved(g):
    return sum(a["saved_bytes"] for _, a in g.nodes(data=True))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_activations_match_korthikanti(tp):
    """Korthikanti et al. 2022 Table 2, 16-bit, dropout, unfused attention, per layer:
    no SP: s b h (10 + 24/t) + 5 a s^2 b / t;  with flash attention the 5as^2b/t term goes.
    With SP (the column-parallel inputs kept as shards): s b h 34/t + 5 a s^2 b / t."""
    s, b, h, a = 128, 2, 256, 8
    m = gpt()
    g = layer_graph(m, tp, b, s, "bf16", attention="unfused")
    assert saved(g) == s * b * h * (10 + 24 / tp) + 5 * a * s * s * b / tp
    g = layer_graph(m, tp, b, s, "bf16", attention="fused")
    assert saved(g) == s * b * h * (10 + 24 / tp)
    g = layer_graph(m, tp, b, s, "bf16", sequence_parallel=True, attention="unfused")
    assert saved(g) == s * b * h * 34 / tp + 5 * a * s * s * b / tp


def test_no_dropout_no_dropout_ops():
    """Without dropout the bias-dropout-add is a plain add (read 2, write 1: 3 * 128*256*2) with
    no mask, and the backward has no dropout kernel."""
    for g in (layer_graph(gpt(dropout=0.0), 2, 1, 128, "bf16", attention="unfused"),
              layer_graph(gpt(), 2, 1, 128, "bf16", dropout=0.0)):
        assert not [n for n in g if "dropout" in n and "bias_dropout_add" not in n]
        assert g.nodes["fwd.bias_dropout_add1"]["op"].bytes == 3 * 128 * 256 * 2
        assert g.nodes["fwd.bias_dropout_add1"]["saved_bytes"] == 0


@pytest.mark.parametrize("block, names", [
    ("mlp", {"fwd.mlp_in", "fwd.act", "fwd.mlp_out", "fwd.mlp_out.all-reduce",
             "bwd.mlp_out.dgrad", "bwd.mlp_out.wgrad", "bwd.act", "bwd.mlp_in.dgrad",
             "bwd.mlp_in.wgrad", "bwd.mlp_in.all-reduce"}),
    ("attention", {"fwd.qkv", "fwd.attn", "fwd.proj", "fwd.proj.all-reduce", "bwd.proj.dgrad",
                   "bwd.proj.wgrad", "bwd.attn", "bwd.qkv.dgrad", "bwd.qkv.wgrad",
                   "bwd.qkv.all-reduce"})])
def test_bare_blocks_hold_only_what_the_real_layers_run(block, names):
    g = layer_graph(gpt(), 2, 1, 128, "bf16", blocks=(block,), bare=True)
    assert set(g) == names
    assert [(p, op) for p, op, _ in collectives_in(g)] == [("forward", "all-reduce"),
                                                           ("backward", "all-reduce")]


def test_overridden_model_graph():
    m = with_overrides(gpt(), hidden=512, heads=4)
    g = layer_graph(m, 4, 1, 128, "bf16")
    assert g.nodes["fwd.qkv"]["op"].shape == "128x512 @ 512x384"     # 3 * 512 / 4
