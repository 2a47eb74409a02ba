"""The settings a search holds fixed: every :class:`~tpsim.spec.layout.Layout` setting
``tpsim predict`` takes that the search neither enumerates (:data:`ENUMERATED`) nor takes as
its own argument (:data:`OWN`), applied to every layout it prices, so that each candidate is
priced as ``tpsim predict`` prices that layout with the same flags. ``--framework`` applies as
predict applies it (:func:`tpsim.spec.frameworks.with_framework`): its preset fills the fixed
settings left at their defaults, the user's values win.

A fixed setting that predict takes only beside some values of an enumerated dimension pins
that dimension to them (:func:`needs`), as a stack's missing features do (``--framework
megatron-deepspeed``: no interleaving, ``--virtual-stages 1``); a pin of the user's that
leaves none of them is refused, naming its flag. A few settings the step bound does not price
(:data:`NOT_BOUNDED`) are refused: the branch and bound would not stay exact.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from ..spec.frameworks import FRAMEWORKS, LACKS, with_framework
from ..spec.layout import Layout
from ..spec.settings import declared, defaults
from .pins import PINNABLE

# a search's own arguments (tpsim.search.driver.search), not fixed settings
OWN = ("seq_len", "dtype", "nodes", "memory_headroom", "global_batch", "usd_per_gpu_hour", "nccl")
# what the search enumerates (pinnable), the layers' split included (tpsim.search.splits)
ENUMERATED = PINNABLE + ("first_stage_layers", "last_stage_layers")
FIXED = tuple(f.name for f in declared(Layout) if f.name not in OWN + ENUMERATED)
# what the step bound does not price (each changes the step per layout in ways the bound of
# tpsim.search.step does not follow): refused away from its default, with the reason
NOT_BOUNDED = {
    "pipeline_layout": "the search enumerates the layers' split itself",
    "recompute_method": "the search's step bound does not price partial recomputation",
    "recompute_num_layers": "the search's step bound does not price partial recomputation",
}


def fixed_settings(fixed: dict | None, framework: str | None = None) -> dict:
    """The fixed settings (field -> value, every field of :data:`FIXED`) of ``fixed`` (field ->
    value: the settings given) under ``framework``; a ConfigError naming the flag of a value
    predict refuses, of a setting the search enumerates or does not bound."""
    if fixed is None:
        fixed = {}
    if not isinstance(fixed, dict):
        raise ConfigError("fixed", "", "a mapping of Layout settings to values", fixed)
    flags, default = Layout.flags(), defaults(Layout)
    for name in fixed:
        if name not in FIXED:
            hint = "the search enumerates it: pin it with pins=" if name in ENUMERATED else \
                "a keyword of search() itself" if name in OWN else "not a Layout setting"
            raise ConfigError("fixed", "", "a setting the search holds fixed "
                              "(tpsim.search.fixed.FIXED)", name, hint)
    values = {name: fixed.get(name, default[name]) for name in FIXED}
    if framework is not None:
        values = with_framework(framework, values, default)
    for name, why in NOT_BOUNDED.items():
        if values[name] != default[name]:
            raise ConfigError(flags[name], "", f"its default under tpsim search ({why}; "
                              "tpsim predict prices it)", values[name])
    return values


def needs(values: dict, framework: str | None = None) -> dict:
    """The enumerated dimensions the fixed ``values`` pin: field -> (the values they allow,
    the flag that asks it); two settings that pin one dimension leave the values both allow
    (none: the probe refuses them, :func:`probe`)."""
    out: dict = {}

    def need(flag: str, **allowed) -> None:
        for name, vals in allowed.items():
            if name in out:
                vals = tuple(v for v in out[name][0] if v in vals) or vals
            out[name] = (vals, flag)
    if values["recompute_modules"] is not None:
        need("--recompute-modules", recompute=("selective",))
    if values["overlap_param_gather"]:
        need("--overlap-param-gather", distributed_optimizer=(True,), zero=(0, 1))
    if not values["reshard_after_forward"]:
        need("--no-reshard-after-forward", distributed_optimizer=(False,), zero=(3,))
    if values["fp8_all_gather"]:         # ZeRO-3; beside a pipeline it gathers in 16 bits
        need("--fp8-all-gather", distributed_optimizer=(False,), zero=(3,), pp=(1,))
    if values["shard_group"] is not None:    # HSDP: ZeRO-2/3 over all of dp beside a pipeline
        need("--shard-group", distributed_optimizer=(False,), zero=(2, 3), pp=(1,), cp=(1,))
    if values["overlap_moe_comm"]:       # Megatron-core refuses it with full recomputation
        need("--overlap-moe-comm", recompute=("none", "selective"))
    if values["cpu_offload_layers"]:     # Megatron-core offloads without either
        need("--cpu-offload-layers", pp=(1,), recompute=("none",))
    if framework is not None and framework in FRAMEWORKS:
        for name, only, _ in LACKS[framework]:
            if name in PINNABLE:
                need(f"--framework {framework}", **{name: (only,)})
    return out


def pinned(pins: dict | None, values: dict, framework: str | None = None) -> dict | None:
    """``pins`` (field -> values or None) with the dimensions :func:`needs` pins: the user's
    values where they are among those allowed (a ConfigError naming the flag otherwise), else
    the allowed values."""
    need = needs(values, framework)
    if not need or not isinstance(pins, (dict, type(None))):
        return pins                      # a bad pins is check_pins's to refuse
    out, flags = dict(pins or {}), Layout.flags()
    for name, (allowed, why) in need.items():
        given = out.get(name)
        if given is None:
            out[name] = allowed
            continue
        given = tuple(given) if isinstance(given, (tuple, list)) else (given,)
        bad = [v for v in given if v not in allowed]
        if bad:
            raise ConfigError(flags[name], "", f"{' or '.join(map(str, allowed))} with {why}",
                              bad[0])
    return out


def probe(values: dict, pins: dict | None) -> Layout:
    """A layout of the fixed ``values`` and the first pinned value of each dimension they need
    (:func:`needs`): made, it checks the fixed settings together as predict checks them."""
    first = {n: (v[0] if isinstance(v, (tuple, list)) else v)
             for n, v in (pins or {}).items()
             if v is not None and n in ("recompute", "zero", "distributed_optimizer")}
    dp = {"dp": values["shard_group"]} if values["shard_group"] else {}  # a dp it divides
    return Layout.of({**values, **first, **dp})


def held(fixed: dict | None, framework: str | None, pins: dict | None) -> tuple[dict, dict]:
    """(:func:`fixed_settings`, the ``pins`` with what they need: :func:`pinned`)."""
    values = fixed_settings(fixed, framework)
    return values, pinned(pins, values, framework)


def changed_settings(values: dict) -> dict:
    """The fixed settings away from their defaults, by field name (as predict's
    ``inputs.layout`` shows a layout's)."""
    default = defaults(Layout)
    return {n: v for n, v in values.items() if v != default[n]}
