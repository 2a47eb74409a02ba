"""The engine step of :class:`tpsim.serving.engine.EngineLoop` where every running sequence
decodes and all of them fit the step (:func:`tpsim.serving.batching.all_running`), with the
requests it admits (:func:`tpsim.serving.batching.admit`): the usual step of an open loop, the
one that prefills an arrival beside the decodes.

Its numbers are :meth:`EngineLoop._step`'s (the same step priced, timed and counted by the
same functions on the same values), found with less work: each running sequence feeds one
token and samples one, so their counts move by one each in single passes, and only the few
admitted requests are looked at one by one, as Python ints. No speculative draft.
"""
from __future__ import annotations

import numpy as np

from .batching import admit
from .frontend import frontend_s, paced_wall_s
from .host import host_step_s, prefill_op_s, step_wall_s


def decode_admit_step(loop, fast: tuple) -> None:
    """One step of ``loop``: the running sequences of ``fast`` (:func:`all_running`'s
    answer: all decode) one token each, then the requests admitted (module docstring)."""
    run, c_run, held, _, tokens = fast
    ids, news = [], []
    admit(loop, loop.budget - tokens, ids, news)
    b0, st, model = run.size, loop.st, loop.model
    counts = [(int(loop.computed[r]), int(loop.tokens[r]), int(loop.done[r])) for r in ids]
    dec = [tk - c == 1 and d > 0 for c, tk, d in counts]        # a cached prompt decodes
    made = [c + n == tk for (c, tk, _), n in zip(counts, news)]
    b, n = b0 + sum(dec), b0 + len(ids)
    kv = held + sum(c for (c, _, _), x in zip(counts, dec) if x) + b
    outs = b0 + sum(made)
    if b < n:                                          # a prompt's chunk: a mixed step
        chunks = [i for i, x in enumerate(dec) if not x]
        dt = model.mixed_step_arrays([news[i] for i in chunks],
                                     [counts[i][0] for i in chunks], b, kv, outs,
                                     prefill_op_s(st, model), 1)
        loop.prefill_steps += 1
        loop.prefill_busy_s += dt
        loop.since = 0
    else:
        dt = float(model.decode_step_s(b, kv))
        loop.decode_busy_s += dt
        loop.admit.decoded(1)
        loop.since = (loop.since + 1) % loop.multi
    engine = float(step_wall_s(dt, host_step_s(st, n), st.host_overlap))
    fresh = sum(c == 0 and d == 0 for c, _, d in counts)    # admitted with no token yet
    wall = float(paced_wall_s(engine, frontend_s(st, fresh, outs)))
    loop._account(n, dt, engine, wall)
    _count(loop, run, c_run, ids, news, counts, made, b < n)


def _count(loop, run, c_run, ids, news, counts, made, chunked: bool) -> None:
    """The step's tokens: the running ones (``c_run`` cached) one more each, the admitted
    ones their chunk, those that sampled one more; the first tokens' times, the streaming,
    who leaves."""
    t = loop.t
    loop.computed[run] = fed = c_run + 1
    loop.tokens[run] = fed + 1
    loop.done[run] += 1
    loop.past[run] = past = loop.past[run] + 1
    outs, firsts, ended = [], [], []
    for r, (c, tk, d), new, m in zip(ids, counts, news, made):
        loop.computed[r] = c + new
        if m:
            loop.tokens[r], loop.done[r] = tk + 1, d + 1
            loop.past[r] += 1
            outs.append(r)
            if d == 0:
                loop.first[r] = t
                firsts.append(r)
            if loop.past[r] >= 0:
                ended.append(r)
    if ids:
        loop._ids = np.array(loop.running, dtype=np.int64)
        loop._ids.flags.writeable = False
    made = np.concatenate((run, outs), dtype=np.int64) if outs else run
    streamed = made if loop.since == 0 or loop.multi == 1 else np.array(firsts, np.int64)
    loop.lag.release(loop, t - loop.wall, t, chunked)   # the last step's
    loop.lag.stream(loop, streamed, [t], [1])
    loop.decoding = True if len(outs) == len(ids) else None
    done = run[past >= 0]
    if done.size or ended:
        loop._leave(np.concatenate((done, ended), dtype=np.int64) if ended else done)


__all__ = ["decode_admit_step"]
