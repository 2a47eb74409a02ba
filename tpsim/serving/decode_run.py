"""Decode-only stretches of the engine loop (:class:`tpsim.serving.engine.EngineLoop`) taken
together: while every running sequence decodes and nothing is admitted, the next k steps are
known in advance, each feeding one token to each of the same b sequences, so their times,
their tokens and the cache's blocks follow in closed form over j = 1..k:

* the blocks the sequences hold after j more steps: sum_i ceil((L_i + j) / block_size),
  L_i the tokens in sequence i's cache, whose growth over what they hold now (the blocks
  in use: the cache's less the free ones) must fit the free blocks; it grows with j, so the
  largest j that fits is found by bisection where not all of the steps up to the first
  finish fit;
* step j's GPU time: :meth:`tpsim.serving.step_model.StepModel.decode_step_s` at b
  sequences holding sum_i L_i + b j tokens, then the host's and the front end's times
  (:mod:`tpsim.serving.host`, :mod:`tpsim.serving.frontend`), their cumulative sum the steps'
  ends;
* k = the steps to the first finish (min_i of the tokens still wanted), cut to those whose
  blocks fit and, with room to admit, to the end of the run (``num_scheduler_steps``) in
  which a waiting request fits (:mod:`tpsim.serving.admission`) or the next arrival is seen
  (:func:`tpsim.serving.host.steps_until_seen`).

A stretch of up to :data:`.decode_floats.FEW_STEPS` steps is timed as Python floats, step by
step up to the steps it keeps (:mod:`tpsim.serving.decode_floats`: the same numbers, bit for
bit); a longer one as arrays, every step to the first finish priced at once (:func:`_arrays`).

The tokens stream by :class:`tpsim.serving.output_lag.OutputLag` (each step's end, or each
run's), and the sequences that got all their tokens leave.
"""
from __future__ import annotations

import numpy as np

from .frontend import frontend_s, paced_wall_s
from .gaps import run_end_steps
from .host import host_step_s, step_wall_s, steps_until_seen
from .decode_floats import few_steps, run_end


def advance(loop) -> bool:
    """Decode-only steps of ``loop`` together (module docstring); False when not one fits."""
    loop.lag.release(loop, loop.t, loop.t, False)   # a prefill's tokens (output_lag)
    run = loop.ids()
    kv, past = loop.computed[run], loop.past[run]   # the tokens cached; generated - wanted
    k, most, new = _fitting(loop, kv, past)
    if k == 0:
        return False
    b, held = len(run), sum(kv.tolist())       # ints: exact, and so as floats
    wall, ends, k, busy, host, fe = few_steps(loop, b, held, k) or _arrays(loop, b, held, k)
    loop.lag.stream(loop, run, ends[:k], run_end_steps(loop.since, k, loop.multi), k)
    loop.since = (loop.since + k) % loop.multi
    loop.free -= new if k == most else _grown(loop, kv, k)
    loop.decode_busy_s += busy
    loop.host_wait_s += host
    loop.frontend_wait_s += fe
    loop.t, loop.wall = float(ends[k - 1]), float(wall[k - 1])
    loop.steps, loop.seq_steps = loop.steps + k, loop.seq_steps + k * b
    loop.admit.decoded(k)
    loop.computed[run] = kv = kv + k             # each fed all but its last token
    loop.tokens[run] = kv + 1
    loop.done[run] += k
    loop.past[run] = past = past + k
    if k == most:                               # else none got all its tokens
        loop._leave(run[past >= 0])
    return True


def _arrays(loop, b: int, held: int, k: int) -> tuple:
    """:func:`.decode_floats.few_steps`'s answer from arrays: every step to the first finish
    (``k`` of them fitting) priced at once, then cut."""
    st = loop.st
    gpu = loop.model.decode_step_s(b, np.arange(held + b, held + b * k + 1, b, dtype=float))
    engine = step_wall_s(gpu, host_step_s(st, b), st.host_overlap)
    wall = paced_wall_s(engine, frontend_s(st, 0, b))
    ends = loop.t + np.add.accumulate(wall)     # np.cumsum without its wrapper
    if len(loop.running) < loop.max_seqs:       # up to the run's end after an arrival
        if loop.waiting:
            k = min(k, run_end(loop, loop.admit.steps_to_fit(loop, k)))
        elif loop.next < len(loop.arr):
            k = min(k, run_end(loop, steps_until_seen(
                loop.t, ends, loop.arr[loop.next] + loop.lat, st.host_overlap)))
    gpu, engine, add = gpu[:k], engine[:k], np.add.reduce    # ndarray.sum's own reduction
    return (wall, ends, k, float(add(gpu)), float(add(engine - gpu)),
            float(add(wall[:k] - engine)))


def _grown(loop, kv: np.ndarray, j: int) -> int:
    """The blocks j more steps take beyond those held now: monotone in j."""
    bs = loop.bs
    return sum(((kv + (j + bs - 1)) // bs).tolist()) - (loop.capacity - loop.free)


def _fitting(loop, kv: np.ndarray, past: np.ndarray) -> tuple[int, int, int]:
    """(k, the steps to the first finish, the blocks they take): k the most steps up to that
    finish (``past``: each sequence's tokens generated less wanted) whose blocks fit the free
    ones (module docstring)."""
    most = -max(past.tolist())
    new = _grown(loop, kv, most)
    if new <= loop.free:
        return most, most, new         # all fit (the usual case): no search
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _grown(loop, kv, mid) <= loop.free:
            lo = mid
        else:
            hi = mid - 1
    return lo, most, new


__all__ = ["advance", "run_end"]
