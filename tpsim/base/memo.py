"""One bounded memo for every cache tpsim keeps, keyed by value.

A prediction, a sweep and a search ask the same pure questions again and again (the price of a
GEMM, a collective on a group, a layer's simulation, a topology read from its file), so each
answer is kept in a :class:`Memo`: a mapping of at most ``maxsize`` entries that either drops
its least recently used entry (``lru=True``) or empties itself when full (``lru=False``: the
cheapest hit, a plain dict look-up, for the hottest memos). ``info()`` says hits, misses and
size; :func:`memos` lists every live memo and :func:`clear_all` empties them (tests, benches).

Keys are values, not object identities, so two equal inputs built separately share an entry and
an input's id can never be reused under a stale entry:

* the frozen dataclasses read from files (a ``Topology``, its ``Device`` and levels, a
  ``ModelConfig``) and a search's ``Run`` hash with :func:`value_hash`: their compared fields,
  dicts and lists included, hashed once per object and kept on it;
* a file is keyed by :func:`file_key`: its absolute path as given and the version the file
  system reports (device, inode, mtime_ns, size, ctime_ns), so :meth:`Memo.load` reads a YAML
  file once and reads it again once it has changed. A file changed less than
  :data:`RECENT_NS` ago is read every time (git's racy-clean rule): a rewrite within the file
  system's clock tick, same size and inode, would leave the version as it was;
* op graph templates compare by identity (``eq=False``): each is built once per switch set and
  kept (:func:`tpsim.layer.graph.layer_template`), and the key holds it, so identity is value.

:func:`memoised` is ``functools.lru_cache`` on this memo (positional arguments): the memos of
functions of objects (a search's ``Run``, a ``ModelConfig``) use it so that every cache has the
same key rules and reports through :func:`memos`. ``functools.lru_cache`` stays where a
function takes only scalars and tuples of them (``chunk_offsets``, ``activation_counts``): there
the key is already its value and the C implementation is the cheapest. Dicts that live only as
long as one call or one object (a step graph's bucket and p2p closures, a ``Pricing``'s
groups) are scratch, not memos: they die with what they serve.

A memo answers for the code as it is: whoever swaps a cost function (a test's monkeypatch)
calls :func:`clear_all`, or old answers outlive it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import stat
import time
import weakref
from collections import OrderedDict
from typing import Any, Callable, NamedTuple

_MISSING = object()
RECENT_NS = 2 * 10**9      # a file changed this recently is not kept (coarse clocks: 1-2 s)
_clock = time.time_ns
_LIVE: weakref.WeakSet = weakref.WeakSet()


class MemoInfo(NamedTuple):
    """What :meth:`Memo.info` reports, as ``functools.lru_cache``'s ``cache_info()``."""
    hits: int
    misses: int
    maxsize: int
    currsize: int


class Memo:
    """At most ``maxsize`` answers by key: ``get(key, make, *args)`` returns the kept answer or
    keeps ``make(*args)``. ``lru``: past ``maxsize`` the least recently used entry goes; else
    the memo is emptied (every entry is equally cheap to remake and a hit costs one look-up)."""
    __slots__ = ("name", "maxsize", "lru", "hits", "misses", "_data", "__weakref__")

    def __init__(self, name: str, maxsize: int, lru: bool = False):
        if maxsize < 1:
            raise ValueError(f"a memo holds at least one entry, not {maxsize}")
        self.name, self.maxsize, self.lru = name, maxsize, lru
        self.hits = self.misses = 0
        self._data: dict = OrderedDict() if lru else {}
        _LIVE.add(self)

    def get(self, key, make: Callable, *args) -> Any:
        """The answer kept under ``key``, else ``make(*args)``, kept (an exception is not)."""
        data = self._data
        value = data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            value = make(*args)
            if len(data) >= self.maxsize:
                if self.lru:
                    data.popitem(last=False)
                else:
                    data.clear()
            data[key] = value
            return value
        self.hits += 1
        if self.lru:
            data.move_to_end(key)
        return value

    def load(self, path, read: Callable, directory: bool = False) -> Any:
        """``read(path)`` once per version of the file (:func:`file_key`); a path without a
        key is read every time (one just changed; one that is not a regular file, so that
        ``read`` says what is wrong with it).
        ``directory``: ``path`` is a directory, ``read`` lists it (a version per mtime: adding,
        removing or renaming an entry changes it)."""
        key = file_key(path, directory)
        if key is None:
            return read(path)
        return self.get(key, read, path)

    def info(self) -> MemoInfo:
        return MemoInfo(self.hits, self.misses, self.maxsize, len(self._data))

    def clear(self) -> None:
        """Forget every entry and the counts."""
        self._data.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"Memo({self.name!r}, {self.info()})"

    def __reduce__(self):
        """A memo travels empty (to a search's worker processes, inside a topology)."""
        return Memo, (self.name, self.maxsize, self.lru)


def memos() -> list[Memo]:
    """Every live memo (the per-object ones of live topologies and templates included)."""
    return sorted(_LIVE, key=lambda m: m.name)


def clear_all() -> None:
    """Empty every live memo: the next call of anything memoised computes afresh."""
    for memo in list(_LIVE):
        memo.clear()


def memoised(maxsize: int, lru: bool = True, name: str | None = None):
    """Decorator: the function's answers kept in a :class:`Memo` keyed by its positional
    arguments; ``cache_info()``, ``cache_clear()`` and ``memo`` as on ``lru_cache``."""
    def wrap(fn):
        memo = Memo(name or f"{fn.__module__}.{fn.__qualname__}", maxsize, lru)

        @functools.wraps(fn)
        def call(*args):
            return memo.get(args, fn, *args)
        call.memo, call.cache_info, call.cache_clear = memo, memo.info, memo.clear
        return call
    return wrap


def file_key(path, directory: bool = False) -> tuple | None:
    """(absolute path as given, device, inode, mtime_ns, size, ctime_ns) of a regular file (a
    directory with ``directory``), or None when it cannot be stat'ed, is of another kind or
    changed less than :data:`RECENT_NS` ago. The path as given (made absolute, not resolved)
    keeps each spelling's own loaded object, whose error messages name it."""
    try:
        text = os.path.abspath(path)
        st = os.stat(text)
    except (OSError, ValueError, TypeError):
        return None
    if not (stat.S_ISDIR if directory else stat.S_ISREG)(st.st_mode):
        return None
    if _clock() - max(st.st_mtime_ns, st.st_ctime_ns) < RECENT_NS:
        return None
    return (text, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)


def freeze(value) -> Any:
    """A hashable value equal for equal inputs: a dataclass as its type and compared fields, a
    dict as the frozenset of its items (equal dicts are equal in any order), lists and tuples
    as tuples, sets as frozensets; anything else as itself."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__,) + tuple(
            freeze(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare)
    if isinstance(value, dict):
        return frozenset((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    return value


# The attribute a value hash is kept under names this process's string-hash seed: an object
# unpickled from a process with another seed (a search's spawned workers) computes its own.
_HASH_ATTR = f"_value_hash_{hash('tpsim.base.memo') & 0xffffffff:x}"


def value_hash(obj) -> int:
    """``hash(freeze(obj))``, computed once per object and kept on it: the ``__hash__`` of a
    frozen dataclass whose fields hold dicts (which dataclasses cannot hash) or that is hashed
    often. The object must not change once hashed (frozen; set-up in ``validate`` comes
    first)."""
    h = obj.__dict__.get(_HASH_ATTR)
    if h is None:
        h = obj.__dict__[_HASH_ATTR] = hash(freeze(obj))
    return h
