"""Frozen dataclasses whose comparison, hash and repr are shared rather than compiled per class.

``@record`` is ``@dataclass(frozen=True)``: the same fields, ``__init__``, immutability,
``dataclasses.fields`` and ``replace``. ``dataclass`` writes the source of every method of
every class and compiles it; a ``tpsim`` process builds some fifty frozen classes before it
prints anything, and those compilations were about half of its start-up. Here ``dataclass``
compiles ``__init__`` and the frozen ``__setattr__``/``__delattr__`` only, and the class gets
``__eq__``, ``__hash__`` and ``__repr__`` that behave as ``dataclass``'s own:

* ``a == b``: the fields with ``compare=True``, as a tuple, between objects of the same class
  (else NotImplemented);
* ``hash(a)``: the hash of the tuple of the fields with ``compare=True`` (and ``hash`` not
  False), so the same values as ``dataclass``'s; an ``__eq__`` or ``__hash__`` the class body
  defines is kept, as ``dataclass`` keeps it;
* ``repr(a)``: ``Name(field=value, ...)`` over the fields with ``repr=True``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter


def record(cls=None, /, **options):
    """``@record`` or ``@record(kw_only=True, ...)``: a frozen dataclass (module docstring);
    ``options`` go to ``dataclass`` (not eq, repr or frozen)."""
    def wrap(cls):
        own = {k for k in ("__eq__", "__hash__", "__repr__") if k in cls.__dict__}
        cls = dataclass(frozen=True, eq=False, repr=False, **options)(cls)
        every = fields(cls)
        compared = _getter([f.name for f in every if f.compare])
        hashed = _getter([f.name for f in every if f.compare if f.hash is not False])
        shown = [f.name for f in every if f.repr]

        def __eq__(self, other):
            if other.__class__ is self.__class__:
                return compared(self) == compared(other)
            return NotImplemented

        def __hash__(self):
            return hash(hashed(self))

        def __repr__(self):
            return (f"{self.__class__.__qualname__}("
                    + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")")
        for name, fn in (("__eq__", __eq__), ("__hash__", __hash__), ("__repr__", __repr__)):
            if name not in own:
                fn.__qualname__ = f"{cls.__qualname__}.{name}"
                setattr(cls, name, fn)
        return cls
    return wrap if cls is None else wrap(cls)


def _getter(names: list[str]):
    """The tuple of ``names``' values of an object (``attrgetter`` of one name gives the bare
    value, of none nothing: both made tuples)."""
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    if not names:
        return lambda obj: ()
    return attrgetter(*names)
