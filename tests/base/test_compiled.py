"""tpsim.base.compiled: the methods dataclass writes for a tpsim module's classes are compiled
once and kept on disk; a class built from kept code behaves as one dataclass compiles, and any
trouble with the cache falls back to compiling."""
from __future__ import annotations

import builtins
import dataclasses
import os
import subprocess
import sys
import types

import pytest

from tpsim.base import compiled

FIELDS = "    a: int\n    b: float = 1.5\n    c: tuple = ()\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache directory and a process that has read and compiled nothing yet; every
    ``compile`` of a dataclass source counted."""
    monkeypatch.setenv("TPSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "_groups", {})
    monkeypatch.setattr(compiled, "_used", {})
    monkeypatch.setattr(compiled, "_compiled", set())
    fresh(monkeypatch)
    sources = []

    def counted(source, *args):
        sources.append(source)
        return builtins.compile(source, *args)
    monkeypatch.setattr(compiled, "compile", counted, raising=False)
    monkeypatch.setattr("atexit.register", lambda fn: fn)      # written when the test says
    monkeypatch.setattr(dataclasses, "exec", compiled._exec, raising=False)   # as installed
    return sources


def fresh(monkeypatch):
    """As a new process: nothing read from disk, nothing compiled."""
    monkeypatch.setattr(compiled, "_kept", None)
    compiled._groups.clear()
    compiled._used.clear()
    compiled._compiled.clear()


def build(monkeypatch, fields: str = FIELDS, module: str = "tpsim.example", frozen=True):
    """A dataclass ``C`` with ``fields``, defined in a module named ``module``."""
    mod = types.ModuleType(module)
    monkeypatch.setitem(sys.modules, module, mod)
    exec(f"from dataclasses import dataclass\n@dataclass(frozen={frozen})\nclass C:\n{fields}",
         mod.__dict__)
    return mod.C


def test_a_second_process_runs_the_kept_code_and_its_classes_are_the_same(cache, monkeypatch):
    first = build(monkeypatch)
    assert cache                                   # __init__, __repr__, __eq__, ... compiled
    compiled._write()
    fresh(monkeypatch)
    cache.clear()
    kept = build(monkeypatch)
    assert cache == []                             # every method from the kept code
    plain = build(monkeypatch, module="example")   # not tpsim's: compiled as dataclass does
    for cls in (first, kept, plain):
        x = cls(1, c=(2,))
        assert (x.a, x.b, x.c) == (1, 1.5, (2,))
        assert repr(x) == "C(a=1, b=1.5, c=(2,))"
        assert x == cls(1, 1.5, (2,)) and x != cls(2)
        assert hash(x) == hash(plain(1, c=(2,)))
        with pytest.raises(AttributeError):
            x.a = 3                                # frozen
    assert kept.__init__.__code__.co_code == plain.__init__.__code__.co_code


def test_only_tpsim_modules_are_kept(cache, monkeypatch):
    build(monkeypatch, module="example")
    assert cache == [] and compiled._used == {}


def test_an_edited_module_has_its_entries_rewritten(cache, monkeypatch):
    build(monkeypatch)
    compiled._write()
    fresh(monkeypatch)
    edited = build(monkeypatch, FIELDS + "    d: str = 'x'\n", frozen=False)
    assert cache and edited(1).d == "x"
    compiled._write()
    fresh(monkeypatch)
    cache.clear()
    build(monkeypatch, FIELDS + "    d: str = 'x'\n", frozen=False)
    assert cache == []
    assert compiled._group("tpsim.example") == compiled._used["tpsim.example"]


def test_a_damaged_or_absent_cache_is_compiling_again(cache, tmp_path, monkeypatch):
    build(monkeypatch)
    compiled._write()
    (entry,) = (tmp_path / "cache").iterdir()
    entry.write_bytes(b"\x00not marshal")
    fresh(monkeypatch)
    cache.clear()
    assert build(monkeypatch)(1).b == 1.5 and cache
    monkeypatch.setenv("TPSIM_CACHE_DIR", "")      # none kept
    entry.unlink()
    compiled._write()
    assert not entry.exists()


def test_a_second_tpsim_process_compiles_no_dataclass_source(tmp_path):
    from tests.conftest import REPO
    code = ("from tpsim.cli import main; main(['predict', '--model', 'gpt3', '--tp', '8']); "
            "from tpsim.base import compiled; import sys; "
            "print(len(compiled._compiled), len(compiled._used), file=sys.stderr)")
    env = {**os.environ, "TPSIM_CACHE_DIR": str(tmp_path / "cache")}
    seen = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=REPO, env=env, timeout=60).stderr.split()[-2:]
            for _ in range(2)]
    assert seen[0][0] != "0" and seen[0][0] == seen[0][1]     # every module compiled for
    assert seen[1] == ["0", seen[0][1]]                        # then none
