"""A decode stretch of a few steps (:mod:`tpsim.serving.decode_run`) timed as Python floats:
the same numbers as its numpy arrays, found without a ufunc call per quantity.

The stretch's step j (1..k) takes the GPU time layers (lin + k_c kv_j / g) + ends at
kv_j = held + b j cached tokens (:meth:`tpsim.serving.step_model.StepModel.decode_terms`),
then the host's (:func:`tpsim.serving.host.step_wall_s`) and the front end's
(:func:`tpsim.serving.frontend.paced_wall_s`) times, each step's end the start plus the
running sum of the walls. numpy's elementwise arithmetic is IEEE 754's, one rounding an
operation, as Python's float is, and ``np.add.accumulate`` adds left to right, so each step's
numbers are bit-equal; the stretch's totals are numpy's ``np.add.reduce``, a pairwise sum,
done here in the same order (:func:`pairwise_sum`, numpy/_core/src/umath/loops_utils.h.src,
``@TYPE@_pairwise_sum``: blocks of up to 128 in eight running sums, halves beyond).

Only the steps the stretch keeps are timed: up to the end of the run in which a waiting
request fits or the next arrival is seen, found step by step, where numpy prices every step to
the first finish. Past :data:`FEW_STEPS` steps, or a step run eagerly (past the CUDA graphs),
the arrays are the cheaper: None.
"""
from __future__ import annotations

from .frontend import frontend_s
from .host import host_step_s

FEW_STEPS = 24          # the most steps timed as floats


def pairwise_sum(a: list, lo: int = 0, n: int | None = None) -> float:
    """sum(a[lo:lo + n]) as numpy's ``np.add.reduce`` of a float64 array adds it: below 8
    terms one by one from 0.0; up to 128 in eight running sums (the i-th term into sum
    i mod 8), joined ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), the last n mod 8
    terms added one by one; beyond, the two halves (the first a multiple of 8) summed so."""
    n = len(a) - lo if n is None else n
    if n < 8:
        s = 0.0
        for x in a[lo:lo + n]:
            s += x
        return s
    if n <= 128:
        r = a[lo:lo + 8]
        top = lo + n - n % 8
        for i in range(lo + 8, top, 8):
            r = [x + y for x, y in zip(r, a[i:i + 8])]
        s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for x in a[top:lo + n]:
            s += x
        return s
    half = n // 2
    half -= half % 8
    return pairwise_sum(a, lo, half) + pairwise_sum(a, lo + half, n - half)


def few_steps(loop, b: int, held: int, k: int) -> tuple | None:
    """(the steps' walls, their ends, the stretch's steps, its GPU, host-wait and front-end
    wait totals) of the stretch of ``loop`` whose ``b`` sequences hold ``held`` cached tokens,
    at most ``k`` steps fitting (module docstring); None where the arrays are to do it."""
    g, lin, tail, eager = loop.model.decode_terms(b)
    limit, arrival, over = k, None, loop.st.host_overlap
    if len(loop.running) < loop.max_seqs:       # up to the run's end after an arrival
        if loop.waiting:
            limit = min(k, run_end(loop, loop.admit.steps_to_fit(loop, k)))
        elif loop.next < len(loop.arr):
            arrival = float(loop.arr[loop.next] + loop.lat)
            if over and loop.t >= arrival:      # seen as the first step starts
                limit, arrival = min(k, run_end(loop, 1)), None
    if eager or (arrival is None and limit > FEW_STEPS):
        return None
    layers, kc, lin, tail = loop.model.layers, float(loop.model.k), float(lin), float(tail)
    host, fe, t = host_step_s(loop.st, b), frontend_s(loop.st, 0, b), loop.t
    gpu, engine, wall, ends = [], [], [], []
    acc, j, kv = 0.0, 0, held
    while j < limit:
        if j == FEW_STEPS:
            return None
        j, kv = j + 1, kv + b
        x = layers * (lin + kc * kv / g) + tail
        e = (x if x >= host else host) if over else x + host
        w = e if e >= fe else fe
        acc += w
        gpu.append(x)
        engine.append(e)
        wall.append(w)
        ends.append(t + acc)
        if arrival is not None and t + acc >= arrival:     # seen: the run's end
            limit, arrival = min(k, run_end(loop, j + 1 if over else j)), None
    return (wall, ends, limit, pairwise_sum(gpu),
            pairwise_sum([e - x for e, x in zip(engine, gpu)]),
            pairwise_sum([w - e for w, e in zip(wall, engine)]))


def run_end(loop, j: int) -> int:
    """Decode steps from now to the end of the run (of ``num_scheduler_steps``) in which the
    j-th one falls: j itself without multi-step scheduling."""
    return j + (-(loop.since + j)) % loop.multi


__all__ = ["few_steps", "pairwise_sum", "run_end", "FEW_STEPS"]
