"""Build frozen dataclasses from YAML mappings, checking every key once, at load.

A field declares how it appears in YAML through ``metadata`` (see :func:`spec`):
its key (which carries the unit, e.g. ``bandwidth_GBps``), the factor that converts it to SI,
and the bound it must respect. Unknown keys, missing keys, wrong types and out-of-range values
all raise :class:`~tpsim.errors.ConfigError` naming the file, the dotted key and what was
expected.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def spec(key: str | None = None, scale: float = 1.0, gt: float | None = None,
         ge: float | None = None, le: float | None = None, doc: str = "", **kw) -> Any:
    """A dataclass field with its YAML key, SI scale factor and bounds."""
    meta = {"key": key, "scale": scale, "gt": gt, "ge": ge, "le": le, "doc": doc}
    return dataclasses.field(metadata=meta, **kw)


_EXPONENT_ONLY = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")

# libyaml's safe loader when PyYAML was built with it (5x faster on the predict path)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), "", "a readable YAML file", e.strerror) from None
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(str(p), "", f"valid YAML (parse error at {where})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "a YAML mapping at the top level", type(data).__name__)
    return data


def shipped_or_path(name_or_path: str | Path, shipped: dict[str, Path], flag: str,
                    kind: str) -> Path:
    """The YAML file behind ``--model``/``--topology``: a path as given, else a shipped name."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        return path
    if text not in shipped:
        raise ConfigError(flag, "", f"a shipped {kind} ({', '.join(shipped)}) or a path to a "
                          "YAML file", text)
    return shipped[text]


def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def _check_bounds(value: float, meta: dict, source: str, key: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(source, key, "a finite number", value)
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise ConfigError(source, key, f"a number > {meta['gt']:g}", value)
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise ConfigError(source, key, f"a number >= {meta['ge']:g}", value)
    if meta.get("le") is not None and not value <= meta["le"]:
        raise ConfigError(source, key, f"a number <= {meta['le']:g}", value)


def _convert(tp: Any, value: Any, meta: dict, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, meta, source, key)
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, source, key)
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list) or not value:
            raise ConfigError(source, key, "a non-empty list", value)
        return tuple(_convert(inner, v, meta, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _k, inner = typing.get_args(tp)
        if not isinstance(value, dict) or not value:
            raise ConfigError(source, key, "a non-empty mapping", value)
        return {str(k): _convert(inner, v, meta, source, f"{key}.{k}") for k, v in value.items()}
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
        if isinstance(value, str) and _EXPONENT_ONLY.match(value):
            value = float(value)       # YAML 1.1 reads 1e6 (no '.') as a string; a person means 1e6
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, "a number", value)
        _check_bounds(float(value), meta, source, key)
        return float(value) * meta.get("scale", 1.0)
    if tp is str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(source, key, "a non-empty string", value)
        return value
    raise TypeError(f"schema: unsupported field type {tp!r} at {key}")  # a bug in tpsim, not input


def from_mapping(cls: type, data: Any, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` (a mapping read from ``source``)."""
    if not isinstance(data, dict):
        raise ConfigError(source, path, "a mapping", type(data).__name__)
    hints = typing.get_type_hints(cls)
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            near = ", ".join(sorted(fields))
            raise ConfigError(source, _join(path, str(k)), f"one of the known keys ({near})", None)
    kwargs = {}
    for key, f in fields.items():
        dotted = _join(path, key)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, dotted, "this required key to be present")
            continue
        kwargs[f.name] = _convert(hints[f.name], data[key], dict(f.metadata), source, dotted)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(source, path)
    return obj


def _join(path: str, key: str) -> str:
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
