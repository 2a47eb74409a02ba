"""The routed experts' own optimizer all-reduces its gradient norm on the expert tp-ep-pp group
without the distributed optimizer (Megatron-core's chained expert optimizer), and adds nothing
with it (one shared group, which the dense reduction spans)."""
from __future__ import annotations

import pytest

from tpsim.spec.folding import Folded
from tpsim.spec.model import load_model, with_overrides
from tpsim.spec.parallel import Parallelism
from tpsim.training import terms
from tpsim.training.expert_norm import expert_norm_group
from tpsim.training.predict import predict
from tpsim.training.step import build_step


def reductions(par, distributed_optimizer, experts):
    """grad_norm_allreduce_s with every collective priced 1 s: (seconds, the collectives)."""
    calls = []

    def price(op, nbytes, group):
        calls.append((op, nbytes, group))
        return 1.0
    return terms.grad_norm_allreduce_s(par, distributed_optimizer, price, experts), calls


def test_without_the_distributed_optimizer_the_experts_reduce_on_their_own_group():
    """TP 1, DP 8, EP 8: the dense norm has no model-parallel rank to reduce with, the experts'
    reduces over the 8 EP ranks (stride etp = 1). TP 2, PP 2, DP 4, EP 8: both on the outermost
    group, pp (stride tp dp = 8), the dense one first."""
    f = Folded(Parallelism(dp=8), ep=8, etp=1)
    assert expert_norm_group(f, False) == f.group("ep")
    assert (f.group("ep").size, f.group("ep").stride) == (8, 1)
    assert reductions(f.parallelism, False, f) == (1.0, [("all-reduce", 4, f.group("ep"))])
    par = Parallelism(tp=2, pp=2, dp=4)
    f = Folded(par, ep=8, etp=1)
    assert expert_norm_group(f, False) == par.group("pp") and par.stride("pp") == 8
    assert reductions(par, False, f) == (2.0, [("all-reduce", 4, par.group("pp"))] * 2)


def test_no_second_reduction_where_megatron_has_none():
    """The distributed optimizer (one shared group), experts in the dense groups (ep 1, expert
    TP = tp: one optimizer), no experts, or a lone expert rank: no expert reduction."""
    par = Parallelism(tp=2, dp=4)
    assert expert_norm_group(Folded(par, ep=8, etp=1), True) is None
    assert expert_norm_group(Folded(par, ep=1, etp=2), False) is None
    assert expert_norm_group(None, False) is None
    assert expert_norm_group(Folded(par, ep=1, etp=1), False) is None
    assert reductions(par, True, Folded(par, ep=8, etp=1)) == \
        (1.0, [("all-reduce", 4, terms.dp_group(par, 0))])


def test_with_the_distributed_optimizer_the_dense_group_spans_expert_dp_at_dp_1():
    """TP 8, EP 2, expert TP 1, DP 1: expert DP 4. Megatron-core's dense and expert distributed
    optimizers share one group (the job), reduced once: priced on the TP group, whose 8 ranks
    hold the 4 expert-DP ranks (stride 2)."""
    f = Folded(Parallelism(tp=8), ep=2, etp=1)
    group = terms.grad_norm_group(f.parallelism, True)
    assert f.edp == 4 and group == f.parallelism.group("tp")
    assert set(f.group("edp").ranks) <= set(group.ranks)
    assert expert_norm_group(f, True) is None


def test_the_step_prices_the_experts_norm_reduction():
    """Mixtral (2 layers) at TP 1, DP 8, EP 8 on one DGX H100, no distributed optimizer: the
    step's gradient-norm all-reduce is the one fp32 all-reduced over the 8 EP ranks."""
    model = with_overrides(load_model("mixtral-8x7b"), layers=2)
    p = predict(model, "dgx-h100", seq_len=1024, global_batch=8, tp=1, dp=8, ep=8,
                expert_tp=1)
    setup, topo = p.step_run._setup, p.step_run._topo
    g = build_step(setup, topo)
    want = terms.collective_price(topo)("all-reduce", 4, setup.experts.group("ep"))
    assert want > 0
    assert g.seconds[g.names.index("grad-norm.all-reduce")] == pytest.approx(want, rel=1e-12)
