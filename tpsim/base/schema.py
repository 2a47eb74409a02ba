"""Build frozen dataclasses from YAML mappings, checking every key once, at load.

A field declares how it appears in YAML through ``metadata`` (see :func:`spec`):
its key (which carries the unit, e.g. ``bandwidth_GBps``), the factor that converts it to SI,
and the bound it must respect. Unknown keys, missing keys, wrong types and out-of-range values
all raise :class:`~tpsim.base.errors.ConfigError` naming the file, the dotted key and what was
expected. Every number is bounded (MAX_INT, MAX_NUMBER, MIN_POSITIVE below), so whatever a file
holds, the times tpsim computes from it stay finite.

An object built in code (``Device(...)``, ``dataclasses.replace(device, ...)``: its values in
SI) passes the same checks (:func:`check_built`, each class's ``__post_init__``): the type and
bounds of each field, the bounds scaled to SI, then the class's ``validate``; a ConfigError
names the class and the field. An object :func:`from_mapping` builds is checked there, against
its file's keys, once. The input files themselves are read by :mod:`tpsim.base.files`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import threading
import types
import typing
from typing import Any

from .errors import ConfigError
from .files import (MAX_FILE_BYTES, MAX_VALUES, load_json, load_yaml,  # noqa: F401 (re-exported)
                    read_text, shipped_files, shipped_or_path)


def spec(key: str | None = None, scale: float = 1.0, gt: float | None = None,
         ge: float | None = None, le: float | None = None, doc: str = "", **kw) -> Any:
    """A dataclass field with its YAML key, SI scale factor and bounds."""
    meta = {"key": key, "scale": scale, "gt": gt, "ge": ge, "le": le, "doc": doc}
    return dataclasses.field(metadata=meta, **kw)


_EXPONENT_ONLY = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")   # C0, DEL, C1, line separators

# Bounds on every value a file or flag may carry: physical quantities are far inside them, and
# inside them every product tpsim forms (FLOPs, bytes, seconds) stays a finite float.
MAX_INT = 2**31 - 1          # counts: layers, heads, GPUs, tokens
MAX_NUMBER = 1e15            # a number in its key's unit (GB, GB/s, us, TFLOP/s, ...)
MIN_POSITIVE = 1e-9          # the smallest value of a key that must be > 0 (a divisor somewhere)
MAX_STRING = 1000            # characters of a name or description

def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def _check_bounds(value: float, meta: dict, source: str, key: str, scale: float = 1.0) -> None:
    """Finite, within MAX_NUMBER (MAX_INT for an integer), inside the field's own bounds; a
    field that must be > 0 must be at least MIN_POSITIVE (it divides something). ``scale``:
    the value is in SI (a field built in code), every bound scaled to it."""
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise ConfigError(source, key, f"an integer of at most {MAX_INT}", value)
    if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > MAX_NUMBER * scale:
        raise ConfigError(source, key, f"a finite number of magnitude at most "
                          f"{MAX_NUMBER * scale:g}", value)
    gt, ge, le = (None if meta.get(b) is None else meta[b] * scale for b in ("gt", "ge", "le"))
    if gt is not None and not value > gt:
        raise ConfigError(source, key, f"a number > {gt:g}", value)
    if gt == 0 and value < MIN_POSITIVE * scale:
        raise ConfigError(source, key, f"a number >= {MIN_POSITIVE * scale:g}", value)
    if ge is not None and not value >= ge:
        raise ConfigError(source, key, f"a number >= {ge:g}", value)
    if le is not None and not value <= le:
        raise ConfigError(source, key, f"a number <= {le:g}", value)


def _convert(tp: Any, value: Any, meta: dict, source: str, key: str, built: bool = False) -> Any:
    """``value`` read from a file as field type ``tp``, converted to SI; ``built``: a value
    already in SI, given in code (:func:`check_built`), checked alike and returned as it is."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, meta, source, key, built)
    if dataclasses.is_dataclass(tp):
        if not built:
            return from_mapping(tp, value, source, key)
        if not isinstance(value, tp):             # it checked itself when it was made
            raise ConfigError(source, key, f"a {tp.__name__}", value)
        return value
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, tuple if built else list) or not value:
            raise ConfigError(source, key, f"a non-empty {'tuple' if built else 'list'}", value)
        return tuple(_convert(inner, v, meta, source, f"{key}[{i}]", built)
                     for i, v in enumerate(value))
    if origin is dict:
        _k, inner = typing.get_args(tp)
        if not isinstance(value, dict) or not value:
            raise ConfigError(source, key, "a non-empty mapping", value)
        if built and not all(isinstance(k, str) for k in value):
            raise ConfigError(source, key, "a mapping with string keys", value)
        return {str(k): _convert(inner, v, meta, source, f"{key}.{k}", built)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, "an integer", value)
        _check_bounds(value, meta, source, key)
        return value
    if tp is float:
        return _number(value, meta, source, key, built)
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(source, key, "a non-empty string", value)
        if len(value) > MAX_STRING:
            raise ConfigError(source, key, f"a string of at most {MAX_STRING} characters", value)
        if _CONTROL.search(value):      # a name or a one-line description: one line of a table
            raise ConfigError(source, key, "one line of text (no newline, tab or other control "
                              "character)", value)
        return value
    raise TypeError(f"schema: unsupported field type {tp!r} at {key}")  # a bug in tpsim, not input


def _number(value: Any, meta: dict, source: str, key: str, built: bool) -> float:
    """A float field's value: from a file, in its key's unit, returned in SI; ``built``, in SI."""
    if isinstance(value, str) and _EXPONENT_ONLY.match(value) and not built:
        value = float(value)       # YAML 1.1 reads 1e6 (no '.') as a string; a person means 1e6
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(source, key, "a number", value)
    scale = meta.get("scale", 1.0)
    if isinstance(value, int) and abs(value) > MAX_NUMBER * (scale if built else 1.0):
        raise ConfigError(source, key, f"a finite number of magnitude at most "     # 10^400
                          f"{MAX_NUMBER * (scale if built else 1.0):g}", value)
    if built:
        _check_bounds(float(value), meta, source, key, scale)
        return value
    _check_bounds(float(value), meta, source, key)
    return float(value) * scale


# a top-level key that marks a file of the other kind, and what to do with it
OTHER_FILE = {"levels": "this is a topology file: pass it as --topology",
              "hidden": "this is a model file: pass it as --model"}


BUILT = "tpsim API"              # the source check_built's errors name
_LOADING = threading.local()      # depth of from_mapping calls in this thread (check_built)


def from_mapping(cls: type, data: Any, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` (a mapping read from ``source``)."""
    if not isinstance(data, dict):
        raise ConfigError(source, path, "a mapping", type(data).__name__)
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            import difflib
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            other = next((h for key, h in OTHER_FILE.items() if key in data and key not in
                          fields), "") if not path else ""
            raise ConfigError(source, key_at(path, str(k)), "one of the known keys "
                              f"({', '.join(sorted(fields))})",
                              hint=other or (f"did you mean {close[0]}?" if close else ""))
    kwargs = {}
    for key, f in fields.items():
        dotted = key_at(path, key)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, dotted, "this required key to be present")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[key], dict(f.metadata), source, dotted)
    with deferred():
        obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(source, path)
    return obj


class deferred:
    """``with deferred():`` objects built inside skip :func:`check_built`: their maker checks
    them itself, naming its own source (:func:`from_mapping`: the file and its keys;
    ``with_overrides``: the flags)."""
    def __enter__(self):
        _LOADING.depth = getattr(_LOADING, "depth", 0) + 1

    def __exit__(self, *exc):
        _LOADING.depth -= 1


@functools.cache
def _built_fields(cls: type) -> tuple:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name], dict(f.metadata), f.default, f"{cls.__name__}.{f.name}")
                 for f in dataclasses.fields(cls) if f.init)


def check_built(obj) -> None:
    """``obj``, a schema dataclass built in code (its values in SI, as :func:`from_mapping`
    stores them), checked as a file's values are: each field's type and bounds (scaled to
    SI), then ``obj.validate``; a ConfigError names the class and the field ("tpsim API:
    Device.sm_count: ..."). The ``__post_init__`` of each schema class; nothing inside
    :class:`deferred`."""
    if getattr(_LOADING, "depth", 0):
        return
    for name, tp, meta, default, key in _built_fields(type(obj)):
        value = getattr(obj, name)
        if value is not default:         # a default is valid by declaration (None, ())
            _convert(tp, value, meta, BUILT, key, built=True)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(BUILT, type(obj).__name__)


def key_at(path: str, key: str) -> str:
    """``key`` under ``path`` as an error names it: ``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(yaml key, default, doc) for every field: the source of topologies/README.md's tables."""
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            default = "required"
        elif f.default is None:
            default = "null"
        elif dataclasses.is_dataclass(f.default):
            default = "see below"
        elif isinstance(f.default, float):
            default = f"{f.default / f.metadata.get('scale', 1.0):g}"
        else:
            default = str(f.default).lower() if isinstance(f.default, bool) else repr(f.default)
        rows.append((prefix + _yaml_key(f), default, f.metadata.get("doc", "")))
    return rows
