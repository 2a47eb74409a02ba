"""The engine's host (CPU) work per step: scheduling, input preparation, sampling's
bookkeeping and detokenizing, which grow with the sequences in the step.

    t_host(n) = host_step_us + host_seq_us x n        (n: the sequences in the step)

Where the engine runs it between steps (vLLM's V1 engine: the scheduler and the output
processing run after a step's forward and before the next, unless async scheduling is on) the
step lasts t_gpu + t_host; where it overlaps the host work of one step with the next step's
forward (TensorRT-LLM's overlap scheduler, on by default in its PyTorch backend,
nvidia.github.io/TensorRT-LLM/features/overlap-scheduler.html; SGLang's zero-overhead
scheduler) it lasts max(t_gpu, t_host). The two coefficients are
:class:`~tpsim.spec.serve.ServeSettings` fields, with their fit.

Published host times of other engines, for setting the two: vLLM's V0 engine before v0.6.0
spent about 100 us a sequence between steps (vLLM issue 6801: 20 ms at 200 sequences; issue
6913: its output processing 0.2 ms at one sequence, 3.4 ms at 32), which v0.6.0's multi-step
scheduling and asynchronous output processing hide; SGLang of September 2024 at most 3 ms a
step (WukLab, "Can Scheduling Overhead Dominate LLM Inference Performance?", 2024).

**The eager forward** (``eager_prefill``): engines that capture only their decode steps in CUDA
graphs (vLLM V0's ``_BATCH_SIZES_TO_CAPTURE``, SGLang 2024's ``cuda_graph_runner``: decode
batches only) run every step with prefill eagerly, the host issuing the forward's N ops one by
one at the topology's ``engine_dispatch_us`` c each; such a step's forward lasts
max(t_gpu, N c) (:func:`tpsim.sim.schedule.issue_bound`, as tpsim prices an eager training
step; N: :attr:`tpsim.serving.step_model.StepModel.forward_ops`). c is derived from SGLang's
decode step at batch 1 with and without CUDA graphs (bench/engine_dispatch.py).

**The overlap scheduler schedules a step ahead** (``host_overlap``): to overlap its host work
with the GPU, SGLang's zero-overhead scheduler (``Scheduler.event_loop_overlap``, v0.4)
builds and launches step i + 1 right after step i - 1's result comes back, i.e. as step i
starts on the GPU, and only then waits for step i - 1's tokens; TensorRT-LLM's overlap
scheduler likewise prepares step i + 1 while step i runs. So the batch of the step that starts
at t is fixed at t - w, the start of the step before it (w its wall time): a request that
arrives while a step runs waits for that step and for the next one, already launched, before
its prefill (:func:`horizon_s`). An idle engine launches at once. Without the overlap the
host schedules at each step's end, so a step holds every request arrived by its start.
"""
from __future__ import annotations

import numpy as np


def host_step_s(st, seqs):
    """t_host = (host_step_us + host_seq_us x seqs) x 1e-6, s (module docstring); a float for
    one step's int, an array for several."""
    seqs = seqs if isinstance(seqs, int) else np.asarray(seqs, float)
    return (st.host_step_us + st.host_seq_us * seqs) * 1e-6


def step_wall_s(gpu_s, host_s, overlap: bool):
    """A step's wall time: max(t_gpu, t_host) where the host work overlaps the forward,
    t_gpu + t_host where it runs between steps (module docstring); floats for one step,
    arrays for several."""
    one = isinstance(gpu_s, float) and isinstance(host_s, float)
    gpu_s = gpu_s if one else np.asarray(gpu_s)
    return (max if one else np.maximum)(gpu_s, host_s) if overlap else gpu_s + host_s


def prefill_op_s(st, model) -> float:
    """c, the host's time per op of a step with prefill (module docstring): the topology's
    ``engine_dispatch_s`` where ``st.eager_prefill``; 0 otherwise, and where the step tables
    (``model``, a :class:`~tpsim.serving.step_model.StepModel`) already price every op issued
    from the host (``--eager``)."""
    srv = model.srv
    return srv.topo.device.engine_dispatch_s if st.eager_prefill and not srv.host_s else 0.0


def horizon_s(t: float, last_wall_s: float, overlap: bool, busy: bool) -> float:
    """The latest arrival (as the engine sees it, s) that the step starting at ``t`` can
    schedule: t - ``last_wall_s`` (the start of the step that just ended) where the overlap
    scheduler fixed this step's batch while that one ran and the engine is ``busy`` (module
    docstring); t otherwise."""
    return t - last_wall_s if overlap and busy else t


def steps_until_seen(t: float, ends, arrival_s: float, overlap: bool) -> int:
    """Of the steps starting at ``t`` and ending at ``ends`` (ascending), how many run before a
    request arriving at ``arrival_s`` can be scheduled: 1 + the index of the first step end at
    or after it, or (overlap scheduler, :func:`horizon_s`) of the first step start."""
    marks = np.concatenate(([t], ends)) if overlap else np.asarray(ends)
    return int(marks.searchsorted(arrival_s)) + 1


__all__ = ["host_step_s", "step_wall_s", "prefill_op_s", "horizon_s", "steps_until_seen"]
