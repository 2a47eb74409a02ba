"""A cluster topology sized to the nodes a job needs, and the check that a job fits the topology
it is priced on (every command that takes ``--nodes`` or sizes the network from ``--gpus``)."""
from __future__ import annotations

import dataclasses

from ..base.errors import ConfigError
from ..base.memo import Memo
from ..cluster.topology import Topology
from ..spec.parallel import Parallelism

_RESIZED = Memo("topologies resized to --nodes", 64, lru=True)


def with_nodes(topo: Topology, nodes: int) -> Topology:
    """``topo`` with its network level sized to ``nodes`` nodes (the YAML's level size is the
    largest job it describes); every other parameter unchanged. Memoised by value (and the
    file it names in errors): the same topology object for the same topology and nodes."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError("--nodes", "", "a positive integer", nodes)
    return _RESIZED.get((topo, topo.path, nodes), _resized, topo, nodes)


def _resized(topo: Topology, nodes: int) -> Topology:
    outer = [i for i, lv in enumerate(topo.levels) if lv.inter_node]
    if len(outer) != 1:
        raise ConfigError("--nodes", "", f"a topology with one level between nodes "
                          f"({topo.name} has {len(outer)})", nodes)
    levels = list(topo.levels)
    levels[outer[0]] = dataclasses.replace(levels[outer[0]], size=nodes)
    return topo.replaced(levels=tuple(levels))


def sizable(topo: Topology) -> bool:
    """The topology's network can be sized by ``--nodes``: it has one level between nodes
    (:func:`with_nodes`)."""
    return sum(lv.inter_node for lv in topo.levels) == 1


def nodes_needed(topo: Topology, gpus: int) -> int | None:
    """0: ``topo`` holds ``gpus`` GPUs; n: ``--nodes n`` sizes its network to hold them
    (ceil(gpus / devices per node)); None: it cannot (no network to size)."""
    if gpus <= topo.max_ranks:
        return 0
    return -(-gpus // topo.devices_per_node) if sizable(topo) else None


def check_fits(topo: Topology, par: Parallelism) -> None:
    """A job larger than the topology: say how many nodes it needs, and ``--nodes`` only where
    the topology's network can be sized (:func:`nodes_needed`)."""
    if par.world > topo.max_ranks:
        per = topo.devices_per_node
        nodes = -(-par.world // per)
        fix = f": pass --nodes {nodes}" if sizable(topo) else \
            " and no network to size: a cluster topology, which takes --nodes"
        degrees = f"tp {par.tp} x cp {par.cp} x pp {par.pp} x dp {par.dp}"
        raise ConfigError("--topology", "", f"at least {par.world} GPUs for {degrees} "
                          f"({nodes} nodes of {per}; {topo.name} has {topo.max_ranks // per}"
                          f"{fix})", topo.name)
