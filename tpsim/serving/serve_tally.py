"""How :func:`tpsim.serving.serve_search.serve_search` accounts for the deployments it
considers, each once: an aggregated (split, max_num_seqs), or a disaggregated (prefill shape,
P, decode shape, D, max_num_seqs) whose decode GPUs hold whole instances. Each is shown, or
dropped for one reason (:data:`REASONS`): so the deployments considered are the shown plus
the dropped.

Two deployments that differ only in max_num_seqs give the same runs where the engine's batch
never reaches the lower of the two (its queue is then the same): such twins are shown as one
row, ``max_num_seqs_alike`` listing the values it stands for.
"""
from __future__ import annotations

from dataclasses import asdict, replace

REASONS = {"memory": "the weights or the longest sequence do not fit",
           "targets": "misses the targets even at 1/32 of its offline rate",
           "rate": "serves fewer requests/s than --rate within the targets",
           "rerun": "a disaggregated split that missed the targets when rerun at its rate",
           "top": "meets the targets, ranked below the rows shown (--top)"}


def instance_reason(inst, point) -> str | None:
    """Why an instance configuration serves no deployment: it does not fit (no instance), or
    it never meets its targets (no run at capacity); None when it serves."""
    return "memory" if inst is None else "targets" if point is None else None


def result_key(c) -> tuple:
    """Everything a candidate reports but its max_num_seqs: equal keys, equal rows."""
    d = asdict(c)
    del d["max_num_seqs"], d["max_num_seqs_alike"]
    return tuple(d.items())


def folded(cands) -> list:
    """``cands`` in order, each twin (equal :func:`result_key`) folded into the first of its
    kind, whose ``max_num_seqs_alike`` lists every max_num_seqs of the twins, ascending."""
    first: dict[tuple, int] = {}
    out = []
    for c in cands:
        k = result_key(c)
        if k in first:
            i = first[k]
            out[i] = replace(out[i], max_num_seqs_alike=tuple(sorted(
                out[i].max_num_seqs_alike + (c.max_num_seqs,))))
        else:
            first[k] = len(out)
            out.append(replace(c, max_num_seqs_alike=(c.max_num_seqs,)))
    return out


__all__ = ["REASONS", "instance_reason", "result_key", "folded"]
