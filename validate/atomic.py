"""Write a result file whole or not at all (no torch here).

report.json, report.md and calibrated.yaml are written to a temporary file in the same directory
and moved over the target with ``os.replace`` (atomic on POSIX within one filesystem), so a run
that crashes or is killed mid-write never leaves a half-written file, and an earlier run's file
stays intact until the new one is complete.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace``."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return p


def _umask() -> int:
    """The process umask (read by setting and restoring it): mkstemp creates files 0600, and
    a result file should get the mode a plain open() would give it."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
