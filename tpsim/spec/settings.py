"""Run settings declared once: each is a dataclass field whose metadata says what it means, the
command-line flag that sets it and the values it takes. The checks of :func:`check` and the
command line's arguments (:mod:`tpsim.cli.layout_args`) are both read from that metadata, as
Megatron-core builds its argparse arguments from its config dataclasses.

Kinds of setting:

* ``count``: an integer from ``least`` (default 1) to :data:`~tpsim.base.schema.MAX_INT`;
* ``flag``: True or False;
* ``choice``: one of ``choices`` (the same type as them: True is not 1);
* ``probability``: a number in [0, 1);
* ``name``: a string (``choices`` lists the ones the command line offers; what the device
  lists is checked where the device is known).

A setting whose default is None also takes None (the run's default: the model's, the
device's). A feature declared ahead of its model (``unmodelled``) takes its default only: any
other value is refused, never ignored. Every refusal is a
:class:`~tpsim.base.errors.ConfigError` naming the flag.
"""
from __future__ import annotations

from dataclasses import Field, field, fields
from functools import lru_cache

from ..base.errors import ConfigError
from ..base.schema import MAX_INT

KINDS = ("count", "flag", "choice", "probability", "name")


def setting(default, doc: str, *, flag: str, kind: str, least: int = 1, choices: tuple = (),
            lists: bool = False, help: str | None = None, expected: str | None = None,
            unmodelled: str | None = None):
    """A dataclass field declaring one setting (module docstring). ``doc``: what it means;
    ``help``: the command line's help where it words it otherwise (a flag that turns a True
    default off); ``lists``: ``tpsim predict`` takes a comma list of values to compare;
    ``expected``: what the error message says it takes, where the kind's words do not fit;
    ``unmodelled``: the feature's name when only the default is modelled yet."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    meta = {"doc": doc, "flag": flag, "kind": kind, "least": least, "choices": tuple(choices),
            "lists": lists, "help": help or doc, "expected": expected, "unmodelled": unmodelled}
    return field(default=default, metadata=meta)


def declared(cls_or_obj) -> tuple[Field, ...]:
    """The fields of a settings dataclass that :func:`setting` declared."""
    return tuple(f for f in fields(cls_or_obj) if "kind" in f.metadata)


def expected(f: Field) -> str:
    """What setting ``f`` takes, as its error message words it."""
    meta = f.metadata
    kind = meta["kind"]
    if meta["expected"]:
        return meta["expected"]
    if kind == "count":
        least = meta["least"]
        return f"a positive integer (at most {MAX_INT})" if least == 1 else \
            f"an integer from {least} to {MAX_INT}"
    if kind == "flag":
        return "true or false"
    if kind == "choice":
        return f"one of {', '.join(map(str, meta['choices']))}"
    return "a probability in [0, 1)"


def valid(f: Field, v) -> bool:
    """Whether ``v`` is a value setting ``f`` takes (None where its default is None)."""
    return _validator(f)(v)


def _validator(f: Field):
    """``v -> bool`` for setting ``f`` (module docstring)."""
    meta, nullable = f.metadata, f.default is None
    kind, least, choices = meta["kind"], meta["least"], meta["choices"]
    if kind == "count":
        def ok(v):
            return type(v) is not bool and isinstance(v, int) and least <= v <= MAX_INT
    elif kind == "flag":
        def ok(v):
            return isinstance(v, bool)
    elif kind == "choice":
        def ok(v):
            return any(type(v) is type(c) and v == c for c in choices)
    elif kind == "name":
        def ok(v):
            return isinstance(v, str) and v != ""
    else:
        def ok(v):
            return not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1
    return (lambda v: v is None or ok(v)) if nullable else ok


@lru_cache(maxsize=None)
def _checks(cls) -> tuple:
    """(name, validator, field, the one value modelled or ``_ANY``) of each declared setting of
    ``cls``, made once per class."""
    return tuple((f.name, _validator(f), f, f.default if f.metadata["unmodelled"] else _ANY)
                 for f in declared(cls))


_ANY = object()


def check(obj) -> None:
    """Every declared setting of ``obj`` valid, else a ConfigError naming its flag."""
    for name, ok, f, only in _checks(type(obj)):
        v = getattr(obj, name)
        if not ok(v):
            raise ConfigError(f.metadata["flag"], "", expected(f), v)
        if only is not _ANY and v != only:
            raise ConfigError(f.metadata["flag"], "", f"{only} ({f.metadata['unmodelled']} "
                              "is not modelled yet)", v)


def changed(obj) -> dict:
    """The settings of ``obj`` that differ from their defaults, by field name."""
    return {f.name: getattr(obj, f.name) for f in declared(obj)
            if getattr(obj, f.name) != f.default}
