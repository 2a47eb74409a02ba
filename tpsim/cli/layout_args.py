"""Command-line flags made from a settings dataclass's fields (:class:`~tpsim.spec.layout.Layout`,
:class:`~tpsim.spec.serving.ServingLayout`), as Megatron-core makes its argparse arguments from
its config dataclasses: each field's flag, help, default and accepted values are read from its
metadata (:func:`tpsim.spec.settings.setting`), so a setting is declared once.

By kind: ``count`` a positive integer, ``tokens`` one written 8k as well; ``flag`` a switch (``--no-X`` where the default is
True); ``choice`` and ``name`` one of the field's choices; ``probability`` a number; ``price``
a number >= 0; ``names`` one or more names, apart or as a comma list; ``rate`` a positive
number or inf; ``release`` an NCCL release as :mod:`tpsim.cluster.nccl` reads it
(``--nccl``, on every command that prices collectives: one without a layout adds that field
alone). With ``lists`` the fields that take comma lists (``--tp 1,2,4,8``) do: ``tpsim
predict`` compares every combination. The values are checked by the dataclass itself when
:func:`layout_from_args` makes it: one place, one error per bad value.
"""
from __future__ import annotations

import argparse
from dataclasses import Field

from ..spec.frameworks import FRAMEWORKS, with_framework
from ..spec.layout import Layout
from ..spec.settings import declared
from ..base.errors import clip
from .common import (TOKENS_HELP, StoreOnce, natural_int, positive_int, positive_rate, price,
                     probability, token_count)
from .lists import braces, choice_list, int_list, probability_list, rate_list, token_list


def dest(f: Field) -> str:
    """The argparse attribute that holds field ``f``: its flag's name (``--seq``: seq)."""
    return f.metadata["flag"].lstrip("-").replace("-", "_")


def cli_flag(f: Field) -> str:
    """The flag a user types: a switch whose default is on is turned off (``--no-X``)."""
    flag = f.metadata["flag"]
    return f"--no-{flag[2:]}" if f.metadata["kind"] == "flag" and f.default is True else flag


def _help(f: Field, listed: bool, extra: str) -> str:
    text = f.metadata["help"] + extra + (TOKENS_HELP if f.metadata["kind"] == "tokens" else "")
    if listed and f.default is not None and "default" not in text:
        text += f" (default: {f.default})"       # a list's default shows as its one value
    return text


def _listed_default(f: Field, listed: bool):
    """A comma list's default: its one value, or None (not a list of None: the help then says
    no default of its own)."""
    return (f.default,) if listed and f.default is not None else f.default


def _count_kwargs(f: Field, listed: bool) -> dict:
    """A count's parser: a token count takes 8k (:func:`~tpsim.cli.common.token_count`)."""
    tokens = f.metadata["kind"] == "tokens"
    if listed:
        return {"type": token_list if tokens else int_list,
                "default": None if f.default is None else (f.default,),
                **({"metavar": "TOKENS"} if tokens else {})}
    one = token_count if tokens else positive_int if f.metadata["least"] >= 1 else natural_int
    return {"type": one, "default": f.default, **({"metavar": "TOKENS"} if tokens else {})}


def _choice_kwargs(f: Field, listed: bool) -> dict:
    choices = f.metadata["choices"]
    if listed:
        return {"type": choice_list(choices), "metavar": braces(choices),
                "default": None if f.default is None else (f.default,)}
    if not choices:                        # a free name, checked by the dataclass
        return {"default": f.default}
    kind = type(choices[0])
    return {"choices": choices, "default": f.default,
            **({"type": natural_int} if kind is int else {})}    # int() takes any script's digits


def _release_kwargs(f: Field, listed: bool) -> dict:
    """An NCCL release as :mod:`tpsim.cluster.nccl` reads one (``v2.18.5-1``: 2.18), one of
    the releases it knows, given once; ``listed``: a comma list of them."""
    from ..cluster.nccl import NCCL_RELEASES, nccl_release
    parse = choice_list(NCCL_RELEASES, nccl_release)

    def one(text: str) -> str:
        out = parse(text)
        if len(out) > 1:
            raise argparse.ArgumentTypeError(f"expected one release, got {clip(repr(text), 60)}")
        return out[0]
    one.__name__ = "release"
    return {"type": parse if listed else one, "default": _listed_default(f, listed),
            "action": StoreOnce,
            "metavar": "{%s,%s,...,%s}" % (f.default, NCCL_RELEASES[1], NCCL_RELEASES[-1])}


def argument(f: Field, lists: bool = False, extra: str = "") -> tuple[str, dict]:
    """(flag, argparse keyword arguments) of field ``f``; ``lists``: a comma list where the
    field takes one."""
    meta = f.metadata
    listed = lists and meta["lists"]
    kwargs = {"dest": dest(f), "help": _help(f, listed, extra)}
    kind = meta["kind"]
    if kind == "flag":
        kwargs["action"] = "store_false" if f.default is True else "store_true"
    elif kind in ("count", "tokens"):
        kwargs.update(_count_kwargs(f, listed))
    elif kind == "probability":
        kwargs.update(type=probability_list if listed else probability,
                      default=_listed_default(f, listed))
    elif kind == "rate":
        kwargs.update(type=rate_list if listed else positive_rate,
                      default=_listed_default(f, listed))
    elif kind == "price":
        kwargs.update(type=price, default=f.default)
    elif kind == "release":               # the default shown, listed or not
        kwargs.update(_release_kwargs(f, listed), help=meta["help"] + (
            "; a comma list compares them" if listed else "") + extra + f" (default: {f.default})")
    elif kind == "names":                  # --x a b or --x a,b (Megatron-LM: nargs)
        kwargs.update(type=choice_list(f.metadata["choices"]), nargs="+", action=_Joined,
                      metavar=braces(f.metadata["choices"]), default=f.default)
    else:
        kwargs.update(_choice_kwargs(f, listed))
    return cli_flag(f), kwargs


class _Joined(argparse.Action):
    """Names given apart or as comma lists, one tuple (``--recompute-modules mlp moe_act``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(x for v in values for x in v))


def _fields(cls, names) -> list[Field]:
    by_name = {f.name: f for f in declared(cls)}
    return [by_name[n] for n in names] if names is not None else list(by_name.values())


def list_names(cls=Layout, names=None) -> tuple[str, ...]:
    """The argparse names of ``cls``'s fields ``names`` (default: every field) declared
    ``lists`` (:func:`tpsim.spec.settings.setting`), which take a comma list, in the order the
    fields are declared: the order their flags are listed in and their combinations vary
    (:func:`tpsim.cli.lists.combinations`, the last fastest)."""
    return tuple(dest(f) for f in _fields(cls, names) if f.metadata["lists"])


def add_layout_arguments(parser, names=None, *, cls=Layout, lists: bool = False,
                         extra: dict | None = None) -> None:
    """Add the flags of ``cls``'s fields ``names`` (default: every field, in order) to
    ``parser``; ``lists``: comma lists where a field takes one; ``extra``: text a command adds
    to a field's help, by field name."""
    for f in _fields(cls, names):
        flag, kwargs = argument(f, lists, (extra or {}).get(f.name, ""))
        alias = f.metadata.get("megatron")     # Megatron-LM's name for the same setting
        if alias:
            kwargs["help"] += f" (Megatron-LM: {alias})"
        parser.add_argument(flag, **kwargs)
        if alias:                              # its own action: errors name the flag typed
            parser.add_argument(alias, **{**kwargs, "help": argparse.SUPPRESS,
                                          "default": argparse.SUPPRESS})


def add_pin_arguments(parser, names, *, cls=Layout, what: str = "every value") -> None:
    """Flags that pin fields ``names`` of ``cls`` to given values or leave them to ``what``
    (None when not given): a count or choice takes a comma list, a switch pins on (``--X``)
    or off (``--no-X``)."""
    for f in _fields(cls, names):
        flag, alias = f.metadata["flag"], f.metadata.get("megatron")
        help_ = f"{f.metadata['help']}: pin to this (default: {what})" + \
            (f" (Megatron-LM: {alias})" if alias else "")
        if f.metadata["kind"] == "flag":
            kwargs = {"dest": dest(f), "default": None, "help": help_,
                      "action": argparse.BooleanOptionalAction}
        else:
            _, kwargs = argument(f, lists=True)
            kwargs.update(default=None, help=help_.replace("this", "these (a comma list)"))
        parser.add_argument(flag, **kwargs)
        if alias:                              # Megatron-LM's name pins the same field
            parser.add_argument(alias, **{**kwargs, "help": argparse.SUPPRESS,
                                          "default": argparse.SUPPRESS})


def add_framework_argument(parser) -> None:
    """``--framework``: the preset of a training stack (:mod:`tpsim.spec.frameworks`)."""
    parser.add_argument("--framework", default=None, choices=tuple(FRAMEWORKS),
                        help="the knobs a training stack fixed, set where you left them at "
                             "their defaults; refuses what the stack could not run "
                             "(megatron-core: the defaults; each preset's settings and "
                             "sources: tpsim.spec.frameworks)")


def layout_values(args: argparse.Namespace, names=None, cls=Layout, given=None,
                  preset: bool = True) -> dict:
    """The values the parsed ``args`` give fields ``names`` of ``cls``, by field name;
    ``given``: values by argparse name that replace the parsed ones (one combination of the
    comma lists); under ``--framework`` (unless ``preset`` is False) its preset fills the knobs
    left at their defaults (:func:`tpsim.spec.frameworks.with_framework`)."""
    given = given or {}
    fields = _fields(cls, names)
    out = {f.name: given.get(dest(f), getattr(args, dest(f))) for f in fields
           if hasattr(args, dest(f))}
    framework = getattr(args, "framework", None) if preset else None
    if framework is None or cls is not Layout:
        return out
    return with_framework(framework, out, {f.name: f.default for f in fields})


def layout_from_args(args: argparse.Namespace, names=None, cls=Layout, given=None):
    """The ``cls`` (a :class:`~tpsim.spec.layout.Layout` by default) the parsed ``args`` set
    (:func:`layout_values`); a field without a flag keeps its default."""
    return cls(**layout_values(args, names, cls, given))
