"""tpsim.base.record: a frozen dataclass whose shared __eq__, __hash__ and __repr__ behave as the
ones dataclass compiles, the same hash values included (memo keys and set orders unchanged)."""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tpsim.base.record import record


@dataclass(frozen=True)
class Plain:
    a: int
    b: float = 1.5
    c: tuple = ()
    scratch: dict = field(default_factory=dict, compare=False, repr=False)
    label: str = field(default="x", hash=False)


@record
class Shared:
    a: int
    b: float = 1.5
    c: tuple = ()
    scratch: dict = field(default_factory=dict, compare=False, repr=False)
    label: str = field(default="x", hash=False)


@given(st.integers(), st.floats(allow_nan=False), st.tuples(st.integers()), st.text(max_size=3))
def test_the_shared_methods_are_dataclasses_own(a, b, c, label):
    p, s = Plain(a, b, c, {"k": 1}, label), Shared(a, b, c, {"k": 2}, label)
    assert hash(s) == hash(p)
    assert repr(s) == repr(p).replace("Plain", "Shared")
    assert s == Shared(a, b, c, {}, label) and s != Shared(a + 1, b, c, {}, label)
    assert (s == p) is False and s.__eq__(p) is NotImplemented


def test_still_a_frozen_dataclass():
    s = Shared(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.a = 2
    assert [f.name for f in dataclasses.fields(s)] == ["a", "b", "c", "scratch", "label"]
    assert dataclasses.replace(s, a=3) == Shared(3)
    assert pickle.loads(pickle.dumps(s)) == s


def test_what_the_class_defines_is_kept_and_options_pass_through():
    @record(kw_only=True)
    class Own:
        a: int
        __hash__ = lambda self: 7      # noqa: E731

    @record
    class One:
        a: int

    with pytest.raises(TypeError):
        Own(1)
    assert hash(Own(a=1)) == 7 and Own(a=1) == Own(a=1)
    assert hash(One(4)) == hash((4,)) and repr(One(4)).endswith(".One(a=4)")   # __qualname__
