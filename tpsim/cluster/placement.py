"""Where a process group's ranks sit on a topology's levels, by arithmetic over the units.

A group is the ranks ``first + i * stride`` (i < size) of a job of ``world`` ranks numbered
node-major. For each level the group crosses, :func:`spans` gives one :class:`LevelSpan`: how
many units of the level below it touches, how many of them share one unit of this level, how
many members sit in the fullest, and how many links (devices or NICs) carry its traffic out.
No rank is visited, so a billion-rank group places as fast as an eight-rank one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from ..spec.parallel import Group


class Hop(Protocol):
    """What placement reads of a topology level (:class:`tpsim.cluster.topology.Level` is one):
    its size in units of the level below, NICs per node, node boundary and link rate."""
    size: int
    nics_per_node: Optional[int]
    inter_node: Optional[bool]
    bandwidth_Bps: float


@dataclass(frozen=True)
class LevelSpan:
    """How a group spreads over one level of the hierarchy (see :meth:`Topology.place`)."""
    level: Hop
    index: int            # 0 = innermost
    fanout: int           # units of the level below that the group uses inside one unit here
    units: int            # distinct units of the level below that the group touches in total
    devices_per_unit: int  # group members inside one unit of the level below
    ports: float          # links out of one unit of the level below that carry this group
                          # (NICs, or devices; a fraction when groups share a NIC)

    @property
    def inter_node(self) -> bool:
        """A hop at this level leaves the node (the level's ``inter_node``)."""
        return bool(self.level.inter_node)

    @property
    def unit_bandwidth_Bps(self) -> float:
        """Aggregate bandwidth out of one unit of the level below, per direction."""
        return self.ports * self.level.bandwidth_Bps


@dataclass(frozen=True)
class Placement:
    """Where a process group's ranks sit: the levels it crosses, innermost first.

    Computed once per group by :meth:`Topology.place` and shared by every algorithm that prices
    a collective on it. ``spans`` holds only the levels the group crosses (fanout > 1): a group
    inside one node has a single (intra-node) span; a group of one rank has none.
    """
    group: Group
    spans: tuple[LevelSpan, ...]

    @property
    def size(self) -> int:
        return self.group.size

    @property
    def crosses_nodes(self) -> bool:
        return any(s.inter_node for s in self.spans)

    @property
    def intra_node(self) -> tuple[LevelSpan, ...]:
        return tuple(s for s in self.spans if not s.inter_node)

    @property
    def inter_node(self) -> tuple[LevelSpan, ...]:
        return tuple(s for s in self.spans if s.inter_node)


def spans(levels, group: Group) -> tuple[LevelSpan, ...]:
    """The levels ``group`` crosses (fanout > 1), innermost first; see :meth:`Topology.place`."""
    return tuple(_spans(levels, group))


def _spans(levels, group: Group):
    n, s, first = group.size, group.stride, group.first
    below = 1                     # devices in one unit of the level below
    for i, lv in enumerate(levels):
        # units of the level below touched, members in the fullest, and the most of them
        # inside one unit of this level
        units, members = _unit_counts(first, s, n, below)
        fanout = _units_per_unit(first, s, n, below, lv.size)
        if i == 0:
            ports = 1.0                          # a device's own links
        else:
            nics = below if lv.nics_per_node is None else lv.nics_per_node
            active = min(group.world, below)     # job ranks in one unit below
            ports = min(nics, members, nics * members / active)
        if fanout > 1:
            yield LevelSpan(lv, i, fanout, units, members, ports)
        below *= lv.size


def _unit_counts(first: int, stride: int, n: int, unit: int) -> tuple[int, int]:
    """For the ranks first + i stride (i < n) in units of ``unit`` consecutive ranks: (distinct
    units touched, most ranks in one unit), by arithmetic over the units, not the ranks."""
    if stride >= unit:                      # every rank in a unit of its own
        return n, 1
    last = first + (n - 1) * stride
    u0, u1 = first // unit, last // unit    # stride < unit: every unit between is touched
    most = 0
    # the first and last units, and the interior ones' counts, which repeat every `stride`
    # units (the phase of u * unit - first modulo stride)
    interior = range(u0 + 1, min(u1, u0 + 1 + stride))
    for u in (u0, u1, *interior):
        lo = max(0, -(-(u * unit - first) // stride))
        hi = min(n, -(-((u + 1) * unit - first) // stride))
        most = max(most, hi - lo)
    return u1 - u0 + 1, most


def _units_per_unit(first: int, stride: int, n: int, unit: int, size: int) -> int:
    """Most distinct units (of ``unit`` ranks) the group touches inside one unit of ``size`` of
    them. Units touched are all those between the first and the last when stride < unit, else
    one per rank (the ranks' units then step by stride / unit, or unevenly: counted)."""
    if stride < unit:
        u0, u1 = first // unit, (first + (n - 1) * stride) // unit
        if u0 // size == u1 // size:
            return u1 - u0 + 1
        return max(size - u0 % size, u1 % size + 1, size if u1 // size - u0 // size > 1 else 0)
    if stride % unit == 0:                  # the units touched step evenly: count them as ranks
        return _unit_counts(first // unit, stride // unit, n, size)[1]
    counts: dict[int, int] = {}
    for i in range(n):                      # uneven strides: count (n is one group's size)
        key = (first + i * stride) // (unit * size)
        counts[key] = counts.get(key, 0) + 1
    return max(counts.values())
