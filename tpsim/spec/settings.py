"""Run settings declared once: each is a dataclass field whose metadata says what it means, the
command-line flag that sets it and the values it takes. The checks of :func:`check` and the
command line's arguments (:mod:`tpsim.cli.layout_args`) are both read from that metadata, as
Megatron-core builds its argparse arguments from its config dataclasses.

Kinds of setting:

* ``count``: an integer from ``least`` (default 1) to :data:`~tpsim.base.schema.MAX_INT`;
* ``tokens``: a count of tokens, checked as a ``count`` (the command line also takes 8k for
  8,192: :func:`tpsim.cli.common.token_count`);
* ``flag``: True or False;
* ``choice``: one of ``choices`` (the same type as them: True is not 1);
* ``probability``: a number in [0, 1);
* ``rate``: a positive number, infinity included (a request rate: inf sends every request at
  once);
* ``price``: a finite number >= 0 (a price, USD per GPU-hour);
* ``name``: a string (``choices`` lists the ones the command line offers; what the device
  lists is checked where the device is known);
* ``names``: a non-empty tuple of distinct ``choices`` (Megatron-LM's list arguments);
* ``release``: an NCCL release, a string here; the releases tpsim knows are the cluster's
  (:func:`tpsim.cluster.nccl.release_of`), which refuses another where the run's topology is
  loaded, and the command line reads one as that module reads it.

A setting whose default is None also takes None (the run's default: the model's, the
device's). Every refusal is a
:class:`~tpsim.base.errors.ConfigError` naming the flag.
"""
from __future__ import annotations

import math
from dataclasses import Field, field, fields
from functools import lru_cache
from itertools import compress
from operator import attrgetter, is_not

from ..base.errors import ConfigError, TpsimError
from ..base.schema import MAX_INT

KINDS = ("count", "tokens", "flag", "choice", "probability", "name", "rate", "price", "names",
         "release")
COUNTS = ("count", "tokens")            # the kinds that hold an integer from ``least``


def setting(default, doc: str, *, flag: str, kind: str, least: int = 1, choices: tuple = (),
            lists: bool = False, help: str | None = None, expected: str | None = None,
            megatron: str | None = None):
    """A dataclass field declaring one setting (module docstring). ``doc``: what it means;
    ``help``: the command line's help where it words it otherwise (a flag that turns a True
    default off); ``lists``: ``tpsim predict`` takes a comma list of values to compare;
    ``expected``: what the error message says it takes, where the kind's words do not fit;
    ``megatron``:
    Megatron-LM's argument for the same setting (megatron/training/arguments.py), which the
    command line accepts as an alias."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    meta = {"doc": doc, "flag": flag, "kind": kind, "least": least, "choices": tuple(choices),
            "lists": lists, "help": help or doc, "expected": expected,
            "megatron": megatron}
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
    if kind in COUNTS:
        least = meta["least"]
        return f"a positive integer (at most {MAX_INT})" if least == 1 else \
            f"an integer from {least} to {MAX_INT}"
    if kind == "flag":
        return "true or false"
    if kind == "choice":
        return f"one of {', '.join(map(str, meta['choices']))}"
    if kind == "names":
        return f"a tuple of one or more distinct names of {', '.join(meta['choices'])}"
    if kind == "rate":
        return "a positive number or inf"
    if kind == "price":
        return "a finite number >= 0"
    if kind == "release":
        return "an NCCL release, a string such as '2.18' (tpsim.cluster.nccl)"
    return "a probability in [0, 1)"


def _validator(f: Field):
    """``v -> bool`` for setting ``f`` (module docstring)."""
    meta, nullable = f.metadata, f.default is None
    kind, least, choices = meta["kind"], meta["least"], meta["choices"]
    if kind in COUNTS:
        def ok(v):
            return (type(v) is int and least <= v <= MAX_INT) or (v is None and nullable) or (
                type(v) is not bool and isinstance(v, int) and least <= v <= MAX_INT)
    elif kind == "flag":
        def ok(v):
            return v is True or v is False or (v is None and nullable)
    elif kind == "choice":
        types = {type(c) for c in choices}     # True is not 1, a list is not a name

        def ok(v):
            return (type(v) in types and v in choices) or (v is None and nullable)
    elif kind == "names":
        def ok(v):
            return (v is None and nullable) or (
                type(v) is tuple and v != () and len(set(v)) == len(v)
                and all(isinstance(x, str) and x in choices for x in v))
    elif kind in ("name", "release"):
        def ok(v):
            return (v is None and nullable) or (isinstance(v, str) and v != "")
    elif kind == "rate":
        def ok(v):
            return (v is None and nullable) or (
                not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0)
    elif kind == "price":
        def ok(v):
            return (v is None and nullable) or (
                not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < math.inf)
    else:
        def ok(v):
            return (v is None and nullable) or (
                not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < 1)
    return ok


@lru_cache(maxsize=None)
def _checks(cls) -> tuple:
    """The declared settings of ``cls`` as (a getter of their values, their defaults, rows: per
    setting its validator and field), made once per class."""
    fs = declared(cls)
    get = attrgetter(*(f.name for f in fs))
    return (get if len(fs) > 1 else lambda obj: (get(obj),), tuple(f.default for f in fs),
            tuple((_validator(f), f) for f in fs))


def check(obj) -> None:
    """Every declared setting of ``obj`` valid, else a ConfigError naming its flag. A default
    (the very object declared) is valid by declaration and skipped: a run sets a few, and
    the settings left are picked out without a Python loop (predict checks at every call)."""
    names, defaults, rows = _checks(type(obj))
    values = names(obj)
    for (ok, f), v in compress(zip(rows, values), map(is_not, values, defaults)):
        if not ok(v):
            raise ConfigError(f.metadata["flag"], "", expected(f), v)


def made(cls, values: dict, changes: dict, checked: bool = True):
    """A ``cls`` of ``values`` updated with ``changes``, as ``dataclasses.replace`` makes it
    (``__post_init__``'s checks run) at a fraction of its cost; ``checked`` False skips them
    (values known to be valid)."""
    if not changes.keys() <= values.keys():
        raise TypeError(f"unknown {cls.__name__} fields: {sorted(changes.keys() - values)}")
    obj = object.__new__(cls)
    obj.__dict__.update(values, **changes)
    if checked:
        obj.__post_init__()
    return obj


def changed(obj) -> dict:
    """The settings of ``obj`` that differ from their defaults, by field name."""
    return {name: value for name, default in defaults(type(obj)).items()
            if (value := getattr(obj, name)) != default}


@lru_cache(maxsize=None)
def defaults(cls) -> dict:
    """Each setting ``cls`` declares and its default, read from its fields once (shared: not
    to be changed)."""
    return {f.name: f.default for f in declared(cls)}


def given_or_made(cls, given, keywords: dict, caller: str, arg: str, make=None):
    """The settings a call runs with: ``given`` (an instance of ``cls`` passed as ``arg``=), or
    one made from the call's ``keywords`` (``make``, default ``cls(**keywords)``). Both given:
    each keyword must name a field, be a value the field takes and agree with ``given`` (a
    TpsimError otherwise)."""
    if given is None:
        return (make or (lambda kw: cls(**kw)))(keywords)
    if not isinstance(given, cls):
        raise ConfigError(arg, "", f"a tpsim.{cls.__name__}", given)
    rows = {f.name: (ok, f) for ok, f in _checks(cls)[2]}
    for name, value in keywords.items():
        if not hasattr(given, name):
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
        ok, f = rows.get(name, (lambda v: True, None))
        if not ok(value):           # a value no layout takes: said so, not "disagrees"
            raise ConfigError(f.metadata["flag"], "", expected(f), value)
        if getattr(given, name) != value:
            raise TpsimError(f"{caller}(): {arg}= has {name}={getattr(given, name)!r} and the "
                             f"keyword {name}={value!r} disagrees; give the setting once")
    return given
