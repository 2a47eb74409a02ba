"""The collectives tpsim prices, and the names other tools give them.

Pure: a name in, tpsim's name out (:func:`tpsim.cost.collectives.collective_time` and the
``tpsim collective --op`` flag read names through :func:`op_name`).
"""
from __future__ import annotations

OPS = ("all-reduce", "reduce-scatter", "all-gather", "broadcast", "all-to-all")
_OP_NAMES = {op.replace("-", ""): op for op in OPS}


def op_name(text):
    """``text`` as tpsim (all-reduce), nccl-tests (all_reduce_perf: all_reduce, alltoall) or
    NCCL (ncclAllReduce: AllReduce) names a collective: any case, '_' or '-' between the words
    or nothing; tpsim's name, or ``text`` unchanged where it names none (the caller refuses it)."""
    if not isinstance(text, str):
        return text
    return _OP_NAMES.get(text.lower().replace("_", "").replace("-", ""), text)
