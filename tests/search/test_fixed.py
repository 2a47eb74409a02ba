"""The settings a search holds fixed (tpsim.search.fixed): every layout priced as predict prices
it with the same settings (bound below the simulated step, memory predict's, the best ones the
brute-force optimum), a stack's preset applied as predict applies it, what they need of the
searched dimensions pinned, bad values refused naming the flag."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError, TpsimError
from tpsim.search.driver import _priced, bound_layouts, equivalent, search
from tpsim.search.fixed import FIXED, held
from tpsim.search.jobs import Workers
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.layout import Layout
from tpsim.spec.model import load_model, with_overrides

from .bounds import check_bounds, simulate

MODEL = with_overrides(load_model("gpt3-125m"), layers=4)
CASES = {   # (fixed settings, framework), each away from the defaults in its own way
    "megatron-lm-2021": ({}, "megatron-lm-2021"),      # slower: no overlaps, unfused adds
    "llm-foundry": ({}, "llm-foundry"),                # faster loss kernel, metrics, FSDP fp32
    "bf16-grads-overlap-gather": ({"grad_reduce_in_bf16": True,       # cheaper reductions
                                   "overlap_param_gather": True}, None),
    "offload-eager": ({"cpu_offload_layers": 1, "eager_kernels": True,
                       "cross_entropy": "te", "grad_buffer": False}, None),   # no memset
    "hsdp": ({"shard_group": 2, "reshard_after_forward": False}, None),   # ZeRO-3 over 2 of dp
    "automodel-fp8-moment": ({"exp_avg_sq_dtype": "fp8"}, "automodel"),   # bf16 Adam state
    # Megatron-LM's CI runs: fp32 main-gradient adds, the log passes, the deterministic fill,
    # the data loader's attention mask on the first and last stages
    "megatron-ci": ({"gradient_accumulation_fusion": False, "log_params_norm": True,
                     "log_num_zeros_in_grad": True, "deterministic_mode": True,
                     "create_attention_mask": True}, None),
}


@pytest.fixture(scope="module", params=list(CASES))
def space(request):
    fixed, framework = CASES[request.param]
    values, pins = held(fixed, framework, None)
    run, layouts, _ = _priced(MODEL, "dgx-a100", 8, 16, None, None, None, 3, 1, False, pins=pins,
                              fixed=values)
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    sims = simulate(run, layouts, 16)
    return fixed, framework, run, layouts, priced, sims


def test_bounds_below_the_simulation_and_memory_exact(space):
    """Every layout carries the fixed settings; its bound is at most predict's step time and
    its memory and fit are predict's."""
    fixed, framework, run, layouts, priced, sims = space
    preset = FRAMEWORKS[framework] if framework else {}
    assert all(getattr(lay, k) == v for lay in layouts for k, v in {**preset, **fixed}.items())
    check_bounds(run, layouts, priced, 16, sims)


def test_search_finds_the_brute_force_optimum(space):
    """The search's best 3 under the fixed settings are the brute-force loop's, with
    predict's numbers; they differ from the default search's (the settings change prices)."""
    fixed, framework, run, layouts, priced, sims = space
    result = search(MODEL, "dgx-a100", 8, 16, top=3, fixed=fixed, framework=framework)
    distinct = {equivalent(run, lay): p for lay, p in zip(layouts, sims)}
    truth = sorted(p.step.time_s for p in distinct.values() if p.memory.fits)
    assert [c.step_s for c in result.candidates] == truth[:3]
    assert result.repriced < len(truth)
    plain = search(MODEL, "dgx-a100", 8, 16, top=3)
    assert [c.step_s for c in result.candidates] != [c.step_s for c in plain.candidates]


def test_the_fixed_settings_pin_what_they_need():
    """--framework megatron-deepspeed runs no interleaving, --overlap-param-gather needs the
    distributed optimizer, --cpu-offload-layers neither a pipeline nor recomputation: those
    searched dimensions are pinned; a user pin outside them is refused naming its flag."""
    r = search(MODEL, "dgx-a100", 8, 16, top=2, framework="megatron-deepspeed")
    assert dict(r.pins)["virtual_stages"] == (1,) and r.framework == "megatron-deepspeed"
    assert r.fixed == FRAMEWORKS["megatron-deepspeed"]
    r = search(MODEL, "dgx-a100", 8, 16, top=2, fixed={"cpu_offload_layers": 1})
    assert dict(r.pins)["pp"] == (1,) and dict(r.pins)["recompute"] == ("none",)
    r = search(MODEL, "dgx-a100", 8, 16, top=2, fixed={"shard_group": 4,
                                                        "reshard_after_forward": False})
    assert dict(r.pins)["zero"] == (3,) and r.dropped["shard_dp"] > 0
    assert all(c.layout.dp % 4 == 0 and c.layout.zero == 3 for c in r.candidates)
    with pytest.raises(ConfigError, match="^--virtual-stages: expected 1 with --framework"):
        search(MODEL, "dgx-a100", 8, 16, framework="megatron-deepspeed",
               pins={"virtual_stages": (1, 2)})
    with pytest.raises(ConfigError, match="^--distributed-optimizer: expected True with "
                                          "--overlap-param-gather"):
        search(MODEL, "dgx-a100", 8, 16, fixed={"overlap_param_gather": True},
               pins={"distributed_optimizer": False})


@pytest.mark.parametrize("fixed, framework, match", [
    ({"fp8_recipe": "per-tensor"}, None, "^--fp8-recipe: expected one of"),
    ({"train_metrics": -1}, None, "^--train-metrics: expected an integer from 0"),
    ({"tp": 2}, None, "^fixed: expected a setting the search holds fixed .*; the search "
                      "enumerates it: pin it with pins="),
    ({"seq_len": 1024}, None, "^fixed: .*'seq_len'.; a keyword of search"),
    ({"tpp": 2}, None, "^fixed: .*; not a Layout setting"),
    ({"pipeline_layout": "Et|tL"}, None, "^--pipeline-layout: expected its default"),
    ({"fp8_param_gather": True}, "torchtitan", "^--fp8-param-gather: expected False under"),
    ({}, "megatron", "^--framework: expected one of"),
    ("tensorwise", None, "^fixed: expected a mapping"),
    ({"shard_group": 2, "overlap_param_gather": True}, None, "^--overlap-param-gather"),
])
def test_bad_fixed_settings_name_the_flag(fixed, framework, match):
    with pytest.raises(TpsimError, match=match):
        search(MODEL, "dgx-a100", 8, 16, fixed=fixed, framework=framework)


def test_every_setting_is_searched_fixed_or_the_search_own():
    """No Layout setting is left out: each is enumerated (pinnable), held fixed or one of the
    search's own arguments."""
    from tpsim.search.fixed import ENUMERATED, OWN
    names = {f for f in Layout.flags()}
    assert names == set(ENUMERATED) | set(FIXED) | set(OWN)


def test_hsdp_of_a_mixture_of_experts_is_refused():
    with pytest.raises(ConfigError, match="^--shard-group: expected none with a mixture"):
        search(with_overrides(load_model("mixtral-8x7b"), layers=2), "dgx-h100", 8, 8,
               seq_len=1024, fixed={"shard_group": 2})


def test_the_moe_overlap_bounds_below_the_simulation():
    """--overlap-moe-comm (its MoE layer merged across micro-batches, a share set by the
    micro-batches and the pipeline): every layout's bound at most predict's step, its memory
    predict's; the layouts Megatron-core refuses it for are dropped; a dense model refuses it."""
    model = with_overrides(load_model("mixtral-8x7b"), layers=4)
    values, pins = held({"overlap_moe_comm": True}, None, None)
    run, layouts, dropped = _priced(model, "dgx-h100", 8, 16, 1024, None, None, 3, 1, False,
                                    pins=pins, fixed=values, zero_with_pp=True)
    assert dropped["moe_overlap_ep"] and dropped["moe_overlap_vp"]
    assert any(lay.pp > 1 for lay in layouts) and all(lay.ep > 1 for lay in layouts)
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    check_bounds(run, layouts, priced, 16)
    with pytest.raises(ConfigError, match="^--overlap-moe-comm: expected off unless --ep"):
        search(MODEL, "dgx-a100", 8, 16, fixed={"overlap_moe_comm": True})
