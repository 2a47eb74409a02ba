"""Parsed preset files kept on disk between runs, so that a fresh ``tpsim`` process neither
imports PyYAML nor parses the shipped model and topology files it has parsed before.

An entry holds the file's absolute path, its whole text and the mapping parsed from it, in
:mod:`marshal`'s format (a built-in module: nothing to import); it answers only for that exact
text and path, Python version and :data:`LOADER` (the loader's rules: raised when
:func:`tpsim.base.files.load_yaml` changes them), so an edited or moved file is parsed afresh
and its entry rewritten. A file is kept only once it has parsed and passed every
check of :func:`tpsim.base.files.load_yaml`. The entries live in ``$TPSIM_CACHE_DIR``, else
``$XDG_CACHE_HOME/tpsim``, else ``~/.cache/tpsim`` (``TPSIM_CACHE_DIR=""``: none kept); any
failure to read or write one (no home, a read-only disk, a damaged entry, a value marshal
cannot hold) falls back silently to parsing.
"""
from __future__ import annotations

import marshal
import os
import sys

LOADER = 1
_STAMP = ("tpsim parsed file", LOADER, sys.version_info[:2], marshal.version)


def cache_dir() -> str | None:
    """Where the entries live (None: nowhere)."""
    if "TPSIM_CACHE_DIR" in os.environ:
        return os.environ["TPSIM_CACHE_DIR"] or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tpsim") if os.path.isabs(base) else None


def _entry(path: str) -> str | None:
    from zlib import crc32
    where = cache_dir()
    if where is None:
        return None
    name = os.path.basename(path)
    return os.path.join(where, f"{name}.{crc32(path.encode('utf-8', 'replace')):08x}.marshal")


def _key(path: str, text: str) -> tuple:
    return (*_STAMP, path, text)


def kept(path, text: str):
    """The mapping kept for ``path`` holding exactly ``text``, or None."""
    try:
        path = os.path.abspath(path)
        entry = _entry(path)
        if entry is None:
            return None
        with open(entry, "rb") as f:
            key, data = marshal.loads(f.read())
        return data if key == _key(path, text) and isinstance(data, dict) else None
    except Exception:       # a missing, unreadable or damaged entry: parse the file
        return None


def keep(path, text: str, data: dict) -> None:
    """Keep ``data``, parsed and checked from ``path``'s ``text`` (written whole, then renamed
    into place: a reader never sees half an entry)."""
    try:
        path = os.path.abspath(path)
        entry = _entry(path)
        if entry is None:
            return
        blob = marshal.dumps((_key(path, text), data))
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        tmp = f"{entry}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, entry)
    except Exception:       # nowhere to write, or a value marshal cannot hold: not kept
        return
