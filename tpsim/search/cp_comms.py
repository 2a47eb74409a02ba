"""The context-parallel exchanges a search tries (``--cp-comm``, Transformer Engine's
cp_comm_type: :mod:`tpsim.layer.context_parallel`) at one (tp, cp), and why those it leaves
out cannot run or would repeat another.

At cp 1 there is no exchange (the default, p2p, stands for it). Above 1:

* ``p2p`` (the K/V ring) and ``all-gather`` (Llama 3's K/V all-gather) run at every cp;
* ``a2a`` (Ulysses) needs each TP rank's query and key/value heads divisible by cp (every
  rank takes heads / cp of them: Transformer Engine's AttnFuncWithCPAndQKVOA2A; so cp <= the
  key/value heads per TP rank);
* ``a2a+p2p`` (Megatron's hierarchical CP) only where the CP group spans nodes (tp cp above a
  node's GPUs) and its all-to-all takes 1 < a < cp ranks of a node
  (:func:`tpsim.layer.context_parallel.hierarchical_sizes`): with a = 1 it is the ring, with
  a = cp Ulysses, the same layouts twice.

Pinned (``tpsim search --cp-comm a2a,p2p``), only the pinned ones of these.
"""
from __future__ import annotations

from ..layer.context_parallel import COMMS, hierarchical_sizes
from .pins import pick


def cp_comms(model, tp: int, cp: int, devices_per_node: int, pins: tuple) -> list[str]:
    """The exchanges to enumerate at ``tp`` x ``cp`` (module docstring); ["p2p"] at cp 1."""
    if cp == 1:
        return ["p2p"]
    heads, kv = model.heads // tp, model.kv_heads_per_rank(tp)
    out = []
    for comm in pick(pins, "cp_comm", COMMS):
        if comm == "a2a" and (heads % cp or kv % cp):
            continue
        if comm == "a2a+p2p":
            a = hierarchical_sizes(cp, tp, devices_per_node, heads, kv)[0]
            if tp * cp <= devices_per_node or not 1 < a < cp:
                continue
        out.append(comm)
    return out


__all__ = ["cp_comms"]
