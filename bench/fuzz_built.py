"""bench/fuzz.py's ``built`` cases: the cluster and model dataclasses built in Python code
(``dataclasses.replace(preset_object, field=bad)``: a Device, a link Level, its Efficiency, an
AttentionKernel, an NCCL Protocol, a Topology, a ModelConfig), then priced by ``tpsim.predict``.

Each case must end in a prediction or a TpsimError. A value that no file could hold (a string
for a number, NaN, infinity, a number outside the field's bounds, a list for a tuple, None for
a required field) must be refused; an accepted one must not raise anything but a TpsimError
on the way through the model (a traceback, a hang: failures).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing

BUILT_BAD = [None, True, -1, 0, -0.0, 0.5, 1.5, 7, math.nan, math.inf, -math.inf, 10**30,
             1e-30, "8", "", "bogus", [], [8], (), (8,), {}, {"x": 1}, object()]


def _targets():
    """name -> (the preset object, a function placing a changed copy in (model, topology))."""
    from tpsim import load_model, load_topology
    topo, model = load_topology("dgx-h100"), load_model("gpt3-125m")
    dev, level = topo.device, topo.levels[0]
    kernel = dev.attention_kernel

    def level0(lv):
        return model, topo.replaced(levels=(lv, *topo.levels[1:]))
    return {
        "Device": (dev, lambda d: (model, topo.replaced(device=d))),
        "Level": (level, level0),
        "Efficiency": (level.efficiency,
                       lambda e: level0(dataclasses.replace(level, efficiency=e))),
        "AttentionKernel": (dev.attention_kernels[kernel], lambda k: (model, topo.replaced(
            device=dataclasses.replace(dev, attention_kernels={
                **dev.attention_kernels, kernel: k})))),
        "Protocol": (dev.protocols["simple"], lambda p: (model, topo.replaced(
            device=dataclasses.replace(dev, collective_protocols={**dev.protocols,
                                                                  "simple": p})))),
        "Topology": (topo, lambda t: (model, t)),
        "ModelConfig": (model, lambda m: (m, topo)),
    }


def built_cases(rng, n: int):
    """(case text, a callable, must be refused) of n cases (module docstring)."""
    targets = _targets()
    hints = {name: typing.get_type_hints(type(obj)) for name, (obj, _) in targets.items()}
    for _ in range(n):
        name = rng.choice(list(targets))
        obj, place = targets[name]
        f = rng.choice([f for f in dataclasses.fields(obj) if f.init])
        value = rng.choice(BUILT_BAD)

        def call(obj=obj, place=place, f=f, value=value):
            import tpsim
            tpsim.predict(*place(dataclasses.replace(obj, **{f.name: value})), tp=2)
        yield f"{name}({f.name}={value!r})", call, never_taken(hints[name][f.name], f, value)


def never_taken(tp, f: dataclasses.Field, value) -> bool:
    """Whether field ``f`` of type ``tp`` (in SI: its metadata's scale) can never take
    ``value`` (the module docstring's list); a value that may be refused for another reason
    (a name not known, a tuple's length) counts as takeable."""
    if value is f.default:
        return False
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return False
        tp = next(a for a in args if a is not type(None))
    if value is None:
        return True
    origin = typing.get_origin(tp) or tp
    if origin in (tuple, dict):
        return not isinstance(value, origin) or not value
    if dataclasses.is_dataclass(origin):
        return not isinstance(value, origin)
    if origin is bool:
        return not isinstance(value, bool)
    if origin is str:
        return not isinstance(value, str) or not value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            origin is int and not isinstance(value, int)):
        return True
    meta, scale = f.metadata, f.metadata.get("scale", 1.0)
    limit = 2**31 - 1 if origin is int else 1e15 * scale
    return not (abs(value) <= limit) or _outside(value, meta, scale)


def _outside(value, meta, scale: float) -> bool:
    """Outside the field's bounds, scaled to SI (a field > 0 is at least 1e-9 in its unit)."""
    gt, ge, le = (meta.get(b) for b in ("gt", "ge", "le"))
    if gt is not None and (not value > gt * scale or (gt == 0 and value < 1e-9 * scale)):
        return True
    return (ge is not None and not value >= ge * scale) or \
        (le is not None and not value <= le * scale)
