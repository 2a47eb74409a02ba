"""Activation recomputation (Korthikanti et al. 2022): the recomputed ops in the graph, what they
cost in time and hardware FLOPs, and what they save in activation memory, against hand numbers."""
from __future__ import annotations

import json

import networkx as nx
import pytest

from tpsim.cli import main
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.layer.graph import collectives_in, layer_graph
from tpsim.spec.model import ModelConfig
from tpsim.training.predict import predict, predict_layer
from tpsim.layer.recompute import SELECTIVE_OPS, recomputed_name
from tpsim.base.schema import from_mapping

S, B, H, A = 128, 2, 256, 8     # the toy layer: seq, micro-batch, hidden, heads; s*b*h = 65536


def gpt(**kw) -> ModelConfig:
    data = {"name": "toy-gpt", "layers": 2, "hidden": H, "heads": A, "vocab": 1000,
            "seq_len": S, "dropout": 0.1, **kw}
    return from_mapping(ModelConfig, data, "<test>")


def saved(g) -> float:
    return sum(a["saved_bytes"] for _, a in g.nodes(data=True))


def forward_ops(g) -> list[str]:
    return [n for n, a in g.nodes(data=True) if a["phase"] == "forward"]


@pytest.mark.parametrize("tp, sp", [(1, False), (8, False), (8, True)])
@pytest.mark.parametrize("attention", ["fused", "unfused"])
def test_full_recompute_copies_the_whole_forward(tp, sp, attention):
    """Every forward op, collectives included, has one rcp. copy in the backward; the graph stays
    acyclic; every backward op still reaches its forward op; each backward edge that left a
    forward op now leaves its copy; the copies start after the forward's last op."""
    none = layer_graph(gpt(), tp, B, S, "bf16", sp, attention=attention)
    g = layer_graph(gpt(), tp, B, S, "bf16", sp, attention=attention, recompute="full")
    fwd = forward_ops(none)
    rcp = [n for n in g if n.startswith("rcp.")]
    assert rcp == [recomputed_name(n) for n in fwd]
    assert all(g.nodes[n]["phase"] == "backward" and g.nodes[n]["recomputes"] for n in rcp)
    assert nx.is_directed_acyclic_graph(g)
    for n, a in g.nodes(data=True):
        if a["forward_of"]:
            assert nx.has_path(g, a["forward_of"], n), n
    for u, v in none.edges:
        if none.nodes[u]["phase"] == "forward" and none.nodes[v]["phase"] == "backward":
            assert g.has_edge(recomputed_name(u), v) and not g.has_edge(u, v), (u, v)
    assert g.has_edge(fwd[-1], rcp[0])
    assert forward_ops(g) == fwd


def test_full_recompute_collectives_tp8():
    """TP=8, no SP: backward runs its 2 all-reduces (QKV and MLP-in input gradients) plus the
    recomputed forward's 2 (proj and MLP-out); with SP the backward's 4 all-gathers (2 output
    gradients, 2 re-gathered inputs) and 2 reduce-scatters plus the recomputed 2 + 2."""
    g = layer_graph(gpt(), 8, B, S, "bf16", recompute="full")
    bwd = [op for phase, op, _ in collectives_in(g) if phase == "backward"]
    assert bwd == ["all-reduce"] * 4
    assert sorted(n for n in g if g.nodes[n]["kind"] == "collective" and n.startswith("rcp.")) \
        == ["rcp.mlp_out.all-reduce", "rcp.proj.all-reduce"]
    g = layer_graph(gpt(), 8, B, S, "bf16", True, recompute="full")
    bwd = sorted(op for phase, op, _ in collectives_in(g) if phase == "backward")
    assert bwd == ["all-gather"] * 6 + ["reduce-scatter"] * 4


def test_selective_recomputes_the_attention_core_only():
    """Unfused: Megatron's checkpointed core (K/V repeat, QK^T, softmax, attention dropout, AV,
    context copy) is copied, fed by the saved q, k, v and started after the output
    projection's backward; fused: nothing changes (flash attention
    already recomputes the scores)."""
    g = layer_graph(gpt(), 2, B, S, "bf16", attention="unfused", recompute="selective")
    assert [n for n in g if n.startswith("rcp.")] == [recomputed_name(n) for n in SELECTIVE_OPS]
    assert g.has_edge("fwd.attn.query", "rcp.attn.scores")
    assert g.has_edge("bwd.proj.dgrad", "rcp.attn.repeat_kv.k")
    assert g.has_edge("rcp.attn.av", "bwd.attn.av.dprobs") and nx.is_directed_acyclic_graph(g)
    none = layer_graph(gpt(), 2, B, S, "bf16", attention="fused")
    sel = layer_graph(gpt(), 2, B, S, "bf16", attention="fused", recompute="selective")
    assert list(sel.nodes(data=True)) == list(none.nodes(data=True))
    assert list(sel.edges(data=True)) == list(none.edges(data=True))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_saved_activations_per_layer(tp):
    """Per layer, 16-bit, dropout, unfused attention (Korthikanti Table 2 / eq. 6):
    full: s b h * 2 bytes (the layer input), / t with SP: 131072, and 131072/t with SP;
    selective: s b h (10 + 24/t) (the 5 a s^2 b / t of the core's s^2 tensors gone), with SP
    s b h 34/t (eq. 6 with sequence parallelism)."""
    sbh = S * B * H
    full = layer_graph(gpt(), tp, B, S, "bf16", attention="unfused", recompute="full")
    assert saved(full) == sbh * 2
    sel = layer_graph(gpt(), tp, B, S, "bf16", attention="unfused", recompute="selective")
    assert saved(sel) == sbh * (10 + 24 / tp)
    if tp > 1:
        full = layer_graph(gpt(), tp, B, S, "bf16", True, attention="unfused", recompute="full")
        assert saved(full) == sbh * 2 / tp
        sel = layer_graph(gpt(), tp, B, S, "bf16", True, attention="unfused",
                          recompute="selective")
        assert saved(sel) == sbh * 34 / tp
    fused = layer_graph(gpt(), tp, B, S, "bf16", attention="fused", recompute="selective")
    assert saved(fused) == sbh * (10 + 24 / tp)


def test_model_activation_memory():
    """Two layers, t = 2, unfused: none keeps 65536 * 22 + 5*8*128^2*2/2 = 2097152 bytes a layer,
    full 131072, selective 1441792; the embedding and output layer keep the same in every mode,
    so full - none = 2 * (131072 - 2097152) and selective - none = -2 * 655360."""
    kw = dict(tp=2, micro_batch=B, attention="unfused")
    acts = {r: predict(gpt(), "dgx-h100", recompute=r, **kw).memory.activations_bytes
            for r in ("none", "selective", "full")}
    assert acts["full"] - acts["none"] == 2 * (131072 - 2097152)
    assert acts["selective"] - acts["none"] == -2 * 655360
    fused = {r: predict(gpt(), "dgx-h100", recompute=r, tp=2, micro_batch=B).memory
             for r in ("none", "selective")}
    assert fused["selective"] == fused["none"]


def test_hardware_flops():
    """Full recompute re-runs the forward: 24 b s h^2/t + the causal core's 4 b h/t s(s+1)/2 =
    201326592 + 8454144 = 209780736 extra FLOPs a layer (b=2, s=128, h=256, t=2); selective the
    core's 8454144. Model FLOPs do not change; HFU > MFU."""
    kw = dict(tp=2, micro_batch=B, attention="unfused")
    none = predict(gpt(), "dgx-h100", **kw)
    for mode, extra in (("full", 209780736), ("selective", 8454144)):
        p = predict(gpt(), "dgx-h100", recompute=mode, **kw)
        assert p.layer.flops == none.layer.flops
        assert p.layer.hardware_flops - p.layer.flops == extra
        assert p.model.hardware_flops - p.model.flops == 2 * extra
        assert p.model.hfu > p.model.mfu
    assert none.model.hfu == none.model.mfu and none.layer.hardware_flops == none.layer.flops


@pytest.mark.parametrize("sp", [False, True])
def test_full_recompute_adds_one_forward(sp):
    """The layer's backward waits for the whole recomputed forward, which runs alone as the
    forward did (a chain: no backward op beside it): total(full) - total(none) = forward_s.
    GPT-3 175B at TP 8 on H100 is GPU-bound (host_wait_s = 0) and the copies meet no collective
    the forward did not, so only float rounding is left: within 1e-6 (1% would be the
    tolerance for interference, which does not occur here)."""
    kw = dict(tp=8, sequence_parallel=sp, attention="unfused")
    none = predict_layer("gpt3", "dgx-h100", **kw)
    full = predict_layer("gpt3", "dgx-h100", recompute="full", **kw)
    assert none.host_wait_s == pytest.approx(0, abs=1e-15)          # float residue of equal sums
    assert full.host_wait_s == pytest.approx(0, abs=1e-15)
    assert full.forward_s == pytest.approx(none.forward_s, rel=1e-9)
    assert full.backward_s >= none.backward_s + 0.99 * none.forward_s
    assert full.total_s - none.total_s == pytest.approx(none.forward_s, rel=1e-6)
    sel = predict_layer("gpt3", "dgx-h100", recompute="selective", **kw)
    assert none.backward_s < sel.backward_s < full.backward_s


def test_host_bound_recompute_costs_its_issue_time():
    """GPT-3 13B, TP 8, micro-batch 1 on H100 is host-bound: each phase takes its ops x the
    device's host_dispatch_us (the host issues them one by one). Full recompute issues the 16 forward ops again in the
    backward (norm1, qkv, scores, softmax, dropout, av, the context copy, proj, its
    all-reduce, bias_dropout_add1, norm2, mlp_in, act, mlp_out, its all-reduce,
    bias_dropout_add2; GPT-3 has no grouped queries: no query copy, no K/V repeat), so the
    layer grows by 16 x host_dispatch_us (0.928 ms at 58 us), and by one launch: 5 heads a
    rank, Megatron's softmax falls back to PyTorch's masked_fill_ and softmax (two calls)."""
    kw = dict(tp=8, attention="unfused")
    none = predict_layer("gpt3-13b", "dgx-h100", **kw)
    full = predict_layer("gpt3-13b", "dgx-h100", recompute="full", **kw)
    assert none.host_wait_s > 0 and full.host_wait_s > 0
    device = load_topology("dgx-h100").device
    added = 16 * device.host_dispatch_s + device.host_launch_s
    assert full.total_s - none.total_s == pytest.approx(added, rel=1e-6)


def test_bad_recompute():
    with pytest.raises(ConfigError, match="--recompute"):
        predict(gpt(), "dgx-h100", tp=2, recompute="some")


def test_cli_recompute(capsys):
    code = main(["predict", "--model", "gpt3", "--recompute", "bogus"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--recompute" in err
    code = main(["predict", "--model", "gpt3", "--recompute", "full", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["inputs"]["recompute"] == "full"
    assert d["model"]["hardware_flops"] > d["model"]["flops"] and d["model"]["hfu"] > d["model"]["mfu"]
    assert d["layer"]["hardware_flops"] > d["layer"]["flops"]
    assert any(o["name"] == "rcp.proj.all-reduce" for o in d["ops"])
    code = main(["predict", "--model", "gpt3", "--recompute", "selective"])
    assert code == 0 and "recompute selective" in capsys.readouterr().out


def test_plot_figures_take_recompute():
    """`tpsim plot breakdown --recompute full` prices the layer with its rcp. ops (the 12 forward
    ops of GPT-3 13B with fused attention, no SP, copied); `none` stays out of the figures' settings notes."""
    from tpsim.cli import build_parser
    from tpsim.cli.plot import plot_settings as _plot_settings
    from tpsim.figures.data import breakdown
    from tpsim.cluster.topology import load_topology
    parse = build_parser().parse_args
    settings = _plot_settings(parse(["plot", "breakdown", "--out", "x.png", "--recompute", "full"]))
    assert settings["recompute"] == "full"
    table = breakdown("gpt3-13b", load_topology("dgx-h100"), 8, **settings)
    assert sum(r["name"].startswith("rcp.") for r in table.rows) == 12
    assert "recompute" not in _plot_settings(parse(["plot", "breakdown", "--out", "x.png"]))
