"""The expert-parallel communication of a simulated layer: how much of it the compute leaves
exposed (``step.ep_comm_exposed_s``).

The EP all-to-alls (:mod:`tpsim.layer.moe_ep`; the flex dispatcher's kernels and the
all-gather dispatcher's collectives, :mod:`tpsim.layer.moe_flex`) run on the layer's comm stream
beside the TP collectives, so the layer's exposed communication
(:func:`tpsim.sim.simulate.layer_times`) counts them; this picks out their share: the time the
ops of the ``ep`` group (and of the all-gather dispatcher's expert-TP x EP group) run while the
compute stream is idle,

    ep_exposed = sum_i |[start_i, end_i) \\ compute intervals|     over the ops on those groups
"""
from __future__ import annotations

from ..layer.moe_flex import TPEP
from ..sim.schedule import exposed_of

EP_GROUPS = ("ep", TPEP)    # the groups the MoE slot's token exchange runs on


def group_exposed_s(sim, groups: tuple[str, ...] = EP_GROUPS) -> float:
    """Seconds the ops of ``groups`` in the simulated layer ``sim`` run while its compute
    stream is idle (module docstring); 0 when it has none."""
    tl = sim.timeline
    mine = sorted((tl.start[i], tl.end[i]) for i, node in enumerate(sim.template.nodes)
                  if node.group in groups)
    return exposed_of(mine, tl.intervals("compute")) if mine else 0.0
