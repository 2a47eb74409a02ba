"""What the recomputation settings of a :class:`~tpsim.spec.layout.Layout` allow of one
another: Megatron-core's rules for ``--recompute-modules``, ``--recompute-method`` and
``--recompute-num-layers`` (``megatron/training/arguments.py``)."""
from __future__ import annotations

from ..base.errors import ConfigError


def check_recompute(lay) -> None:
    """One ConfigError naming the flag: modules only with selective, a method and its count
    together and only with full."""
    if lay.recompute_modules is not None and lay.recompute != "selective":
        raise ConfigError("--recompute-modules", "", "--recompute selective beside it",
                          ",".join(lay.recompute_modules))
    method, n = lay.recompute_method, lay.recompute_num_layers
    if (method is None) != (n is None):
        flag, value = ("--recompute-method", method) if n is None else ("--recompute-num-layers", n)
        raise ConfigError(flag, "", "--recompute-method and --recompute-num-layers together", value)
    if method is not None and lay.recompute != "full":
        raise ConfigError("--recompute-method", "", "--recompute full beside it", method)


__all__ = ["check_recompute"]
