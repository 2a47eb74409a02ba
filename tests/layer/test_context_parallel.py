"""Context-parallel attention in the op graph (tpsim.layer.context_parallel): the work per rank
is 1/cp of CP 1's, the exchanges are the ones Transformer Engine issues, the checks refuse
what it does not run."""
from __future__ import annotations

import dataclasses

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.layer.graph import layer_graph
from tpsim.spec.model import load_model
from tpsim.spec.parallel import Parallelism
from tpsim.training import terms

M = load_model("llama2-7b")
COMMS = ("p2p", "all-gather", "a2a", "a2a+p2p")


def _ops(g, kind=None, phase=None):
    return [a["op"] for _, a in g.nodes(data=True)
            if (kind is None or a["kind"] == kind) and (phase is None or a["phase"] == phase)]


@pytest.mark.parametrize("comm", COMMS)
@pytest.mark.parametrize("cp", [2, 4, 8])
def test_every_flop_of_a_rank_is_one_cp_th_of_cp1(comm, cp):
    """GEMMs on s/cp tokens; attention pairs: the causal s (s + 1) / 2 split exactly (p2p:
    diagonal c (c + 1) / 2 plus (cp - 1) c^2 / 2, c = s / cp; all-gather: chunks of s / 2cp;
    a2a: heads / cp on all s)."""
    one = layer_graph(M, 1, 1, 4096, "bf16")
    split = layer_graph(M, 1, 1, 4096, "bf16", cp=cp, cp_comm=comm,
                        cp_a2a=2 if comm == "a2a+p2p" else 1)
    for kind in ("gemm", "attention"):
        a, b = (sum(op.flops for op in _ops(g, kind)) for g in (one, split))
        assert b == pytest.approx(a / cp, rel=1e-12), kind


def test_p2p_ring_exchanges():
    """Forward: cp - 1 K/V send-recvs beside cp attention steps; backward: K/V at step 0,
    K/V + dK/dV in between, dK/dV last: 2 (cp - 1) K/V-sized messages."""
    cp, s = 4, 8192
    g = layer_graph(M, 1, 1, s, "bf16", cp=cp)
    kv = 2 * (s // cp) * M.kv_heads * M.head_dim * 2
    fwd, bwd = _ops(g, "p2p", "forward"), _ops(g, "p2p", "backward")
    assert [op.nbytes for op in fwd] == [kv] * (cp - 1)
    assert [op.nbytes for op in bwd] == [kv, 2 * kv, 2 * kv, kv]
    assert {op.group for op in fwd + bwd} == {"cp"}
    assert len(_ops(g, "attention", "forward")) == cp


@pytest.mark.parametrize("cp", [2, 4])
def test_p2p_ring_elementwise_traffic_is_transformer_engines(cp):
    """AttnFuncWithCPAndKVP2P with 16-bit attention (Transformer Engine's context_parallel.py):
    forward, the fp32 output correction (init 2 + 4, each later step 4 + 2 + 4, the cast back
    4 + 2 bytes per output element) and the K/V concatenated into the ring buffer; backward,
    per step dQ/dK/dV copied (step 0, with K/V copied into the ring buffer) or added (after),
    each step's sums waiting for that step's message."""
    s = 8192
    g = layer_graph(M, 1, 1, s, "bf16", cp=cp)
    out = (s // cp) * M.heads * M.head_dim
    kv = 2 * (s // cp) * M.kv_heads * M.head_dim * 2
    ops = {a["name"]: a["op"] for _, a in g.nodes(data=True)}
    assert ops["fwd.attn.cp.correct"].nbytes == out * (6 + 10 * (cp - 1) + 6) + 2 * kv
    for i in range(cp):
        c = 2 if i == 0 else 3
        acc = ops[f"bwd.attn.cp{i}.accumulate"].nbytes
        assert acc == (out * 2 + kv) * c + (2 * kv if i == 0 else 0)
        assert g.has_edge(f"bwd.attn.cp{i}", f"bwd.attn.cp{i}.accumulate")
        assert g.has_edge(f"bwd.attn.cp.kv{i}", f"bwd.attn.cp{i}.accumulate")
    assert not any("accumulate" in n for n in layer_graph(M, 1, 1, s, "bf16").nodes)


def test_all_gather_and_a2a_collectives():
    s, cp = 8192, 4
    kv = 2 * (s // cp) * M.kv_heads * M.head_dim * 2
    g = layer_graph(M, 1, 1, s, "bf16", cp=cp, cp_comm="all-gather")
    got = [(op.op, op.nbytes) for op in _ops(g, "collective")]
    assert got == [("all-gather", cp * kv), ("all-gather", cp * kv), ("reduce-scatter", cp * kv)]
    g = layer_graph(M, 1, 1, s, "bf16", cp=cp, cp_comm="a2a")
    qkv = (s // cp) * (M.heads + 2 * M.kv_heads) * M.head_dim * 2
    out = (s // cp) * M.heads * M.head_dim * 2
    assert [(op.op, op.nbytes) for op in _ops(g, "collective")] == [
        ("all-to-all", qkv), ("all-to-all", out), ("all-to-all", out), ("all-to-all", qkv)]


def test_a2a_plus_p2p_is_a2a_in_the_node_and_the_ring_across():
    """Llama 3 70B (8 kv heads), TP 4, CP 8 on 8-GPU nodes: a2a over the 2 CP ranks a node
    holds beside TP, the ring over 4 nodes; a = 1 is the ring alone, a = cp Ulysses."""
    from tpsim.layer.context_parallel import hierarchical_sizes
    assert hierarchical_sizes(8, 4, 8, 16, 2) == (2, 4)
    assert hierarchical_sizes(8, 8, 8, 8, 1) == (1, 8)
    assert hierarchical_sizes(4, 1, 8, 32, 8) == (4, 1)
    p = tpsim.predict("llama3-70b", "dgx-h100-ndr-cluster", tp=4, cp=8, cp_comm="a2a+p2p",
                      seq_len=65536)
    got = {}
    for c in p.collectives:
        got[c.group, c.phase, c.op] = got.get((c.group, c.phase, c.op), 0) + c.count
    assert got[("cp.a2a", "forward", "all-to-all")] == 2
    assert got[("cp.ring", "forward", "send-recv")] == 3
    ring = layer_graph(M, 1, 1, 8192, "bf16", cp=4, cp_comm="a2a+p2p", cp_a2a=1)
    plain = layer_graph(M, 1, 1, 8192, "bf16", cp=4)
    assert [a["op"] for _, a in ring.nodes(data=True)] == \
        [dataclasses.replace(a["op"], group="cp.ring") if a["kind"] == "p2p" else a["op"]
         for _, a in plain.nodes(data=True)]


def test_llama2_7b_at_128k_with_cp4():
    """The issue's bar: cp rows, and 0.2-0.35 of CP 1's activations per GPU."""
    base = tpsim.predict("llama2-7b", "dgx-h100-ndr-cluster", tp=8, seq_len=131072)
    cp4 = tpsim.predict("llama2-7b", "dgx-h100-ndr-cluster", tp=8, cp=4, seq_len=131072)
    assert any(c.group == "cp" for c in cp4.collectives)
    ratio = cp4.memory.activations_bytes / base.memory.activations_bytes
    assert 0.2 <= ratio <= 0.35
    assert cp4.inputs.gpus == 32 and not base.memory.fits and cp4.memory.fits


def test_a_ring_step_is_hidden_when_attention_is_longer():
    """Exposed time per step is max(attention, transfer) - attention: at 32K tokens per rank
    inside a node the K/V transfer hides behind the attention, so the layer's exposed
    communication is the TP all-reduces' alone (none at tp 1)."""
    p = tpsim.predict_layer("llama2-7b", "dgx-h100", tp=1, cp=4, seq_len=131072)
    assert p.exposed_comm_s < 0.02 * p.total_s


def test_gradients_reduce_over_dp_x_cp():
    par = Parallelism(tp=2, cp=4, dp=2, pp=2)
    g = terms.dp_group(par, 1)
    assert (g.size, g.stride, g.first) == (8, 2, 16)
    assert terms.grad_ranks(par) == 8
    a = tpsim.predict("llama2-7b", "dgx-h100", tp=2, cp=4, global_batch=8, seq_len=8192,
                      distributed_optimizer=True)
    assert a.stage_memory[0].optimizer_shards == 4 and a.step.dp == 1


@pytest.mark.parametrize("kw, flag", [
    (dict(cp=3, seq_len=4096), "--seq"),
    (dict(cp=2, attention="unfused"), "--attention"),
    (dict(cp=2, cp_comm="ring"), "--cp-comm"),
    (dict(tp=8, cp=2, cp_comm="a2a"), "--cp"),     # 4 query heads but 1 kv head per TP rank
    (dict(tp=8, cp=2), "--topology"),              # 16 GPUs on one node
])
def test_checks(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict("llama3-8b", "dgx-h100", **kw)
