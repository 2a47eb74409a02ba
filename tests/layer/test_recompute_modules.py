"""Selective recomputation by Megatron-core's modules: what each re-runs (its rcp. copies), the
saved bytes it drops against closed forms of the layer's sizes, the time its copies add, and the
modules a model lacks refused."""
from __future__ import annotations

import json

import networkx as nx
import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.cluster.topology import load_topology
from tpsim.layer.moe import routed_rows
from tpsim.layer.recompute_modules import check_modules
from tpsim.sim.simulate import layer_times
from tpsim.spec.folding import fold
from tpsim.spec.model import load_model
from tpsim.spec.parallel import Parallelism
from tpsim.training.predict import predict, simulate_layer

TOPO = load_topology("dgx-h100")


def layer(model: str, modules=None, moe=False, tp=2, ep=4, dtype="bf16", seq=512):
    """One simulated layer of ``model`` (its MoE layer with ``moe``: ep experts' ranks, expert
    TP 1, the all-to-all slot), selective with ``modules`` (None: no recomputation)."""
    m = load_model(model)
    experts = fold(Parallelism(tp=tp, dp=ep), ep, 1, m.experts, m.name,
                   m.expert_ffn_hidden) if moe else None
    rc = "selective" if modules else "none"
    return simulate_layer(m, TOPO, tp, 1, seq, dtype, True, 0.0, "fused", rc, moe=moe,
                          experts=experts, modules=modules)[0]


def saved(sim) -> dict[str, float]:
    return {n.name: n.saved(sim.dims) for n in sim.template.nodes if n.saved is not None}


def dropped(base, sim) -> float:
    return sum(saved(base).values()) - sum(saved(sim).values())


def copies(sim) -> list[str]:
    return [n.name for n in sim.template.nodes if n.recomputes]


def copied_time(base, sim) -> float:
    """The forward time of the ops ``sim`` copies, in ``base``."""
    t = dict(zip(base.template.names, base.times))
    return sum(t[n.recomputes] for n in sim.template.nodes if n.recomputes)


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_mlp_drops_the_mlp_inputs_and_reruns_norm_and_mlp(dtype):
    """mlp (a dense layer): fc1's input, the activation's (2 T f for SwiGLU) and fc2's are
    no longer kept, the norm keeps its input (the checkpoint); the norm, fc1 (its SP
    all-gather), act and fc2 (its reduce-scatter) re-run."""
    base, sim = layer("llama3-8b", dtype=dtype), layer("llama3-8b", ("mlp",), dtype=dtype)
    d = sim.dims
    kept = d.Tn * d.h * d.gemm_bpe + 2 * d.T * d.f * d.bpe + d.T * d.f * d.gemm_bpe
    assert dropped(base, sim) == pytest.approx(kept, rel=1e-12)
    assert saved(sim)["fwd.norm2"] == saved(base)["fwd.norm2"]
    assert {"rcp.norm2", "rcp.mlp_in.all-gather", "rcp.mlp_in", "rcp.act", "rcp.mlp_out",
            "rcp.mlp_out.reduce-scatter"} <= set(copies(sim))
    assert nx.is_directed_acyclic_graph(sim.digraph())


def test_time_grows_by_the_recomputed_ops_compute():
    """The copies run on the compute stream, one after another: the layer's compute time grows
    by exactly the copied compute ops' forward time."""
    for model, modules, moe in (("llama3-8b", ("mlp",), False),
                                ("deepseek-v3", ("moe_act", "layernorm"), True)):
        base, sim = layer(model, moe=moe), layer(model, modules, moe=moe)
        t = dict(zip(base.template.names, base.times))
        compute = sum(t[n.recomputes] for n in sim.template.nodes
                      if n.recomputes and n.stream == "compute")
        assert layer_times(sim).compute_s - layer_times(base).compute_s == \
            pytest.approx(compute, rel=1e-9)
        copied = sum(op.flops for n, op in zip(sim.template.nodes, sim.ops) if n.recomputes)
        assert layer_times(sim).flops == pytest.approx(layer_times(base).flops, rel=1e-12)
        assert layer_times(sim).hardware_flops - layer_times(sim).flops == \
            pytest.approx(copied, rel=1e-9)
    assert copied == 0      # the norms and the activation: memory-bound, no FLOPs


def test_layernorm_drops_exactly_the_norm_outputs():
    """layernorm on a DeepSeek-V3 MoE layer: the input norm's output (MLA's down projections
    keep it, T_n h) and the pre-MLP norm's (the router keeps it, T_n h) are dropped, both norms
    re-run; a dense layer of it recomputes only the MLA input norm (its MLP's norm is fused
    into LayerNormMLP)."""
    base, sim = layer("deepseek-v3", moe=True), layer("deepseek-v3", ("layernorm",), moe=True)
    d = sim.dims
    assert dropped(base, sim) == pytest.approx(2 * d.Tn * d.h * d.bpe, rel=1e-12)
    assert sorted(copies(sim)) == ["rcp.norm1", "rcp.norm2"]
    assert layer_times(sim).total_s > layer_times(base).total_s
    dense = layer("deepseek-v3", ("layernorm",))
    assert copies(dense) == ["rcp.norm1"]
    assert dropped(layer("deepseek-v3"), dense) == pytest.approx(d.Tn * d.h * d.bpe, rel=1e-12)


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_moe_act_drops_fc2s_input(dtype):
    """moe_act: fc2's input, R x f_e in its GEMM's dtype (FP8: the cast), is no longer kept;
    the activation (and under FP8 fc2's cast) re-run before fc2's weight gradient, which reads
    the copy."""
    base = layer("deepseek-v3", moe=True, dtype=dtype)
    sim = layer("deepseek-v3", ("moe_act",), moe=True, dtype=dtype)
    d = sim.dims
    assert dropped(base, sim) == pytest.approx(routed_rows(d) * d.fe * d.gemm_bpe, rel=1e-12)
    assert copies(sim) == ["rcp.experts.act", "rcp.experts.fc2.cast"][:1 + (dtype == "fp8")]
    g = sim.digraph()
    assert nx.has_path(g, "rcp.experts.act", "bwd.experts.fc2.wgrad")


def test_mla_up_proj_drops_q_k_v():
    """mla_up_proj: the attention's saved q, k, v (T H_r (2 (d_n + d_r) + d_v) elements) are
    dropped, the two up projections re-run before the attention's backward."""
    base, sim = layer("deepseek-v3"), layer("deepseek-v3", ("mla_up_proj",))
    d = sim.dims
    assert dropped(base, sim) == pytest.approx(
        d.T * d.heads * (2 * (d.dn + d.dr) + d.dv) * d.bpe, rel=1e-12)
    assert copies(sim) == ["rcp.q_up", "rcp.kv_up"]
    assert nx.has_path(sim.digraph(), "rcp.kv_up", "bwd.attn")


def test_moe_keeps_only_the_routers_input():
    """moe: of the slot only the router's input (the norm's output, T_n h) stays; every slot
    op re-runs, the all-to-alls included; moe_act and shared_experts beside it add nothing."""
    base, sim = layer("deepseek-v3", moe=True), layer("deepseek-v3", ("moe",), moe=True)
    d = sim.dims
    slot = [n for n, b in saved(base).items()
            if n.startswith(("fwd.router", "fwd.moe.", "fwd.experts.", "fwd.shared."))]
    assert dropped(base, sim) == pytest.approx(
        sum(saved(base)[n] for n in slot) - d.Tn * d.h * d.bpe, rel=1e-12)
    assert {"rcp.moe.dispatch", "rcp.moe.combine", "rcp.experts.fc1"} <= set(copies(sim))
    both = layer("deepseek-v3", ("moe", "moe_act", "shared_experts"), moe=True)
    assert copies(both) == copies(sim) and saved(both) == saved(sim)


def test_shared_experts_drop_their_own_activations():
    base = layer("deepseek-v3", moe=True)
    sim = layer("deepseek-v3", ("shared_experts",), moe=True)
    d = sim.dims
    assert dropped(base, sim) == pytest.approx(3 * d.T * d.fs * d.bpe, rel=1e-12)   # act, fc2
    assert "rcp.shared.fc1" in copies(sim) and "rcp.shared.fc2" in copies(sim)


def test_core_attn_is_the_default_selective():
    """core_attn is Megatron's default: the same layer as plain selective (unfused: the
    attention core re-run); with mlp beside it, both regions."""
    m = load_model("llama3-8b")

    def unfused(modules):
        return simulate_layer(m, TOPO, 2, 1, 512, "bf16", True, 0.1, "unfused", "selective",
                              modules=modules)[0]
    plain, core, both = unfused(None), unfused(("core_attn",)), unfused(("core_attn", "mlp"))
    assert copies(plain) == copies(core) and saved(plain) == saved(core)
    assert copies(plain)[:3] == ["rcp.attn.repeat_kv.k", "rcp.attn.repeat_kv.v", "rcp.attn.scores"]
    assert set(copies(both)) == set(copies(plain)) | set(copies(layer("llama3-8b", ("mlp",))))


@pytest.mark.parametrize("model, module", [("llama3-8b", "moe_act"), ("llama3-8b", "moe"),
                                           ("llama3-8b", "mla_up_proj"),
                                           ("llama3-8b", "layernorm"),
                                           ("qwen3-30b-a3b", "shared_experts"),
                                           ("qwen3-30b-a3b", "mlp")])
def test_a_module_the_model_lacks_is_refused(model, module):
    with pytest.raises(ConfigError, match="--recompute-modules"):
        check_modules(load_model(model), (module,))
    with pytest.raises(ConfigError, match=module):
        predict(model, "dgx-h100", tp=8, recompute="selective", recompute_modules=(module,),
                sequence_parallel=True)


def test_cli_takes_names_apart_or_as_a_comma_list(capsys):
    args = ["predict", "--model", "deepseek-v3", "--tp", "8", "--sequence-parallel", "--seq",
            "512", "--recompute", "selective", "--json"]
    assert main(args + ["--recompute-modules", "mlp", "moe_act,layernorm"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"]["recompute_modules"] == ["mlp", "moe_act", "layernorm"]
    for bad, word in ((["--recompute-modules", "mlpx"], "invalid choice"),
                      (["--recompute-modules", "mlp,mlp"], "distinct")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err.strip()
        assert word in err and "--recompute-modules" in err and len(err.splitlines()) == 1
