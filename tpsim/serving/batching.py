"""Which sequences an engine step runs and how many tokens each feeds: the scheduling half of
:class:`tpsim.serving.engine.EngineLoop`'s step (vLLM V1's ``Scheduler.schedule``,
vllm/v1/core/sched/scheduler.py).

The running sequences first, in admission order: each feeds min(its tokens not yet in the
cache, the step's budget left) (a decode one, a prefill the rest of its prompt: chunked
prefill), taking the KV-cache blocks its new tokens need; where none is free the most
recently admitted sequence is preempted (:meth:`EngineLoop._preempt`), itself included, and
the step stops there. Then, unless it preempted, waiting requests in arrival order while
fewer than ``max_num_seqs`` run, the budget lasts, the blocks of their first chunk are free
and the admission policy takes them (:mod:`tpsim.serving.admission`).

When every running sequence's tokens fit in the budget and their blocks in the free ones
(the usual step), the running part is one pass over them: none is cut and none preempted,
so each feeds all its tokens in order, the same answer as one at a time.
"""
from __future__ import annotations

import numpy as np


FEW = 32        # running sequences whose counts all_running sums as Python ints


def schedule(loop, alone: bool, fast=None) -> tuple[np.ndarray, np.ndarray]:
    """The step's requests and the new tokens each feeds, in order (module docstring);
    ``alone``: prefills only, the decodes waiting (``separate_prefill``); ``fast``: what
    :func:`all_running` returned, None to go one at a time."""
    if fast is None:
        out, budget, preempted = _running(loop, alone)
        ids, news = [r for r, _ in out], [n for _, n in out]
    else:
        ids, news, budget, preempted = [], [], loop.budget - fast[4], False
    if not preempted:
        admit(loop, budget, ids, news)
    if fast is None:
        return np.array(ids, dtype=np.int64), np.array(news, dtype=np.int64)
    run, fed = fast[0], fast[3] - fast[1]       # the running ones feed all their tokens
    if not ids:                               # no admission: the running ones as they are
        return run, fed
    return (np.concatenate((run, ids), dtype=np.int64),
            np.concatenate((fed, news), dtype=np.int64))


def admit(loop, budget: int, ids: list, news: list) -> None:
    """Waiting requests in arrival order while fewer than ``max_num_seqs`` run, the
    ``budget`` of tokens lasts, the blocks of their first chunk are free and the admission
    policy takes them: each appended to ``ids`` with its first chunk's tokens to ``news``."""
    c, tk = loop.computed, loop.tokens
    held = len(loop.running)                # those admitted this step come after
    while loop.waiting and len(loop.running) < loop.max_seqs and budget:
        r = loop.waiting[0]
        cached = int(c[r])                          # 0, or a prompt cached elsewhere
        new = min(int(tk[r]) - cached, budget)
        need = loop.blocks(cached + new)
        if need > loop.free or (loop.running and not loop.admit.fits(
                loop, r, len(loop.running) - held)):
            break
        loop.waiting.popleft()
        loop.running.append(r)
        loop.changed()
        loop.free -= need
        ids.append(r)
        news.append(new)
        budget -= new


def all_running(loop) -> tuple | None:
    """(every running sequence, the tokens each has cached, their sum, the tokens each has,
    the tokens they feed in all), their blocks taken, where the budget and the free blocks
    hold them all (module docstring); None otherwise. The sums are exact: of Python ints
    for up to :data:`FEW` sequences (cheaper than numpy's calls), numpy's int64 beyond."""
    run, bs = loop.ids(), loop.bs
    c, tk = loop.computed[run], loop.tokens[run]
    if run.size > FEW:                          # numpy's passes
        held, tokens = int(np.add.reduce(c)), int(np.add.reduce(tk - c))
        if tokens > loop.budget:
            return None
        need = int(np.add.reduce(-(-tk // bs) + (-c // bs)))
    else:
        cs, tks = c.tolist(), tk.tolist()
        held = sum(cs)
        tokens = sum(tks) - held
        if tokens > loop.budget:
            return None
        need = sum([-(-t // bs) + (-x // bs) for t, x in zip(tks, cs)])
    if need > loop.free:
        return None
    loop.free -= need
    return run, c, held, tk, tokens


def _running(loop, alone: bool) -> tuple[list, int, bool]:
    """The running sequences one at a time: (their (request, new tokens), the budget left,
    whether one was preempted)."""
    budget, out, preempted, i = loop.budget, [], False, 0
    c, tk = loop.computed, loop.tokens
    while i < len(loop.running) and budget > 0:
        r = loop.running[i]
        if alone and tk[r] - c[r] == 1 and loop.done[r]:     # decodes wait a prefill step
            i += 1
            continue
        new = min(tk[r] - c[r], budget)
        need = loop.blocks(c[r] + new) - loop.blocks(c[r])
        while need > loop.free:
            preempted = True
            if loop._preempt() == r:
                break
        else:
            loop.free -= need
            out.append((r, new))
            budget -= new
            i += 1
            continue
        break
    return out, budget, preempted


__all__ = ["schedule", "admit", "all_running"]
