"""The methods ``dataclass`` writes for tpsim's classes, compiled once and kept on disk.

``dataclasses.dataclass`` writes the source of a class's ``__init__`` (and ``__repr__``,
``__eq__``, ``__hash__``, the frozen ``__setattr__`` and ``__delattr__``) and compiles it at
every import: some 150 kB of source for the sixty classes a ``tpsim predict`` process builds,
~26 of the ~60 CPU ms of its imports. Between :func:`install` and :func:`uninstall` (the
package's own imports, :func:`quiet_import`; a command, :func:`tpsim.cli.main`, for the whole
of a ``tpsim`` process or the call from Python), ``dataclass`` executes, for a class of a
``tpsim.`` module, the code object compiled from exactly the source it wrote (the text is the
key), kept from an earlier process; any other class, and any text not kept, is compiled as
``dataclass`` does. The classes are the same either way: the code is
what ``compile`` returns for that text, executed with the same namespaces.

The entries live in one :mod:`marshal` file per tpsim package directory beside the parsed
presets (:func:`tpsim.base.parsed.cache_dir`; ``TPSIM_CACHE_DIR=""``: none kept), grouped by
module and stamped with the Python build. A process that compiled anything rewrites, when it
exits, the groups of the modules it compiled for with the texts it used (a module builds its
classes when imported, so an edited module's old texts go); any failure to read or write falls
back silently to compiling. The directory is trusted as a package's ``__pycache__`` is: what it
holds runs.
"""
from __future__ import annotations

import dataclasses
import gc
import importlib
import marshal
import os
import sys

from .parsed import cache_dir

_STAMP = ("tpsim dataclass methods", sys.version, marshal.version)
_CODE = type(cache_dir.__code__)
_kept: dict | None = None     # module -> its group in marshal's bytes, as read from disk
_groups: dict = {}            # module -> {source: code}, the groups read so far
_used: dict = {}              # module -> {source: code}, what this process executed
_compiled: set = set()        # the modules this process compiled some source for


def install() -> None:
    """Make ``dataclass`` look its sources up here (module docstring); idempotent. Undone by
    :func:`uninstall`: ``import tpsim`` installs it for its own imports only, a ``tpsim``
    process for its whole life (:func:`tpsim.cli.main`)."""
    dataclasses.exec = _exec    # shadows the built-in inside dataclasses only


def quiet_import(module: str):
    """``module`` imported as tpsim's own imports are (``import tpsim``, its lazy names, a
    command's modules): with the kept code (:func:`install`, undone after unless already in
    effect) and the collector paused, the objects it builds (some 16,000 for the training
    model, and no garbage) joining the collector's oldest generation without a pass over them
    (as objects that outlived its younger passes would) unless the process keeps objects
    frozen of its own; the collector left as it was."""
    collecting, kept = gc.isenabled(), installed()
    gc.disable()
    try:
        install()
        return importlib.import_module(module)
    finally:
        if not kept:
            uninstall()         # the user's process compiles its own classes as it did
        if gc.get_freeze_count() == 0:
            gc.freeze()         # every tracked object to the permanent generation,
            gc.unfreeze()       # then all of them to the oldest
        if collecting:
            gc.enable()


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return getattr(dataclasses, "exec", None) is _exec


def uninstall() -> None:
    """``dataclass`` compiles every source again, as without :func:`install`."""
    if installed():
        del dataclasses.exec


def _exec(source, scope=None, local=None, /):
    """``exec`` as ``dataclass`` calls it, with the kept code for a tpsim module's text."""
    name = scope.get("__name__") if isinstance(scope, dict) else None
    if isinstance(source, str) and isinstance(name, str) and name.startswith("tpsim."):
        source = _code(name, source)
    exec(source, scope, local)


def _code(module: str, source: str):
    if module not in _groups:
        _groups[module] = _group(module)
    code = _groups[module].get(source)
    if code is None:
        code = compile(source, "<string>", "exec")
        if not _compiled:
            import atexit
            atexit.register(_write)
        _compiled.add(module)
    _used.setdefault(module, {})[source] = code
    return code


def _path() -> str | None:
    from zlib import crc32
    where = cache_dir()
    if where is None:
        return None
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(where, f"dataclasses.{crc32(package.encode('utf-8', 'replace')):08x}"
                               ".marshal")


def _group(module: str) -> dict:
    """``module``'s kept texts and their code, decoded only when one of its classes is built
    ({} when none is kept, or one entry is not a text and its code)."""
    global _kept
    if _kept is None:
        _kept = _read()
    try:
        group = marshal.loads(_kept[module])
        if all(isinstance(s, str) and isinstance(c, _CODE) for s, c in group.items()):
            return group
    except Exception:           # none kept, or damaged: compile
        pass
    return {}


def _read() -> dict:
    """The kept groups, each in marshal's bytes ({} when none can be read)."""
    try:
        path = _path()
        if path is None:
            return {}
        with open(path, "rb") as f:
            stamp, groups = marshal.loads(f.read())
        if stamp != _STAMP or not isinstance(groups, dict):
            return {}
        return {m: g for m, g in groups.items() if isinstance(g, bytes)}
    except Exception:           # missing, unreadable or damaged: compile
        return {}


def _write() -> None:
    """Rewrite the groups of the modules compiled for (written whole, then renamed into
    place: a reader never sees half a file)."""
    try:
        path = _path()
        if path is None:
            return
        groups = _read()        # as another process may have left it
        groups.update({m: marshal.dumps(_used[m]) for m in _compiled})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(marshal.dumps((_STAMP, groups)))
        os.replace(tmp, path)
    except Exception:           # nowhere to write: compiled again next time
        return
