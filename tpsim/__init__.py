"""tpsim: how long a tensor-parallel transformer takes on a given cluster, where the time goes,
and whether it fits.

Importing tpsim loads no torch and no matplotlib; ``tpsim.tp`` (real layers) needs torch and
``tpsim.figures.plot`` needs matplotlib, each imported only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_topology", "collective_time", "predict", "predict_layer", "load_model", "infer",
           "serve", "serve_search", "Layout", "ServingLayout", "ServeSettings", "TpsimError",
           "__version__"]


def _training(name: str):
    # imports no networkx, torch or matplotlib; as the package's own (tpsim.base.compiled)
    from .base.compiled import quiet_import
    module = quiet_import("tpsim.training.predict")
    globals().update(predict=module.predict, predict_layer=module.predict_layer)
    return getattr(module, name)


def __getattr__(name: str):
    # Lazy, each when first read: tpsim.predict (tpsim.training.predict holds it), which serving
    # does not import; the serving settings, loaders, serving, which a training prediction
    # does not.
    if name in ("predict", "predict_layer"):
        return _training(name)
    if name == "Layout":          # a training run's settings: predict(layout=...)
        from .spec.layout import Layout
        return Layout
    if name == "TpsimError":      # what every bad argument of the API raises
        from .base.errors import TpsimError
        return TpsimError
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
