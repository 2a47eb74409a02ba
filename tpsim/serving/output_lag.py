"""When the tokens of a run's last step reach their clients under vLLM V0's multi-step engine
(``num_scheduler_steps`` S > 1), whose asynchronous output processor is on by default in
v0.6.0 (``ModelConfig.use_async_output_proc``, with CUDA graphs and no speculation).

What vLLM v0.6.0's code does (its source distribution): a prefill step is a run of one step
(``Scheduler._schedule_default`` schedules prefills with no decodes and no lookahead slots,
``init_multi_step(1)``). Its sampled tokens are kept as the engine step's output
(``AsyncLLMEngine.step_async``: ``ctx.output_queue``) and turned into the requests' outputs
during the NEXT engine step, by the ``async_callback`` that the model runner calls once that
step's forward is issued (``worker/model_runner.py``, ``MultiStepModelRunner
._async_process_outputs``). That callback runs in the executor's thread (``make_async`` of
``execute_model``) and puts the outputs on each request's ``asyncio.Queue``
(``AsyncStream.put``, ``put_nowait``), which from another thread does not wake the engine
process's event loop (uvloop, ``rpc/server.py``: ``call_soon`` is not thread-safe): the
output leaves for the client, over ZMQ to the API server, once the loop runs again, when
the thread's call returns or another event (a new request's message) wakes it. The first
step of a decode run returns once its step is launched (``skip_sampler_cpu_output``: no wait
for the GPU), so what the step before it made leaves at once; a prefill step returns only
when its own tokens are on the host (``_final_process_outputs``: ``pythonize``, blocking), so
what the step before it made leaves then. The tokens of a step that ends a run (a prefill
step, the last of S decode steps) thus leave with the next step:

    t_stream = min(end of the next step, first arrival seen during it)  when it prefills
    t_stream = start of the next step                                   otherwise

A prefill step followed by another prefill step (requests that arrived during it) streams
its first tokens at the end of that second step, and a run followed by a prefill step its
chunk at that step's end. tpsim holds those chunks (:meth:`OutputLag.stream`) and streams them
by that rule at the next step (:meth:`OutputLag.release`); a first token's TTFT counts from
then, as ``sglang.bench_serving`` measures it (at the first chunk with text). A request that
ends with the run or the prefill step streams its last chunk at once, where its e2e ends and
its slot frees (its lag is not modelled). At S = 1 (vLLM V1's engine) nothing is held.
"""
from __future__ import annotations

import numpy as np


class OutputLag:
    """Tokens streamed at the end of a run, held until the next step (module docstring)."""

    def __init__(self, multi: int):
        self.on, self.held = multi > 1, np.zeros(0, dtype=np.int64)

    def stream(self, loop, reqs, ends, steps, ahead: int = 0) -> None:
        """``reqs`` receive a chunk at the end of each of ``steps`` (numbered from 1, the run
        ends), of steps ending at ``ends`` (s), ``ahead`` tokens each not yet counted in
        ``loop.done``. With multi-step scheduling the chunk at the last step's end of those
        that go on waits for the next step (:meth:`release`); a finished request's streams
        now, where its e2e ends (:mod:`tpsim.serving.engine`)."""
        if not self.on and len(steps) == len(ends):       # every step (ascending in 1..n)
            loop.gaps.deliver(reqs, ends if len(ends) != 1 else float(ends[0]))
            return
        reqs, ends = np.asarray(reqs, dtype=np.int64), np.atleast_1d(np.asarray(ends, float))
        steps = np.asarray(steps, dtype=np.int64)
        if not (self.on and steps.size and steps[-1] == ends.size):
            loop.gaps.deliver(reqs, ends[steps - 1])
            return
        loop.gaps.deliver(reqs, ends[steps[:-1] - 1])
        going = np.asarray(loop.done)[reqs] + ahead < loop.gen[reqs]
        self.held = reqs[going]
        loop.gaps.deliver(reqs[~going], ends[-1:])

    def release(self, loop, start: float, end: float, prefill: bool) -> None:
        """The held chunks stream at the next step, from ``start`` to ``end`` (s): at its end
        or the first arrival the engine sees during it if it prefills, else at its start; a
        first token's time is its request's TTFT."""
        if not self.held.size:
            return
        t = start
        if prefill:
            seen = loop.arr[loop.next] + loop.lat if loop.next < len(loop.arr) else np.inf
            t = float(min(end, max(seen, start)))
        loop.first[self.held[np.asarray(loop.done)[self.held] == 1]] = t
        loop.gaps.deliver(self.held, t)
        self.held = np.zeros(0, dtype=np.int64)


__all__ = ["OutputLag"]
