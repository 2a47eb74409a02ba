"""How a job's ranks are split into process groups: :class:`Parallelism` and :class:`Group`.

Megatron-core numbers ranks with tensor parallelism varying fastest (its RankGenerator's default
order ``tp-cp-ep-dp-pp``): ranks 0..tp-1 form the first TP group, a data-parallel group takes
every (tp*cp*ep)-th rank, a pipeline group every (tp*cp*ep*dp)-th. A group is therefore a size,
a stride between consecutive members and a first rank; :meth:`tpsim.cluster.topology.Topology.place`
turns it into the levels of the cluster it spans.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..base.errors import ConfigError

DIMENSIONS = ("tp", "cp", "ep", "dp", "pp")
MEGATRON_ORDER = "tp-cp-ep-dp-pp"


@dataclass(frozen=True)
class Group:
    """``size`` ranks ``first, first + stride, ...`` of a job of ``world`` ranks.

    ``world`` tells the placement how many ranks of a node run the same collective at once
    (every group of a kind communicates together), so that groups sharing a node's NICs share
    their bandwidth.
    """
    name: str
    size: int
    stride: int = 1
    first: int = 0
    world: int = 0

    def __post_init__(self):
        if self.world == 0:
            object.__setattr__(self, "world", self.first + self.size * self.stride)

    @property
    def ranks(self) -> range:
        return range(self.first, self.first + self.size * self.stride, self.stride)


@dataclass(frozen=True)
class Parallelism:
    """The degrees of each kind of parallelism and their rank order (fastest first)."""
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    order: str = MEGATRON_ORDER

    def __post_init__(self):
        for name in DIMENSIONS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name}", "", "a positive integer", v)
        if sorted(self.order.split("-")) != sorted(DIMENSIONS):
            raise ConfigError("order", "", f"a permutation of {'-'.join(DIMENSIONS)}", self.order)

    @property
    def world(self) -> int:
        """Ranks in the job: tp * cp * ep * dp * pp."""
        return math.prod(getattr(self, n) for n in DIMENSIONS)

    def stride(self, name: str) -> int:
        """Rank distance between consecutive members of a ``name`` group: the product of the
        degrees that vary faster in ``order``."""
        dims = self.order.split("-")
        return math.prod(getattr(self, n) for n in dims[:dims.index(name)])

    def group(self, name: str, first: int = 0) -> Group:
        """The ``name`` group (tp, cp, ep, dp or pp) that starts at rank ``first``."""
        if name not in DIMENSIONS:
            raise ValueError(f"no process group {name!r}: one of {DIMENSIONS}")
        return Group(name, getattr(self, name), self.stride(name), first, self.world)
