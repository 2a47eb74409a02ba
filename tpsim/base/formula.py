"""A formula's public name: the dotted path of the function that computed a number.

Every op row, collective and aggregate section of tpsim's output names the function that
computed it (``formula``), so a reader goes from any number to its formula in one hop. The
names are read off the function objects (:func:`qualname`), never typed, so a rename or a move
renames the output with it; :func:`resolve` is the inverse, the check that a name still
leads to a function.
"""
from __future__ import annotations

import importlib


def qualname(fn) -> str:
    """``fn``'s module and qualified name: ``tpsim.cost.compute.gemm_time``,
    ``tpsim.spec.model.ModelConfig.params``."""
    return f"{fn.__module__}.{fn.__qualname__}"


def resolve(name: str):
    """The object a :func:`qualname` names: the longest importable module prefix, then
    attributes (a class, then its method). Raises ImportError or AttributeError if the name
    leads nowhere."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {name!r}")
