"""Context parallelism beside experts (Megatron-core's MoE parallel folding with CP): the
attention as CP's, the MoE layer on the rank's seq_len / cp tokens, its all-to-all on the EP
group folded out of a stage's tp x cp x dp ranks, the experts' gradients over expert DP."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

import tpsim
from tpsim.spec.folding import fold
from tpsim.spec.model import load_model
from tpsim.spec.model_params import expert_params
from tpsim.spec.parallel import Parallelism
from tpsim.training import terms


def megatron_groups(sizes: dict, order: str, names: set) -> list[list[int]]:
    """Megatron-core's RankGenerator groups (parallel_state.generate_masked_orthogonal_rank_
    groups): the ranks that differ only in the ``names`` dimensions, each group sorted."""
    dims = order.split("-")
    world = math.prod(sizes[d] for d in dims)
    stride = {d: math.prod(sizes[e] for e in dims[:i]) for i, d in enumerate(dims)}
    groups = {}
    for rank in range(world):
        key = tuple((rank // stride[d]) % sizes[d] for d in dims if d not in names)
        groups.setdefault(key, []).append(rank)
    return list(groups.values())


FOLDS = st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]),
                  st.sampled_from([1, 2, 4]), st.sampled_from([1, 2]),
                  st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]))


@given(FOLDS)
@settings(max_examples=60, deadline=None)
def test_folded_groups_are_megatron_cores_with_cp(dims):
    """tp x cp x dp x pp ranks folded as etp x ep x edp x pp: etp ep edp = tp cp dp per stage,
    and every etp, ep and edp group (and the dense cp group) is the one Megatron-core's expert
    rank generator (order tp-ep-dp-pp, cp 1) or decoder generator (tp-cp-ep-dp-pp) makes."""
    tp, cp, dp, pp, ep, etp = dims
    par = Parallelism(tp=tp, cp=cp, dp=dp, pp=pp)
    if (tp * cp * dp) % (ep * etp):
        return
    f = fold(par, ep, etp, 8)
    assert f.etp * f.ep * f.edp == tp * cp * dp == f.stage_ranks
    expert = dict(tp=etp, ep=ep, dp=f.edp, pp=pp)
    for name, dim in (("etp", "tp"), ("ep", "ep"), ("edp", "dp")):
        for ranks in megatron_groups(expert, "tp-ep-dp-pp", {dim}):
            assert list(f.group(name, ranks[0]).ranks) == ranks
            assert f.group(name).size == len(ranks)
    dense = dict(tp=tp, cp=cp, ep=1, dp=dp, pp=pp)
    for ranks in megatron_groups(dense, "tp-cp-ep-dp-pp", {"cp"}):
        assert list(f.group("cp", ranks[0]).ranks) == ranks


def test_megatron_readme_folds_cp_into_ep():
    """Megatron-core's MoE README ("MoE Parallel Folding"): TP 4 x CP 2 x DP 8 x PP 4 folds as
    ETP 1 x EP 64 x EDP 1; CP 8 with EP 8 needs only 8 GPUs."""
    f = fold(Parallelism(tp=4, cp=2, dp=8, pp=4), 64, 1, 64)
    assert (f.etp, f.ep, f.edp, f.world) == (1, 64, 1, 256)
    g = fold(Parallelism(tp=1, cp=8), 8, 1, 8)
    assert (g.edp, g.world) == (1, 8)


RUN = dict(tp=2, sequence_parallel=True, dp=2, ep=8, expert_tp=1, seq_len=8192,
           global_batch=16, micro_batch=1)


@pytest.fixture(scope="module")
def cp2():
    return tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", cp=2, **RUN)


def test_cp_beside_ep_prices_both_groups(cp2):
    """The MoE layer's rows: the attention's CP ring (send-recv on cp) and the experts'
    all-to-alls on ep; the dispatch moves ceil(b s/cp/tp k) h bytes per rank, the ring
    2 b (s/cp) kv bytes a step (K and V)."""
    m, p = load_model("mixtral-8x7b"), cp2
    sizes = {(c.group, c.op, c.phase): c.bytes for c in p.collectives}
    tokens = RUN["seq_len"] // 2 // RUN["tp"]
    a2a = [c.bytes for c in p.collectives if (c.group, c.op, c.phase) == ("ep", "all-to-all",
                                                                         "forward")]
    # the tokens' and the probabilities' (k values a token, bf16: tpsim.layer.moe_host)
    assert sorted(a2a) == [math.ceil(tokens * m.experts_per_token) * n * 2
                           for n in (1, m.hidden)]
    kv = m.kv_heads_per_rank(RUN["tp"]) * m.head_dim
    assert sizes["cp", "send-recv", "forward"] == 2 * (RUN["seq_len"] // 2) * kv * 2
    assert (p.inputs.cp, p.inputs.ep, p.inputs.expert_dp, p.inputs.gpus) == (2, 8, 1, 8)


def test_cp_halves_the_moe_layers_tokens(cp2):
    """CP 2 on twice the GPUs: each rank routes half the tokens, so the dispatch is half of
    CP 1's (same ep, both folding 8 ranks as ep 8, edp 1), and so are the activations."""
    one = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", cp=1, **{**RUN, "dp": 4})
    a, b = ({c.op: c.bytes for c in p.collectives if c.group == "ep"}["all-to-all"]
            for p in (one, cp2))
    assert a == 2 * b
    assert (one.inputs.expert_dp, cp2.inputs.expert_dp) == (1, 1)
    assert cp2.memory.activations_bytes == pytest.approx(one.memory.activations_bytes / 2, rel=1e-9)


def test_expert_gradients_reduce_over_expert_dp_with_cp():
    """tp 2 x cp 2 x dp 2 folded as etp 1 x ep 4 x edp 2: the distributed optimizer splits the
    dense parameters over dp x cp = 4 and the experts' over edp = 2:
    shares = n / ((n - X) / 4 + X / 2)."""
    m = load_model("mixtral-8x7b")
    par = Parallelism(tp=2, cp=2, dp=2)
    f = fold(par, 4, 1, m.experts)
    assert f.edp == 2 and terms.expert_dp_group(f, 0).stride == 4
    n = m.layers * 1000 + 10 ** 9
    x = m.layers * expert_params(m, 4, 1)
    share = terms.optimizer_shares(m, 2, terms.grad_ranks(par), n, m.layers, f, True)
    assert share == pytest.approx(n / ((n - x) / 4 + x / 2), rel=1e-12)
    p = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", tp=2, cp=2, dp=2, ep=4,
                      expert_tp=1, sequence_parallel=True, seq_len=8192,
                      distributed_optimizer=True, global_batch=4)
    q = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", tp=2, cp=2, dp=2, ep=4,
                      expert_tp=1, sequence_parallel=True, seq_len=8192, global_batch=4)
    assert p.memory.optimizer_bytes < q.memory.optimizer_bytes


def test_ep_group_across_nodes_with_cp():
    """tp 4 x cp 4 on 16 H100s, ep 16 x etp 1: the EP group spans the two nodes."""
    p = tpsim.predict("mixtral-8x7b", "dgx-h100-ndr-cluster", tp=4, cp=4, ep=8, expert_tp=2,
                      sequence_parallel=True, seq_len=16384)
    assert (p.inputs.ep, p.inputs.expert_dp, p.inputs.ep_nodes) == (8, 1, 2)
