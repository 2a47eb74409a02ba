"""The flex and all-gather token dispatchers (tpsim.layer.moe_flex) against closed forms: the
flex kernels priced as the two-level dispatch at a balanced router's fan-out, no permute op
beside them, the all-gather dispatcher's G = T_n etp ep rows on expert-TP x EP, and the
refusals Megatron-core makes."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.cost.all_to_all import (DEEPEP_SMS, flex_dispatch_time, hierarchical_dispatch_time,
                                   uniform_fanout)
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import routed_per_expert
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.layer.moe_flex import TPEP, AllGather, Flex, slot_of, slot_subgroups
from tpsim.layer.ops import Dispatch
from tpsim.sim.price import Pricing, price
from tpsim.spec.folding import fold
from tpsim.spec.layout import Layout
from tpsim.spec.parallel import Parallelism

from tests.layer.test_moe_ep import toy

CLUSTER = load_topology("dgx-h100-ndr-cluster")


def ops_of(moe, model=None, tp=1, ep=4, etp=1, load=1.0):
    model = model or toy()
    d = alltoall_dims(model, tp, ep, etp, 2, 128, "bf16", tp > 1, load)
    tpl = layer_template(tp > 1, tp > 1, blocks=("mlp",), dropout=False, swiglu=True, moe=moe)
    return d, dict(zip(tpl.names, tpl.ops(d)))


def test_flex_runs_four_fused_kernels_and_no_permute():
    """The flex slot: dispatch and combine, forward and backward, each the rank's T_n = 256
    tokens of h = 256 bf16 once (2 bytes x 256 per token) on ep; the permute and unpermute
    run inside the kernels (no op of their own), the local sort stays."""
    _, ops = ops_of(Flex(False))
    kernels = {n: op for n, op in ops.items() if isinstance(op, Dispatch)}
    assert sorted(kernels) == ["bwd.moe.combine", "bwd.moe.dispatch", "fwd.moe.combine",
                               "fwd.moe.dispatch"]
    assert {(op.tokens, op.token_bytes, op.group, op.experts, op.top_k)
            for op in kernels.values()} == {(256, 512, "ep", 8, 2)}
    assert not [n for n in ops if "permute" in n]
    assert "fwd.moe.sort" in ops and "fwd.moe.unsort" in ops


def test_hybridep_gathers_every_ranks_routing_map_before_its_forward_dispatch_only():
    """HybridEP's metadata preprocessing (module docstring): the forward dispatch waits for an
    all-gather on ep of each rank's T_n x E bool routing map, ep T_n E bytes in all
    (256 tokens, 8 experts, ep 4: 8,192); DeepEP and the backward gather none."""
    d, ops = ops_of(Flex(False, "hybridep"))
    gathers = {n: op for n, op in ops.items() if "routing" in n}
    assert list(gathers) == ["fwd.moe.routing.all-gather"]
    op = gathers["fwd.moe.routing.all-gather"]
    assert (op.op, op.group, op.nbytes) == ("all-gather", "ep", d.ep * d.Tn * d.experts) == \
        ("all-gather", "ep", 4 * 256 * 8)
    assert not [n for n in ops_of(Flex(False, "deepep"))[1] if "routing" in n]


def test_hybridep_dispatch_and_its_backward_carry_the_probabilities():
    """Megatron-core's HybridEP dispatch passes probs and its backward their gradient; the
    combine and its backward pass none; DeepEP's kernels are priced without."""
    _, ops = ops_of(Flex(False, "hybridep"))
    kernels = {n: op.probs for n, op in ops.items() if isinstance(op, Dispatch)}
    assert kernels == {"fwd.moe.dispatch": True, "fwd.moe.combine": False,
                       "bwd.moe.combine": False, "bwd.moe.dispatch": True}
    assert not any(op.probs for op in ops_of(Flex(False, "deepep"))[1].values()
                   if isinstance(op, Dispatch))


@pytest.mark.parametrize("ep, nodes", [(8, 1), (16, 2), (64, 8)])
def test_flex_kernel_is_the_two_level_dispatch_at_a_balanced_fanout(ep, nodes):
    """Priced: hierarchical_dispatch_time(T, b, place, r, R, "deepep", 20) with (r, R) =
    uniform_fanout(E, k, ep, 8) on DGX H100 nodes (8 EP ranks a node), here DeepSeek-V3's
    256 experts, top 8, 4096 tokens of 7168 bf16: DeepEP's kernels on Megatron-core's 20 SMs."""
    group = fold(Parallelism(tp=1, dp=ep), ep, 1, 256).group("ep")
    place = CLUSTER.place(group)
    op = Dispatch(4096, 7168 * 2, 256, 8, "ep")
    t, formula, cost = price(op, Pricing(CLUSTER, fold(Parallelism(tp=1, dp=ep), ep, 1, 256)))
    remote, ranks = uniform_fanout(256, 8, ep, 8)
    want = hierarchical_dispatch_time(4096, 7168 * 2, place, CLUSTER, remote, ranks, "deepep",
                                      DEEPEP_SMS)
    assert t == cost.time_s == want.time_s
    assert formula.endswith("flex_dispatch_time") and cost.nbytes == 4096 * 7168 * 2
    assert (remote == 0) == (nodes == 1)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 8), nodes=st.sampled_from([2, 4, 8]), per_gpu=st.sampled_from([1, 2, 4]))
def test_flex_sends_no_more_across_nodes_than_nccls_all_to_all(k, nodes, per_gpu):
    """A token crosses the network once per other node its experts sit on: r <= k (m - 1)/m,
    the expected count of its top-k experts off its node, which NCCL's all-to-all sends one
    copy each (S (n - g)/n with S = T k b)."""
    ep = 8 * nodes
    experts = ep * per_gpu
    place = CLUSTER.place(fold(Parallelism(tp=1, dp=ep), ep, 1, experts).group("ep"))
    remote, ranks = uniform_fanout(experts, k, ep, 8)
    d = hierarchical_dispatch_time(1000, 100, place, CLUSTER, remote, ranks, "deepep",
                                   DEEPEP_SMS)
    assert d.network_bytes <= 1000 * k * 100 * (ep - 8) / ep * (1 + 1e-12)
    assert flex_dispatch_time(1000, 100, experts, k, place, CLUSTER).time_s == d.time_s


def test_flex_load_scales_the_tokens():
    """At the busiest expert's load 1.5 the kernels carry 1.5 T_n rows."""
    _, ops = ops_of(Flex(False), load=1.5)
    assert ops["fwd.moe.dispatch"].tokens == 256 * 1.5


def test_allgather_gathers_the_expert_tp_x_ep_tokens():
    """etp 2 x ep 2: G = T_n etp ep = 256 x 4 rows of h all-gathered and reduce-scattered on
    the expert-TP x EP group; the experts' rows as the all-to-all slot's (m_e = ceil(T_n k etp
    ep / E)); the group is etp ep consecutive ranks."""
    d, ops = ops_of(AllGather(False), ep=2, etp=2)
    assert routed_per_expert(d) == math.ceil(256 * 2 * 2 * 2 / 8)
    ag, rs = ops["fwd.moe.all-gather"], ops["fwd.moe.reduce-scatter"]
    assert (ag.group, ag.nbytes) == (rs.group, rs.nbytes) == (TPEP, 256 * 4 * 256 * 2)
    g = slot_subgroups(AllGather(False), fold(Parallelism(tp=2, dp=4), 2, 2, 8))[TPEP]
    assert (g.size, g.stride) == (4, 1)


def test_dispatchers_share_the_experts_work():
    """The routed experts' GEMMs are the same whichever dispatcher moves the tokens."""
    gemms = []
    for moe in (Alltoall(False, True, False), Flex(False), AllGather(False)):
        _, ops = ops_of(moe)
        gemms.append({n: op for n, op in ops.items() if n.startswith(("fwd.experts.fc",
                                                                       "bwd.experts.fc"))})
    assert gemms[0] == gemms[1] == gemms[2]


def test_ep1_is_the_all_gather_slot_for_every_dispatcher():
    """ep 1 with expert-TP = tp: Megatron-core's every dispatcher runs the local experts; tpsim
    the EP-1 slot."""
    assert {slot_of(d, "deepep", False, 1, 2, 2) for d in ("alltoall", "allgather", "flex")} \
        == {None}


@pytest.mark.parametrize("kw, flag", [
    (dict(moe_dispatcher="flex", ep=2, expert_tp=2), "--expert-tp"),
    (dict(moe_dispatcher="flex", ep=1, expert_tp=1), "--ep"),
    (dict(moe_flex_backend="hybridep", ep=2), "--moe-flex-backend"),
    (dict(moe_routing="round-robin", ep=2), "--moe-routing"),
    (dict(moe_dispatcher="deepep"), "--moe-dispatcher"),
])
def test_refusals_name_their_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict("mixtral-8x7b", "dgx-h100", tp=2, sequence_parallel=True, dp=4,
                      seq_len=1024, **kw)


def test_dense_models_refuse_a_dispatcher():
    """A dense model has no MoE layer: a dispatcher other than the default is refused naming
    its flag (tpsim.spec.moe_checks.check_dense), not ignored."""
    kw = dict(tp=2, dp=4, seq_len=1024)
    tpsim.predict("gpt3-125m", "dgx-h100", moe_dispatcher="alltoall", **kw)
    for d in ("allgather", "flex"):
        with pytest.raises(ConfigError, match="^--moe-dispatcher: expected alltoall"):
            tpsim.predict("gpt3-125m", "dgx-h100", moe_dispatcher=d, **kw)


def test_the_dispatcher_changes_only_the_moe_layers():
    """Qwen3-30B-A3B, EP 16 over two nodes: flex changes the MoE layer's time, not the dense
    parts (embedding, output layer) nor the weights held."""
    kw = dict(tp=1, dp=16, ep=16, seq_len=1024, nodes=2)
    a = tpsim.predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", **kw)
    b = tpsim.predict("qwen3-30b-a3b", "dgx-h100-ndr-cluster", moe_dispatcher="flex", **kw)
    assert b.layer.total_s != a.layer.total_s
    assert (b.model.embedding_s, b.model.output_s) == (a.model.embedding_s, a.model.output_s)
    assert b.memory.weights_bytes == a.memory.weights_bytes


def test_cli_takes_megatrons_names_and_refuses_in_one_line():
    base = [sys.executable, "-m", "tpsim", "predict", "--model", "mixtral-8x7b", "--tp", "2",
            "--sequence-parallel", "--dp", "4", "--ep", "4", "--expert-tp", "1"]
    ok = subprocess.run(base + ["--moe-token-dispatcher-type", "flex",
                                "--moe-flex-dispatcher-backend", "hybridep"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(base + ["--moe-flex-backend", "hybridep"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--moe-flex-backend" in bad.stderr
    assert Layout(moe_dispatcher="flex", moe_flex_backend="hybridep").moe_flex_backend == \
        "hybridep"


FLEX_SYNCS = [("fwd.router.topk", "fwd.moe.dispatch")]


@pytest.mark.parametrize("moe, syncs", [
    (Alltoall(False, True, False), [("fwd.moe.counts", "fwd.moe.dispatch")]),
    (Alltoall(True, True, True), [("fwd.moe.counts", "fwd.moe.dispatch")]),
    (Flex(False, "deepep"), FLEX_SYNCS),
    (Flex(True, "hybridep"), [("fwd.moe.routing.all-gather", "fwd.moe.dispatch")]),
    (AllGather(False, True), [("fwd.moe.all-gather", "fwd.moe.sort")]),
])
def test_each_dispatcher_syncs_in_the_forward(moe, syncs):
    """Megatron-core's host reads the tokens per expert in the forward: the all-to-all
    dispatcher before its all-to-all (the counts it gathered over EP), DeepEP's dispatch after
    the received counts, HybridEP's after the routing maps it gathered over EP (DeepEP's experts' reading of the dispatched tensors
    is not priced as a wait: :mod:`tpsim.layer.moe_host`), the
    all-gather dispatcher before the permutation (the gathered map); the backward reuses the
    counts (no sync)."""
    tpl = layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True, moe=moe)
    assert [(tpl.names[a], tpl.names[b]) for a, b in tpl.syncs] == syncs


def test_a_sync_moves_with_its_dropped_collective():
    """At EP 1 the all-to-all dispatcher's all-to-alls are no ops: the host's wait moves to
    the op issued after the dropped dispatch."""
    tpl = layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=Alltoall(False, False, False))
    (a, b), = tpl.syncs
    assert tpl.names[a] == "fwd.router.topk" and tpl.nodes[b].phase == "forward"
    assert "fwd.moe.dispatch" not in tpl.names


def test_routing_reaches_every_flex_kernel():
    """--moe-routing reaches the slot (slot_of) and each of its four dispatch and combine
    kernels; the alltoall slot, which sends a token once per expert, has no such field."""
    moe = slot_of("flex", "deepep", False, 4, 1, 1, routing="round-robin")
    assert moe == Flex(False, routing="round-robin")
    _, ops = ops_of(moe)
    kernels = [op for op in ops.values() if isinstance(op, Dispatch)]
    assert len(kernels) == 4 and {op.routing for op in kernels} == {"round-robin"}
    with pytest.raises(ConfigError, match="--moe-routing"):
        Layout(moe_routing="random")
