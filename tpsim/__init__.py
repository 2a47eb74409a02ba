"""tpsim: how long a tensor-parallel transformer takes on a given cluster, where the time goes,
and whether it fits.

Importing tpsim loads no torch and no matplotlib; ``tpsim.tp`` (real layers) needs torch and
``tpsim.figures.plot`` needs matplotlib, each imported only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_topology", "collective_time", "predict", "predict_layer", "load_model", "infer",
           "serve", "serve_search", "Layout", "ServingLayout", "ServeSettings", "__version__"]

import gc as _gc

# The imports below build some 16,000 objects the cyclic collector tracks, and no garbage: it is
# paused meanwhile, and they join its oldest generation without a pass over them (as objects
# that outlived its younger passes would), unless the process keeps objects frozen of its own.
_collecting = _gc.isenabled()
_gc.disable()
try:
    # First: every class dataclass builds below runs the methods' code kept compiled on disk.
    from .base import compiled as _compiled
    _compiled.install()

    # Bound eagerly: tpsim.predict is what most calls want (tpsim.training.predict holds it).
    # Imports no networkx, torch or matplotlib.
    from .training.predict import predict, predict_layer
    from .spec.layout import Layout   # a training run's settings: predict(layout=...)
finally:
    _compiled.uninstall()       # the user's process compiles its own classes as it did
    if _gc.get_freeze_count() == 0:
        _gc.freeze()            # every tracked object to the permanent generation,
        _gc.unfreeze()          # then all of them to the oldest
    if _collecting:
        _gc.enable()


def __getattr__(name: str):
    # Lazy: what a training prediction does not need (the serving settings, loaders, serving).
    if name == "load_topology":
        from .cluster.topology import load_topology
        return load_topology
    if name == "collective_time":
        from .cost.collectives import collective_time
        return collective_time
    if name == "load_model":
        from .spec.model import load_model
        return load_model
    if name == "ServingLayout":   # a serving run's settings: infer(settings=...)
        from .spec.serving import ServingLayout
        return ServingLayout
    if name == "ServeSettings":   # an engine's run: serve(settings=...)
        from .spec.serve import ServeSettings
        return ServeSettings
    if name == "infer":           # serving: tpsim/serving/infer.py (no submodule shares the name)
        from .serving.infer import infer
        return infer
    if name == "serve":           # the engine loop: tpsim/serving/engine.py
        from .serving.engine import serve
        return serve
    if name == "serve_search":    # serving layouts that meet latency targets
        from .serving.serve_search import serve_search
        return serve_search
    raise AttributeError(f"module 'tpsim' has no attribute {name!r}")
