"""tpsim's MoE layer alone against Megatron-LM's MoE layer benchmark on H100, used in no fit.

Megatron-LM (NVIDIA/Megatron-LM, ``tests/functional_tests/test_cases/common/moe_perf``:
``test_cases.py`` and ``baseline.json``, commit cf39a4ddc, 2025-12-16) times one ``MoELayer``
(router, token dispatcher, grouped experts, shared expert) forward and backward on 8 H100 of a
node, EP 8, TP 1, sequence 4096, micro-batch 1, BF16 input, the router force-balanced
(``moe_router_force_load_balancing``), the permutation and router fusions on, with CUDA events
around the forward and around the backward (a long GEMM queued first "to hide the router launch
overhead"), the mean of the iterations after warm-up. Two proxies:

* Mixtral proxy: hidden 4096, expert FFN 14336 (SwiGLU), 8 experts, top 2;
* DeepSeek proxy: hidden 7168, expert FFN 2048, 32 experts, top 8, one shared expert of 2048,
  sigmoid router with 8 groups, top 4 groups (tpsim: a balanced router, no group limit);

(``test_cases.py``: the Mixtral proxy's auxiliary loss ``aux_loss``, the DeepSeek proxy's
``seq_aux_loss``, whose host work tpsim counts: :mod:`tpsim.layer.moe_host`; both with
``MoEModelConfig.moe_router_dtype = "fp32"``, run by Megatron-core's
``RouterGatingLinearFunction``: ``--moe-router-dtype fp32``, :mod:`tpsim.layer.router_dtype`,
0.11-0.19 ms more backward);

each with the all-to-all dispatcher and the flex dispatcher's DeepEP and HybridEP backends, in
BF16 and in FP8 (``e4m3``, blockwise scaling, ``fp8_recipe="blockwise"`` in its
``__main__.py``: ``--fp8-recipe blockwise``; tpsim prices its FP8 GEMMs and casts, not the
block scales). tpsim's figure is the MoE slot of its layer (:mod:`tpsim.layer.moe_ep`,
:mod:`tpsim.layer.moe_flex`): from the router's start to the end of the slot's last forward op,
and from the start of the layer's backward to the end of the router's backward, on the
simulated timeline of one GPU of a DGX H100 (``dgx-h100``), so host waits and exposed
communication count as the events see them.

What FP8 costs one dispatcher more than HybridEP, read off the table without a model: for the
all-to-all and DeepEP rows, (FP8 time - FP8 HybridEP time) - (BF16 time - BF16 HybridEP time).
HybridEP pads each expert's rows inside its dispatch; the others' rows are copied by
Transformer Engine's Fp8Padding and Fp8Unpadding (:mod:`tpsim.layer.moe_padding`), and what
else FP8 adds (the casts, the faster GEMMs) is common to the three. Published: 0.10-0.14 ms
forward and backward on the Mixtral proxy, 0.60-0.75 ms on the DeepSeek proxy, whose routed
rows are 4.4 times the Mixtral proxy's bytes; the script prints tpsim's beside them.

    python bench/moe_layer_published.py
"""
from __future__ import annotations

import dataclasses

from tpsim.spec.model import load_model
from tpsim.training.predict import predict

TOPOLOGY = "dgx-h100"
BASELINE = {   # (forward ms, backward ms) of baseline.json
    "mixtral_a2a_tp1ep8_bf16": (4.327, 7.684), "mixtral_deepep_tp1ep8_bf16": (4.636, 7.854),
    "mixtral_hybridep_tp1ep8_bf16": (4.343, 7.741), "mixtral_a2a_tp1ep8_fp8": (3.788, 6.618),
    "mixtral_deepep_tp1ep8_fp8": (4.101, 6.827), "mixtral_hybridep_tp1ep8_fp8": (3.701, 6.572),
    "deepseek_a2a_tp1ep8_bf16": (7.119, 10.483), "deepseek_deepep_tp1ep8_bf16": (5.682, 9.055),
    "deepseek_hybridep_tp1ep8_bf16": (5.391, 8.795), "deepseek_a2a_tp1ep8_fp8": (7.609, 10.126),
    "deepseek_deepep_tp1ep8_fp8": (6.035, 8.602), "deepseek_hybridep_tp1ep8_fp8": (5.143, 7.687),
}
PROXIES = {
    "mixtral": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, expert_ffn_hidden=14336,
                    experts=8, experts_per_token=2, shared_experts=0,
                    shared_expert_ffn_hidden=None, router="softmax", load_balancing="aux_loss"),
    "deepseek": dict(hidden=7168, heads=56, kv_heads=8, head_dim=128, expert_ffn_hidden=2048,
                     experts=32, experts_per_token=8, shared_experts=1,
                     shared_expert_ffn_hidden=2048, router="sigmoid",
                     load_balancing="seq_aux_loss"),
}
DISPATCHERS = {"a2a": dict(moe_dispatcher="alltoall"),
               "deepep": dict(moe_dispatcher="flex", moe_flex_backend="deepep"),
               "hybridep": dict(moe_dispatcher="flex", moe_flex_backend="hybridep")}


def proxy(name: str):
    """The proxy model ``name`` (module docstring) on Qwen3-30B-A3B's other fields."""
    base = load_model("qwen3-30b-a3b")
    m = dataclasses.replace(base, name=f"{name}-proxy", **PROXIES[name])
    m.validate(f"{name} proxy")
    return m


def slot_times(p) -> tuple[float, float]:
    """(forward, backward) seconds of the MoE slot on ``p``'s simulated timeline."""
    tl, names = p.run.timeline, p.run.template.names
    at = {n: i for i, n in enumerate(names)}
    fwd = [i for i, n in enumerate(names) if n.startswith("fwd.")]
    first = at["fwd.router"]
    last = max(i for i in fwd if i < at["fwd.bias_dropout_add2"])
    bwd = [i for i, n in enumerate(names) if n.startswith("bwd.")]
    return (tl.end[last] - tl.start[first],
            tl.end[at["bwd.router.add"]] - min(tl.start[i] for i in bwd))


def rows():
    """(case, tpsim forward s, backward s, published forward s, backward s)."""
    out = []
    for case, (f_ms, b_ms) in BASELINE.items():
        model, disp, _, dtype = case.split("_")
        p = predict(proxy(model), TOPOLOGY, tp=1, dp=8, ep=8, seq_len=4096, micro_batch=1,
                    dtype=dtype, fp8_recipe="blockwise", moe_router_dtype="fp32",
                    **DISPATCHERS[disp])
        out.append((case, *slot_times(p), f_ms * 1e-3, b_ms * 1e-3))
    return out


def fp8_beyond_hybridep(out) -> list[tuple[str, float, float, float, float]]:
    """(proxy and dispatcher, tpsim forward s, backward s, published forward s, backward s)
    of (FP8 - FP8 HybridEP) - (BF16 - BF16 HybridEP), module docstring, from ``rows()``."""
    times = {case: (f, b, fp, bp) for case, f, b, fp, bp in out}
    def diff(model, disp, i):
        key = lambda dis, dt: times[f"{model}_{dis}_tp1ep8_{dt}"][i]
        return (key(disp, "fp8") - key("hybridep", "fp8")) - \
            (key(disp, "bf16") - key("hybridep", "bf16"))
    return [(f"{model} {disp}", *(diff(model, disp, i) for i in range(4)))
            for model in PROXIES for disp in ("a2a", "deepep")]


def main() -> None:
    print(f"{'MoE layer, 8 H100, EP 8':32s} {'forward ms':>22s} {'backward ms':>22s}")
    print(f"{'':32s} {'tpsim':>7s} {'publ.':>6s} {'err':>7s} {'tpsim':>7s} {'publ.':>6s} "
          f"{'err':>7s}")
    errors = []
    out = rows()
    for case, f, b, fp, bp in out:
        errors += [f / fp - 1, b / bp - 1]
        print(f"{case:32s} {f * 1e3:7.2f} {fp * 1e3:6.2f} {f / fp - 1:+7.1%} {b * 1e3:7.2f} "
              f"{bp * 1e3:6.2f} {b / bp - 1:+7.1%}")
    print(f"mean error {sum(errors) / len(errors):+.1%}, mean |error| "
          f"{sum(map(abs, errors)) / len(errors):.1%}, max |error| {max(map(abs, errors)):.1%}")
    print(f"\n{'FP8 beyond HybridEP, ms':32s} {'forward':>14s} {'backward':>14s}")
    for label, f, b, fp, bp in fp8_beyond_hybridep(out):
        print(f"{label:32s} {f * 1e3:7.2f} {fp * 1e3:6.2f} {b * 1e3:7.2f} {bp * 1e3:6.2f}")


if __name__ == "__main__":
    main()
