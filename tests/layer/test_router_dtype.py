"""The MoE router's own dtype (tpsim.layer.router_dtype) against closed forms: the time it adds
to one layer, the casts' bytes, kernels and host calls, what each release saves, and where the
setting is refused or changes nothing."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError, TpsimError
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time, gemm_time
from tpsim.spec.layout import Layout
from tpsim.spec.model import load_model
from tpsim.training.predict import predict, simulate_layer

MODEL = load_model("qwen3-30b-a3b")        # h 2048, E 128, top 8
T, H, E = 4096, MODEL.hidden, MODEL.experts
B = 2                                      # bf16 activations


def _layer(router, dtype="bf16", topology="dgx-h100", moe=True):
    sim, pricing = simulate_layer(MODEL, load_topology(topology), 1, 1, T, dtype, False, 0.0,
                                  "fused", moe=moe, router=router)
    return sim, pricing.topology.device


def _compute(sim) -> float:
    return sum(t for t, op in zip(sim.times, sim.ops) if op.stream == "compute")


def _gemms(dev, dtype):
    """The router's dgrad T x h x E and wgrad h x E x T (into fp32) in ``dtype``."""
    return gemm_time(T, H, E, dev, dtype) + gemm_time(H, E, T, dev, dtype, accumulate=True)


def test_fp32_gating_function_adds_the_closed_form_time():
    """Megatron-core 0.13's Function, fp32: the forward unchanged; dgrad and wgrad at TF32 for
    bf16, and four casts of 2 (T + E) h (B + 4) bytes, 4 kernels."""
    base, dev = _layer(None)
    fp32, _ = _layer(("fp32", True))
    cast = elementwise_time(2 * (T + E) * H * (B + 4), dev, kernels=4)
    added = _gemms(dev, "tf32") - _gemms(dev, "bf16") + cast
    assert _compute(fp32) - _compute(base) == pytest.approx(added, rel=1e-9)
    assert added > 0


def test_fp32_f_linear_adds_the_forward_too():
    """Megatron-core 0.12's F.linear: the forward's two casts and TF32 GEMM T x E x h, the
    backward's TF32 GEMMs and autograd's two casts, (T + E) h (B + 4) bytes each way."""
    base, dev = _layer(None)
    old, _ = _layer(("fp32", False))
    cast = elementwise_time((T + E) * H * (B + 4), dev, kernels=2)
    added = gemm_time(T, E, H, dev, "tf32") - gemm_time(T, E, H, dev, "bf16") + \
        _gemms(dev, "tf32") - _gemms(dev, "bf16") + 2 * cast
    assert _compute(old) - _compute(base) == pytest.approx(added, rel=1e-9)


def test_fp64_runs_at_the_devices_fp64_rate_with_its_casts():
    sim, dev = _layer(("fp64", True))
    ops = dict(zip(sim.template.names, sim.ops))
    assert {ops[n].dtype for n in ("fwd.router", "bwd.router.dgrad", "bwd.router.wgrad")} == \
        {"fp64"}
    assert ops["fwd.router.cast"].nbytes == (T + E) * H * (B + 8)
    assert ops["bwd.router.cast"].nbytes == 2 * (T + E) * H * (B + 8)
    assert dev.peak("fp64") == pytest.approx(dev.peak_flops["fp64"])


def test_host_calls_and_saved_bytes_by_release():
    """The Function's casts are bare calls in Python (priced as launches), F.linear's backward
    casts autograd's C++ nodes; F.linear keeps the fp32 copies, the Function the bf16 input."""
    new, _ = _layer(("fp32", True))
    old, _ = _layer(("fp32", False))
    nodes = {n.name: n for n in new.template.nodes}
    assert "fwd.router.cast" not in nodes
    cast = nodes["bwd.router.cast"]
    assert (cast.host_ops, cast.loop_ops(None), cast.launches) == (0, 4, None)
    assert nodes["fwd.router"].saved(new.dims) == T * H * B
    nodes = {n.name: n for n in old.template.nodes}
    assert (nodes["fwd.router.cast"].host_ops, nodes["fwd.router.cast"].loop_ops(None)) == (0, 2)
    assert nodes["bwd.router.cast"].launches(None) == 2
    assert nodes["fwd.router"].saved is None
    assert nodes["fwd.router.cast"].saved(old.dims) == (T + E) * H * 4


def test_changes_only_moe_layers():
    """A dense layer of the same model, and fp32 activations, are the same with the setting."""
    dense, _ = _layer(None, moe=False)
    assert _layer(("fp32", False), moe=False)[0].times == dense.times
    fp32_run, _ = _layer(None, dtype="fp32")
    assert _layer(("fp64", True), dtype="fp32")[0].times != fp32_run.times
    assert _layer(("fp32", True), dtype="fp32")[0].times == fp32_run.times


def test_predict_prices_it_on_moe_models_and_refuses_it_on_dense_ones():
    kw = dict(tp=1, dp=8, ep=8, seq_len=T)
    base = predict(MODEL, "dgx-h100", **kw).step.time_s
    assert predict(MODEL, "dgx-h100", moe_router_dtype="fp32", **kw).step.time_s > base
    with pytest.raises(TpsimError, match="--moe-router-dtype.*dense model"):
        predict("gpt3", "dgx-h100", tp=8, moe_router_dtype="fp32")


def test_bad_values_are_refused():
    assert (Layout().moe_router_dtype, Layout().moe_router_gating_linear) == ("none", True)
    with pytest.raises(ConfigError, match="--moe-router-dtype"):
        Layout(moe_router_dtype="bf16")
    with pytest.raises(ConfigError, match="--no-moe-router-gating-linear"):
        Layout(moe_router_gating_linear=False)
    with pytest.raises(ConfigError, match="--moe-router-dtype.*fp64"):
        _layer(("fp64", True), topology="dgx-b200")
