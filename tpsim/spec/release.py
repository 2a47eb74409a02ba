"""The NCCL release a run's collectives are priced as: one setting, declared here once and
inherited by every run's layout (:class:`~tpsim.spec.layout.Layout`,
:class:`~tpsim.spec.serving.ServingLayout`), so that ``tpsim.predict(..., nccl="2.18")``,
``Layout(nccl="2.18")`` and ``--nccl 2.18`` (made from this field by
:mod:`tpsim.cli.layout_args` on every command) are one knob.

What each release changes is the cluster's (:mod:`tpsim.cluster.nccl`): a run loads its topology
as the release runs it there (:func:`tpsim.cluster.nccl.topology_of`), which also refuses a
release it does not know (a ConfigError naming ``--nccl``). ``topology``, the default, is the
topology file's own values. A run's inputs echo the release apart (their ``nccl``), not among
the layout's settings (:func:`settings_echoed`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import changed, setting

NCCL_HELP = (
    "the NCCL release to price NVLS and point-to-point LL as it runs them (2.18.5, v2.18.5-1 or "
    "2.18; 2.28 is v2.28.9-1, 2.28.3 and 2.28.7 its first patches; tpsim/cluster/nccl.py): NVLS "
    "latency 23 us to 2.20, 25 us from 2.21 (2.18-2.19 lay a small message on one channel), "
    "NVLS-tree network hop 19 us in 2.18, 14 us to 2.28.7, 20.9 us from 2.28.9; p2p LL to 16 "
    "KiB a peer in 2.18-2.21 and 2.29-2.30, to 512 KiB a peer in 2.22-2.28 (8-GPU NVSwitch "
    "node); topology: the file's own values (the shipped files: 2.21-2.27's NVLS, LL to 16 KiB "
    "a peer)")


@dataclass(frozen=True, kw_only=True)
class Released:
    """The NCCL release setting a run's layout inherits (module docstring)."""
    nccl: str = setting("topology", NCCL_HELP, flag="--nccl", kind="release", lists=True)


def settings_echoed(lay) -> dict:
    """The settings of ``lay`` away from their defaults, the release aside (a run's inputs
    echo it as their own ``nccl``)."""
    return {name: value for name, value in changed(lay).items() if name != "nccl"}


__all__ = ["Released", "NCCL_HELP", "settings_echoed"]
