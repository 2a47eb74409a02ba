"""Results as plain values for the JSON writers: dataclasses as dicts of their fields."""
from __future__ import annotations

import dataclasses


def plain(value, skip=()):
    """A result as ``dataclasses.asdict`` makes it (dataclasses as dicts of their fields, tuples,
    lists and dicts rebuilt, recursively), less the fields named in ``skip``, without its deep
    copy of every leaf: the results hold numbers, strings and containers of them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in skip}
    if type(value) in (list, tuple):
        return type(value)(plain(v) for v in value)
    if type(value) is dict:
        return {k: plain(v) for k, v in value.items()}
    return value


__all__ = ["plain"]
