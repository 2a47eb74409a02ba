"""Megatron-core's EP communication overlap across micro-batches
(``--overlap-moe-expert-parallel-comm``): in the 1F1B steady state each MoE layer's forward of
one micro-batch runs merged with its backward of another, the dispatch and combine of one on a
communication stream beside the other's computation. Megatron-core's schedule
(``megatron/core/models/common/model_chunk_schedule_plan.py``, ``TransformerLayerSchedulePlan.run``):

    comm stream:    combine_bwd      | dispatch_fwd -> dispatch_bwd   | combine_fwd
    compute stream: pre_dispatch_fwd | mlp_bwd -> mlp_fwd             | pre_dispatch_bwd

Each sub-module waits on the event of the one before it in its own micro-batch
(``fine_grained_callables.py``: a ``ScheduleNode`` waits on its chain's event, then records
it): dispatch_bwd on mlp_bwd, mlp_fwd on dispatch_fwd, so the middle slot is two slots, each
as long as the longer of its two ops, and one merged pair takes

    t_pair = beside(C_b, P_f) + beside(D_f, M_b) + beside(D_b, M_f) + beside(C_f, P_b)
    beside(a, c) = c + i a / (1 - k) if a (1 - i) <= c (1 - k), else a + k c / (1 - i)

(the computation runs 1 - i as fast while the communication runs beside it, i the share of the
SMs its kernels take: :func:`tpsim.sim.interference.op_interference`, as in
:func:`tpsim.sim.schedule.slowed_end`; the communication runs 1 - k as fast while the
computation runs beside it, k the device's ``ep_comm_slowdown``: the dispatch and combine
kernels, DeepEP's, HybridEP's and NCCL's all-to-all alike, are copies the SMs drive, loads into
registers and stores to the peers' buffers with flags polled between the ranks, whose blocks
wait for SMs the GEMM tiles hold and share L2 and HBM bandwidth with them; Megatron-Bridge's
profile of its HybridEP pair: 8.25 s of communication kernels a step without the overlap,
10.83 s with it, fitted in the topology's comment. The layer's own schedule, where little
computation runs beside the dispatch, and the dense steps' collectives are left unslowed),
and at least the
host's time to issue both phases' ops (``host_dispatch_us`` each, plus the kernels their calls
launch from C++: :mod:`tpsim.sim.launches`) on its one CPU thread, plus its waits at both phases' syncs (:func:`tpsim.sim.schedule.sync_waits`: the dispatcher's
device-to-host read of the tokens per expert). Megatron-core issues the backward's mlp_bwd
before the forward's dispatch_fwd, at whose issue the host waits, so the compute stream has
work queued while the host waits: the GPU-side pieces keep only the layer's own idle after
the sync (inside P_f, up to one op's issue: an upper bound, mlp_bwd may hide it), with the
pieces read
off the layer's own schedule (:func:`pieces`): P_f the forward up to the dispatch's start, D_f
the dispatch, M_f the compute stream's busy time from the dispatch's start to the combine's
(the experts, and the shared experts issued beside the dispatch), C_f the rest of the forward
from the combine's start; in the backward C_b up to the combine's end, M_b the compute from the
combine's start to the dispatch's, D_b the dispatch, P_b the rest. The layer's forward and
backward shrink by their shares of a (t_f + t_b - t_pair) (never grow), a the share of its
forwards that run merged: a stage runs m v chunk forwards, of which the warm-up ones,
w = (pp - 1) + (v - 1) pp + 1 on the mean stage (``schedules.py``: interleaved 1F1B warms up
2 (pp - r - 1) + (v - 1) pp on stage r, "one extra micro-batch" with this overlap; at pp 1
the first forward), have no backward beside them: a = 1 - w / (m v).

Megatron-core's checks (``transformer_config.py``): ep > 1, the all-to-all or flex dispatcher,
no full recomputation, virtual stages with pp > 1.

Where the code overlaps more than the four slots, unpriced (Megatron-LM d98e8a6):
``ScheduleNode.stream_acquire_context`` (``pipeline_parallel/utils.py``) waits on the chain's
event before a node and records it after, and each sub-module's backward runs on its forward's
stream, so the slots' comm and compute are paired as above; mlp_fwd waits only on dispatch_fwd
and its stream, not on dispatch_bwd, and with ``--delay-wgrad-compute`` the weight gradients
(``backward_dw``, ``models/common/utils.py``) record no event, so dispatch_bwd and the next
layer's combine_bwd run beside them too: the middle slots and the layer's last slot are upper
bounds. Every layer of a chunk is merged (``ModelChunkSchedulePlan.run``: forward layer i with
backward layer n - 1 - i); the embedding, the loss and the pipeline's send and receive run
after them, outside the pairs. The communication stream runs at the default priority unless
``high_priority_a2a_comm_stream``: how the GPU's block scheduler then interleaves the
dispatch's blocks with a GEMM's waves is not priced apart (``ep_comm_slowdown`` holds it).
"""
from __future__ import annotations

import dataclasses

from ..base.errors import ConfigError
from ..sim.interference import op_interference
from ..sim.schedule import issue_bound, sync_waits
from .step import Part

NAMES = ("fwd.moe.dispatch", "fwd.moe.combine", "bwd.moe.combine", "bwd.moe.dispatch")


def _busy(intervals, a: float, b: float) -> float:
    """Time the sorted, disjoint ``intervals`` cover inside [a, b)."""
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in intervals)


def pieces(sim) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """((P_f, D_f, M_f, C_f), (C_b, M_b, D_b, P_b)) of the simulated MoE layer ``sim``
    (module docstring), seconds."""
    tl = sim.timeline
    at = {n: i for i, n in enumerate(sim.template.names)}
    df, cf, cb, db = (at[n] for n in NAMES)
    busy = tl.intervals("compute")
    fwd_end = max(tl.end[i] for i in sim.template.forward)
    forward = (tl.start[df], tl.end[df] - tl.start[df], _busy(busy, tl.start[df], tl.start[cf]),
               fwd_end - tl.start[cf])
    backward = (tl.end[cb] - fwd_end, _busy(busy, tl.start[cb], tl.start[db]),
                tl.end[db] - tl.start[db], tl.makespan_s - tl.end[db])
    return forward, backward


def ends(comm: float, compute: float, interference: float,
         slowdown: float = 0.0) -> tuple[float, float]:
    """(when the comm ends, when the compute ends): ``comm`` and ``compute`` seconds (each
    alone) on two streams at once, the compute at 1 - i = 1 - ``interference`` of its speed
    while the comm runs, the comm at 1 - k = 1 - ``slowdown`` of its own while the compute
    runs. The comm ends first if comm (1 - i) <= compute (1 - k), at t = comm / (1 - k), the
    compute at compute + i t; else the compute at compute / (1 - i), the comm at comm + k
    compute / (1 - i); both at comm + compute where i = k = 1 (k = 0: the comm unslowed)."""
    i, k = interference, slowdown
    if k < 1.0 and comm * (1.0 - i) <= compute * (1.0 - k):
        t = comm / (1.0 - k)
        return t, compute + i * t
    if i < 1.0:
        return comm + k * compute / (1.0 - i), compute / (1.0 - i)
    return comm + compute, comm + compute


def beside(comm: float, compute: float, interference: float, slowdown: float = 0.0) -> float:
    """The pair's seconds: the later of :func:`ends`."""
    return max(ends(comm, compute, interference, slowdown))


def _slots(sim, device) -> list[tuple[float, float, float, float]]:
    """(comm, compute, i, k) of the merged pair's four slots (module docstring)."""
    (p_f, d_f, m_f, c_f), (c_b, m_b, d_b, p_b) = pieces(sim)
    at = {n: i for i, n in enumerate(sim.template.names)}
    i_df, i_cf, i_cb, i_db = (op_interference(sim.ops[at[n]], device) for n in NAMES)
    k = device.ep_comm_slowdown
    return [(c_b, p_f, i_cb, k), (d_f, m_b, i_df, k), (d_b, m_f, i_db, k), (c_f, p_b, i_cf, k)]


def exchange_s(sim, device) -> tuple[float, float, float]:
    """(the dispatches' and combines' seconds alone, their seconds in the merged pair, slowed
    beside the compute: the sum of each slot's comm end, :func:`ends`; the part of those with
    the other micro-batch's compute beside them: the sum of each slot's earlier end)."""
    slots = _slots(sim, device)
    return (sum(s[0] for s in slots), sum(ends(*s)[0] for s in slots),
            sum(min(ends(*s)) for s in slots))


def pair_s(sim, device) -> float:
    """t_pair: one merged forward and backward of the layer (module docstring), no shorter
    than the host's issue of both phases' ops and its waits at their syncs, on one thread
    (:func:`tpsim.sim.schedule.issue_bound`); each
    slot's i that of its communication op on ``device``
    (:func:`tpsim.sim.interference.op_interference`), k the device's ``ep_comm_slowdown`` (the
    dispatch or combine slowed beside the compute: module docstring)."""
    gpu = sum(beside(*slot) for slot in _slots(sim, device))
    h = sim.host_dispatch_s
    return issue_bound(gpu, sum(sim.template.host_ops), h,
                       sum(sync_waits(sim.template, sim.times, h, sim.launch_s))
                       + sum(sim.launch_s))


def merged_share(m: int, pp: int, v: int) -> float:
    """a = 1 - ((pp - 1) + (v - 1) pp + 1) / (m v): the chunk forwards of the mean stage that
    run beside another micro-batch's backward (module docstring); 0 at least."""
    return max(0.0, 1.0 - ((pp - 1) + (v - 1) * pp + 1) / (m * v))


def overlapped(part: Part, sim, share: float, device) -> Part:
    """The MoE layer's ``part`` with ``share`` of its forwards merged with a backward: each
    phase shorter by its share of share x (t_f + t_b - t_pair), at least 0."""
    total = part.forward_s + part.backward_s
    saved = share * max(0.0, total - pair_s(sim, device))
    saved_f = saved * part.forward_s / total
    return dataclasses.replace(part, forward_s=part.forward_s - saved_f,
                               backward_s=part.backward_s - (saved - saved_f),
                               tp_exposed_s=part.tp_exposed_s - saved,
                               ep_exposed_s=max(0.0, part.ep_exposed_s - saved))


def unmerged(ep: int, pp: int, virtual_stages: int) -> str | None:
    """Why a layout's micro-batches cannot merge their MoE exchange, as Megatron-core asks:
    ``moe_overlap_ep`` (no expert parallelism), ``moe_overlap_vp`` (a pipeline without
    interleaving), else None (the search drops such layouts under those names)."""
    if ep < 2:
        return "moe_overlap_ep"
    return "moe_overlap_vp" if pp > 1 and virtual_stages == 1 else None


def check_overlap(lay, folded_ep: int) -> None:
    """What Megatron-core asks of ``--overlap-moe-expert-parallel-comm`` (module docstring);
    a ConfigError naming the flag."""
    if not lay.overlap_moe_comm:
        return
    flag, why = "--overlap-moe-comm", unmerged(folded_ep, lay.pp, lay.virtual_stages)
    if why == "moe_overlap_ep":
        raise ConfigError(flag, "", "off unless --ep is more than 1 (Megatron-core: only with "
                          "expert parallelism)", True)
    if lay.moe_dispatcher == "allgather":
        raise ConfigError(flag, "", "off with --moe-dispatcher allgather (Megatron-core: the "
                          "all-to-all or flex dispatcher)", True)
    if lay.recompute == "full":
        raise ConfigError(flag, "", "off with --recompute full (Megatron-core refuses it)", True)
    if why == "moe_overlap_vp":
        raise ConfigError(flag, "", "off unless --virtual-stages is more than 1 when --pp is "
                          "(Megatron-core: interleaved 1F1B)", True)


def moe_part(sim, lay, folded_ep: int, device) -> Part | None:
    """The simulated MoE layer ``sim`` as the step's part (None: a dense model):
    :class:`Part.of`, overlapped across micro-batches when ``lay.overlap_moe_comm``."""
    check_overlap(lay, folded_ep)
    if sim is None:
        return None
    part = Part.of(sim)
    if not lay.overlap_moe_comm:
        return part
    return overlapped(part, sim, merged_share(lay.micro_batches, lay.pp, lay.virtual_stages),
                      device)
