"""Python's cycle collector paused while a command works (:func:`paused_gc`)."""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def paused_gc(freeze: bool = False):
    """Python's cycle collector off while the search prices or a serving engine runs: they
    allocate many short-lived small objects and no cycles worth collecting, and the
    collector's passes over them cost about a tenth of the search's pricing and a twentieth
    of a ``tpsim serve`` process (its layer simulations, then its engine loop). Restored on
    exit (a search's worker process keeps it off: it lives for one search). ``freeze``: what
    is alive then is frozen (``gc.freeze``) first, for a process about to end (``tpsim
    search``, ``tpsim serve``): the collector's first pass would otherwise scan every object
    the search's memos keep, a twentieth of the command's CPU time. Frozen objects are still
    freed by their reference counts; only cycles among them stay (a search leaves a few
    hundred objects in cycles of the 200,000 it keeps)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if freeze:
                gc.freeze()
            gc.enable()


__all__ = ["paused_gc"]
