"""The MoE slot with expert parallelism (tpsim.layer.moe_ep, Megatron-core's all-to-all
dispatcher) against closed forms: the all-to-all's bytes, the grouped GEMMs' rows, the
imbalance and capacity factors, and the all-gather slot it replaces at EP 1."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology
from tpsim.cost.all_to_all import all_to_all_time
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import routed_per_expert
from tpsim.layer.moe_ep import Alltoall, alltoall_dims, expert_load
from tpsim.sim.price import Pricing
from tpsim.sim.simulate import simulate
from tpsim.spec.folding import fold
from tpsim.spec.model import ModelConfig
from tpsim.spec.parallel import Parallelism

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 8,
       "experts_per_token": 2, "expert_ffn_hidden": 128}


def toy(**kw) -> ModelConfig:
    return from_mapping(ModelConfig, {**TOY, **kw}, "<test>")


def slot(model, tp=1, ep=2, etp=1, sp=False, b=2, s=128, load=1.0, dtype="bf16"):
    d = alltoall_dims(model, tp, ep, etp, b, s, dtype, sp, load)
    tpl = layer_template(tp > 1, sp, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=Alltoall(bool(model.shared_experts), ep > 1, etp > 1),
                         fp8=d.quantizer)
    return d, tpl, dict(zip(tpl.names, tpl.ops(d)))


def test_all_to_all_moves_t_k_h_bytes_per_rank():
    """T = 256 tokens, top-2, h 256, bf16: each all-to-all of a rank's tokens is S = T k h 2 =
    262,144 bytes (its own slice included), S (ep - 1)/ep of them to other ranks; four per
    layer (dispatch, combine, and both again in backward), all on the ep group; the
    probabilities' own all-to-all beside the dispatch's, T k 2 bytes, forward and backward."""
    d, _, ops = slot(toy(), ep=4)
    a2a = {n: op for n, op in ops.items() if getattr(op, "op", "") == "all-to-all"}
    probs = {n for n in a2a if n.endswith(".probs")}
    assert sorted(probs) == ["bwd.moe.dispatch.probs", "fwd.moe.dispatch.probs"]
    assert sorted(set(a2a) - probs) == ["bwd.moe.combine", "bwd.moe.dispatch",
                                        "fwd.moe.combine", "fwd.moe.dispatch"]
    assert {a2a[n].nbytes for n in set(a2a) - probs} == {256 * 2 * 256 * 2}
    assert {a2a[n].nbytes for n in probs} == {256 * 2 * 2}
    assert {op.group for op in a2a.values()} == {"ep"}


def test_all_to_all_inside_a_node_prices_the_bytes_that_leave_the_rank():
    """On one DGX H100 an EP group of 8 is one NVLink level: transfer = S (n - 1)/n over the
    GPU's own links at the ring's efficiency."""
    topo = load_topology("dgx-h100")
    group = fold(Parallelism(tp=1, dp=8), 8, 1, 8).group("ep")
    place = topo.place(group)
    assert not place.crosses_nodes
    S = 4096 * 2 * 4096 * 2
    cost = all_to_all_time(S, place, topo)
    span = place.spans[0]
    rate = span.unit_bandwidth_Bps * span.level.efficiency.ring / span.devices_per_unit
    assert cost.transfer_s == pytest.approx(S * 7 / 8 / rate, rel=1e-12)


def test_ep_group_across_nodes_is_nic_bound():
    """EP 16 with etp 1 spans two DGX nodes: the inter-node share (n - g)/n of S crosses each
    GPU's own NIC (one per GPU), slower than NVLink, so it sets the transfer time."""
    topo = load_topology("dgx-h100-ndr-cluster")
    place = topo.place(fold(Parallelism(tp=1, dp=16), 16, 1, 16).group("ep"))
    assert place.crosses_nodes
    net = place.inter_node[0]
    S = 1e8
    rate = net.unit_bandwidth_Bps * net.level.efficiency.ring / net.devices_per_unit
    assert all_to_all_time(S, place, topo).transfer_s == pytest.approx(S * 8 / 16 / rate)


def test_grouped_gemms_run_the_local_experts_on_their_tokens():
    """ep 4 of 8 experts: E_l = 2 local experts, each m_e = T k ep / E = 256 * 2 * 4 / 8 = 256
    tokens (the balanced share of the 4 ranks' tokens); the routed FLOPs over the EP group
    equal the EP-1 slot's on one rank: 4 ranks x 2 experts x 256 = 8 x 64 x 4 rows."""
    d, _, ops = slot(toy(), ep=4)
    assert routed_per_expert(d) == 256
    fc1 = ops["fwd.experts.fc1"]
    assert (fc1.m, fc1.n, fc1.k, fc1.batch) == (256, 2 * 128, 256, 2)
    assert ops["fwd.experts.fc2"].flops * 4 == 2 * 8 * 64 * 4 * 256 * 128


def test_fp8_grouped_gemms_cast_their_sorted_rows():
    """Under FP8, ep 4: the R = 2 * 256 = 512 sorted rows are cast before fc1 (h = 256 wide) and
    act's output before fc2 (f_e = 128): bf16 read, fp8 and its transpose written, 4 bytes an
    element; fc1 runs after its cast, one GEMM per expert over 4 streams."""
    _, tpl, ops = slot(toy(), ep=4, dtype="fp8")
    assert ops["fwd.experts.fc1.cast"].bytes == 512 * 256 * 4
    assert ops["fwd.experts.fc2.cast"].bytes == 512 * 128 * 4
    names = list(ops)
    assert names.index("fwd.moe.sort") < names.index("fwd.experts.fc1.cast") \
        < names.index("fwd.experts.fc1")
    assert ops["fwd.experts.fc1"].streams == ops["bwd.experts.fc1.wgrad"].streams == 4


def test_expert_tp_gathers_its_peers_tokens_and_splits_the_width():
    """etp 2: the received rows of both ETP ranks gathered (R = m_e E_l rows), each expert
    f_e / 2 wide; the all-gather and reduce-scatter carry R h bytes on the etp group."""
    d, _, ops = slot(toy(), ep=2, etp=2)
    m_e = math.ceil(256 * 2 * 2 * 2 / 8)
    assert routed_per_expert(d) == m_e and d.fe == 64
    ag = ops["fwd.moe.etp.all-gather"]
    assert (ag.group, ag.nbytes) == ("etp", m_e * 4 * 256 * 2)
    assert ops["fwd.moe.etp.reduce-scatter"].nbytes == ag.nbytes


@settings(max_examples=25, deadline=None)
@given(imbalance=st.floats(1.0, 4.0), capacity=st.one_of(st.none(), st.floats(0.5, 3.0)))
def test_load_scales_rows_and_bytes(imbalance, capacity):
    """The busiest expert's load = imbalance, capped by the capacity factor: its tokens
    ceil(T k ep load / E) and the all-to-all's ceil(T k load) rows."""
    load = expert_load(imbalance, capacity)
    assert load == (imbalance if capacity is None else min(imbalance, capacity))
    d, _, ops = slot(toy(), ep=4, load=load)
    assert routed_per_expert(d) == max(1, math.ceil(256 * 2 * 4 * load / 8))
    assert ops["fwd.moe.dispatch"].nbytes == math.ceil(256 * 2 * load) * 256 * 2


def test_shared_experts_run_beside_the_dispatch():
    """With shared experts the slot issues their GEMMs after the dispatch's all-to-all and
    before anything that waits for it: they overlap it (start before it ends) when the host
    issues them in no time (here the toy's all-to-all is shorter than the host's issue of the
    ops after its sync)."""
    model = toy(shared_experts=1, shared_expert_ffn_hidden=256)
    d, tpl, _ = slot(model, ep=4)
    topo = load_topology("dgx-h100")
    sim = simulate(tpl, d, Pricing(topo, fold(Parallelism(tp=1, dp=8), 4, 1, 8)),
                   host_dispatch_s=0.0)
    tl = sim.timeline
    assert tl.start_s["fwd.shared.fc1"] < tl.end_s["fwd.moe.dispatch"]


def test_one_rank_groups_leave_no_collectives():
    """ep 1, etp 1 (tp 1): the all-to-all dispatcher runs everything locally: no collective."""
    _, _, ops = slot(toy(), ep=1, etp=1)
    assert not [op for op in ops.values() if op.kind == "collective"]
