"""When a layer's host reaches the next layer: how far behind its forward's start a
device-to-host sync holds the work the host issues ahead of the GPU.

The host issues ops ahead of the GPU (:mod:`tpsim.sim.schedule`), so what it issues at a
layer's start, such as FSDP2's all-gather of the next unit in that unit's pre-forward hook
(implicit prefetching: torch's ``fully_shard`` issues a unit's all-gather when the host runs its
pre-forward, ahead of the GPU; no explicit ``set_modules_to_forward_prefetch``), goes out as
soon as the layer before has been issued. A device-to-host sync in the forward (the template's
``syncs``: DeepEP's normal-mode dispatch waits on the host for the received-token counts,
``Buffer::internode_dispatch`` / ``intranode_dispatch`` spinning on ``moe_recv_counter``,
deepseek-ai/DeepEP v1.2.1 ``csrc/deep_ep.cpp``) stops that: the host waits until op a, whose
result it reads, has ended, then issues op b and the rest of the forward one by one, and only
then reaches the next layer:

    lag = end_a + host_dispatch_s x (host ops of b .. the forward's last op) + their launches

(end_a in the layer's own schedule, its forward starting at 0; the forward's last sync where
it has several; :mod:`tpsim.sim.launches` for the C++ launches). Without a forward sync the
lag is 0: the host is ahead. The backward's recomputation re-runs the sync, but its units'
gathers happen in the forward (a unit kept gathered, ``reshard_after_forward`` off) or are
issued behind the reductions: not lagged here.
"""
from __future__ import annotations


def forward_lag_s(sim) -> float:
    """The layer's lag (module docstring), seconds from its forward's start; 0 without a
    sync in its forward."""
    tpl = sim.template
    forward = set(tpl.forward)
    syncs = [(a, b) for a, b in tpl.syncs if b in forward]
    if not syncs:
        return 0.0
    a, b = max(syncs, key=lambda s: s[1])
    rest = [i for i in tpl.forward if i >= b]
    launched = sum(sim.launch_s[i] for i in rest) if sim.launch_s else 0.0
    return sim.timeline.end[a] + sim.host_dispatch_s * sum(
        tpl.nodes[i].host_ops for i in rest) + launched
