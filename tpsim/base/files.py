"""Where tpsim reads its input files: regular files only (a FIFO or a device is refused, not
waited on), at most MAX_FILE_BYTES of UTF-8, each key once, at most MAX_VALUES values once YAML
aliases expand (:func:`read_text`, :func:`load_yaml`, :func:`load_json`); and the shipped files
behind ``--model``/``--topology`` (:func:`shipped_files`, :func:`shipped_or_path`). Every
failure is a :class:`~tpsim.base.errors.ConfigError` naming the file.
"""
from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path
from typing import Any

from . import parsed
from .errors import ConfigError
from .memo import Memo

MAX_FILE_BYTES = 16 * 2**20  # the largest file tpsim reads (YAML, JSON, CSV)
MAX_VALUES = 100_000         # values in one document, aliases counted each time they are used


@functools.cache
def _yaml() -> tuple:
    """(PyYAML, the loader, its duplicate-key error): imported at the first parse, which a
    preset kept parsed (:mod:`tpsim.base.parsed`) never needs."""
    import yaml

    class DuplicateKey(yaml.YAMLError):
        def __init__(self, key, first: int, again: int):
            super().__init__(f"key {key!r} given twice")
            self.key, self.first, self.again = key, first, again

    # libyaml's safe loader when PyYAML was built with it (5x faster on the predict path)
    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        """The safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
        one silently; YAML 1.2 forbids duplicates). Keys brought in by a ``<<`` merge may be
        overridden, as YAML intends."""

        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:      # an unhashable key: the constructor itself refuses it
                    continue
            return super().construct_mapping(node, deep)
    return yaml, Loader, DuplicateKey


def read_text(path: str | Path, what: str) -> str:
    """The text of ``path``: a regular file of at most MAX_FILE_BYTES bytes of UTF-8.

    A directory, FIFO or device (/dev/zero) is refused before anything is read (a FIFO is
    opened non-blocking, so no writer is waited for); every failure is a ConfigError naming
    the file and ``what`` was expected (e.g. "a readable YAML file").
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as e:      # ValueError: a NUL byte in the name
        raise ConfigError(str(p), "", what, getattr(e, "strerror", None) or str(e)) from None
    mode = os.fstat(fd).st_mode          # before fdopen, which refuses a directory itself
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) \
            else "a device or socket"
        raise ConfigError(str(p), "", f"{what} (a regular file)", kind)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise ConfigError(str(p), "", what, e.strerror) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(p), "", f"{what} of at most {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), "", f"{what} in UTF-8 (byte {e.start} is not UTF-8)") from None


def _too_many_values(data: Any) -> bool:
    """More than MAX_VALUES values once aliases are expanded (a 'billion laughs' document)."""
    stack, n = [data], 0
    while stack:
        v = stack.pop()
        n += 1
        if n > MAX_VALUES:
            return True
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping, each key once, of bounded size. A shipped
    file (one of a directory :func:`shipped_files` lists) is parsed once and kept parsed on
    disk for the next process (:mod:`tpsim.base.parsed`), by its exact text."""
    p = Path(path)
    text = read_text(p, "a readable YAML file")
    shipped = p.parent in _SHIPPED_DIRS
    data = parsed.kept(p, text) if shipped else None
    if data is None:
        data = _parse_yaml(p, text)
        if shipped:
            parsed.keep(p, text, data)
    return data


def _parse_yaml(p: Path, text: str) -> dict:
    yaml, loader, duplicate = _yaml()
    try:
        data = yaml.load(text, Loader=loader)
    except duplicate as e:
        raise ConfigError(str(p), str(e.key), f"each key once (line {e.first}, again at line "
                          f"{e.again})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(str(p), "", f"valid YAML (parse error at {where})") from None
    except (ValueError, OverflowError, RecursionError) as e:   # e.g. a date 2020-13-01
        raise ConfigError(str(p), "", "valid YAML values", str(e)) from None
    if _too_many_values(data):
        raise ConfigError(str(p), "", f"a document of at most {MAX_VALUES} values (aliases "
                          "count each time they are used)")
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "a YAML mapping at the top level", type(data).__name__)
    return data


class _DuplicateKey(Exception):
    """A JSON object's key given twice."""
    def __init__(self, key):
        super().__init__(f"key {key!r} given twice")
        self.key = key


def _refuse_duplicates(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_json(path: str | Path, what: str = "a readable JSON file") -> Any:
    """Read a JSON file: each key once per object, nesting and size bounded."""
    import json                 # a JSON input (a Hugging Face config): not imported at start-up
    p = Path(path)
    text = read_text(p, what)
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as e:
        raise ConfigError(str(p), str(e.key), "each key once per object") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(p), "", f"valid JSON (line {e.lineno}: {e.msg})") from None
    except ValueError as e:               # an integer past Python's 4300-digit limit
        raise ConfigError(str(p), "", "valid JSON numbers", str(e)) from None
    except RecursionError:
        raise ConfigError(str(p), "", "JSON nested less than ~900 levels deep") from None
    if _too_many_values(data):
        raise ConfigError(str(p), "", f"a document of at most {MAX_VALUES} values")
    return data


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):             # a name too long for the file system, a NUL byte
        return False


_LISTINGS = Memo("shipped file lists", 16, lru=True)
_SHIPPED_DIRS: set[Path] = set()     # the directories listed: their files are kept parsed


def shipped_files(directory: Path) -> dict[str, Path]:
    """Name -> path of ``directory``'s YAML files, sorted by name: listed once per version of
    the directory (:meth:`tpsim.base.memo.Memo.load`), a copy each call."""
    _SHIPPED_DIRS.add(Path(directory))
    return dict(_LISTINGS.load(directory, _yaml_files, directory=True))


def _yaml_files(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(Path(directory).glob("*.yaml"))}


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")     # a Hugging Face Hub id: owner/name, no suffix


def shipped_or_path(name_or_path: str | Path, shipped: dict[str, Path], flag: str,
                    kind: str, files: str = "a path to a YAML file") -> Path:
    """The file behind ``--model``/``--topology``: a path as given (a .yaml/.yml file, or a
    .json one: a Hugging Face config.json; a directory holding config.json), else a shipped
    name; an unknown name suggests the closest shipped ones."""
    if not isinstance(name_or_path, (str, Path)):
        raise ConfigError(flag, "", f"a shipped {kind} name or a path", name_or_path)
    text = str(name_or_path)
    if not text.strip():                  # Path("") is the working directory
        raise ConfigError(flag, "", f"a shipped {kind} name or a path", text)
    path = Path(text)
    if _is_file(path / "config.json"):
        return path / "config.json"
    if _is_dir(path) and (text not in shipped or "/" in text or os.sep in text):
        held = " (a directory must hold config.json)" if "config.json" in files else ""
        raise ConfigError(text, "", files + held, "a directory")
    if "config.json" in files and _HUB_ID.fullmatch(text) and not path.exists() and \
            path.suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(flag, "", f"{files} on disk (no such path; a Hub id is not fetched: "
                          f"download https://huggingface.co/{text}/blob/main/config.json and "
                          "pass its path)", text)
    if path.suffix in (".yaml", ".yml", ".json") or "/" in text or os.sep in text or \
            _is_file(path):
        return path          # a path: read_text says what is wrong with it, if anything
    if text not in shipped:
        import difflib                  # only on bad input: kept off the start-up path
        near = difflib.get_close_matches(text, list(shipped), n=3, cutoff=0.6)
        raise ConfigError(flag, "", f"a shipped {kind} ({', '.join(shipped)}) or {files}", text,
                          hint=f"did you mean {' or '.join(near)}?" if near else "")
    return shipped[text]
