"""Numbers pinned across refactors: every time, FLOP and byte of a dozen configurations equals
the golden ``--json`` to 1e-12 relative (``tests/goldens/make.py`` writes them; regenerate only
for a change meant to move numbers). Keys may be added to the outputs, none may disappear.

Differences of two equal sums (``host_wait_s`` = total - compute - exposed) carry float residue
of ~1e-19 s; an absolute 1e-15 (a femtosecond, or a femto-FLOP) absorbs it and nothing else.
"""
from __future__ import annotations

import json
import math

import pytest

from tests.conftest import REPO

GOLDENS = sorted((REPO / "tests" / "goldens").glob("*.json"))


def _mismatches(want, got, path="$"):
    if isinstance(want, dict):
        if not isinstance(got, dict):
            yield f"{path}: expected a mapping"
            return
        for k, v in want.items():
            if k not in got:
                yield f"{path}.{k}: missing"
            else:
                yield from _mismatches(v, got[k], f"{path}.{k}")
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            yield f"{path}: expected a list of {len(want)}"
            return
        for i, (a, b) in enumerate(zip(want, got)):
            yield from _mismatches(a, b, f"{path}[{i}]")
    elif isinstance(want, float) or (isinstance(want, int) and not isinstance(want, bool)
                                     and isinstance(got, float)):
        if not isinstance(got, (int, float)) or isinstance(got, bool) or \
                not math.isclose(want, got, rel_tol=1e-12, abs_tol=1e-15):
            yield f"{path}: {want!r} != {got!r}"
    elif want != got:
        yield f"{path}: {want!r} != {got!r}"


def test_goldens_exist():
    assert len(GOLDENS) >= 12


@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: p.stem)
def test_numbers_equal_the_golden(path):
    import sys
    sys.path.insert(0, str(path.parent))
    from make import run
    golden = json.loads(path.read_text())
    bad = list(_mismatches(golden["output"], run(golden["args"])))
    assert not bad, f"{len(bad)} differences, first: {bad[:5]}"


def test_a_changed_number_is_caught():
    """The comparison itself can fail: one relative 1e-9 change is a mismatch."""
    want = {"a": [1.0, {"t_s": 0.005}]}
    assert list(_mismatches(want, {"a": [1.0, {"t_s": 0.005 * (1 + 1e-9)}]}))
    assert list(_mismatches(want, {"a": [1.0, {}]}))
    assert not list(_mismatches(want, {"a": [1.0, {"t_s": 0.005, "new_key": 1}]}))
