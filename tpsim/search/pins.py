"""A search's dimensions pinned to given values (``tpsim search --tp 8 --pp 4,8
--no-sequence-parallel``): a pinned dimension enumerates only its values, every other one what
the search enumerates unpinned (:mod:`tpsim.search.driver`), so a search without pins is the
search it always was.

A pinned value that can never run with ``--gpus`` (a tp, pp or dp that does not divide it, no
tp x pp x dp that makes it, TP overlap without sequence parallelism) is refused in one line
before anything is priced; one that cannot run in some layouts (sequence parallelism at tp 1,
the distributed optimizer at dp 1, virtual stages at pp 1, a micro-batch that does not divide a
replica's batch) drops those layouts, counted by reason (:data:`PIN_REASONS`).

Without ``--nodes``, a search of more GPUs than its topology holds sizes the topology's network
to hold them (:func:`gpus_nodes`), as ``--nodes`` would.
"""
from __future__ import annotations

import math

from ..base.errors import ConfigError
from ..base.schema import MAX_INT
from ..cluster.nccl import topology_of
from ..layer.context_parallel import check_cp
from ..training.nodes import nodes_needed
from ..spec.layout import CP_COMMS, RECOMPUTE, ZERO_STAGES, Layout

# the Layout fields a search enumerates, which it can pin (recompute is Space.recompute)
PINNABLE = ("tp", "cp", "pp", "dp", "virtual_stages", "micro_batch", "recompute",
            "sequence_parallel", "tp_comm_overlap", "distributed_optimizer", "zero", "ep",
            "expert_tp", "cp_comm")
FLAGS_ON = ("sequence_parallel", "tp_comm_overlap", "distributed_optimizer")
PIN_REASONS = {
    "pinned_tp1": "sequence parallelism or TP overlap pinned on: tp is 1",
    "pinned_dp1": "distributed optimizer or a ZeRO stage pinned on: dp is 1",
    "pinned_vs_pp": "virtual stages pinned above 1: pp is 1",
    "pinned_mb": "micro-batch pinned: does not divide the global batch / dp",
    "cp_seq": "context parallelism: seq_len not a multiple of 2 x cp",
    "cp_mla": "context parallelism with multi-head latent attention (not priced)",
    "cp_unfused": "context parallelism with unfused attention (Transformer Engine's runs a "
                  "flash kernel)",
    "pinned_cp_comm": "context-parallel exchange pinned: none of the pinned runs at this tp x cp "
                      "(a2a: heads per TP rank not divisible by cp; a2a+p2p: cp inside a node)",
}


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _valid(name: str, v) -> bool:
    if name == "recompute":
        return v in RECOMPUTE
    if name == "zero":
        return type(v) is int and v in ZERO_STAGES
    if name == "cp_comm":
        return v in CP_COMMS
    if name in FLAGS_ON:
        return v is True or v is False
    return type(v) is int and 1 <= v <= MAX_INT


def check_pins(pins, gpus: int) -> tuple:
    """``pins`` (field -> a value or values; None: enumerated) as sorted (field, values)
    pairs of the fields pinned, else a ConfigError naming the flag of the first value that can
    never run on ``gpus`` GPUs."""
    if pins is None:
        return ()
    if not isinstance(pins, dict):
        raise ConfigError("pins", "", f"a mapping of {', '.join(PINNABLE)} to values", pins)
    flags, out = Layout.flags(), {}
    for name, given in pins.items():
        if name not in PINNABLE:
            raise ConfigError("pins", "", f"one of {', '.join(PINNABLE)}", name)
        if given is None:
            continue
        values = tuple(given) if isinstance(given, (tuple, list)) else (given,)
        for v in values:
            if not _valid(name, v):
                raise ConfigError(flags[name], "", "a value of the setting", v)
            if name in ("tp", "cp", "pp", "dp", "ep", "expert_tp") and gpus % v:
                raise ConfigError(flags[name], "", f"a divisor of --gpus {gpus} "
                                  f"({', '.join(map(str, divisors(gpus)))})", v)
        if not values:
            raise ConfigError(flags[name], "", "at least one value", given)
        out[name] = tuple(dict.fromkeys(values))
    every = {n: out.get(n, divisors(gpus)) for n in ("tp", "cp", "pp", "dp")}
    if not any(t * c * p * d == gpus for t in every["tp"] for c in every["cp"]
               for p in every["pp"] for d in every["dp"]):
        pinned = [f"{flags[n]} {','.join(map(str, out[n]))}" for n in every if n in out]
        raise ConfigError(" ".join(pinned), "", f"tp x cp x pp x dp = --gpus {gpus}",
                          "no such layout")
    if out.get("tp_comm_overlap") == (True,) and out.get("sequence_parallel") == (False,):
        raise ConfigError("--tp-comm-overlap", "", "--sequence-parallel (Transformer Engine "
                          "overlaps the sequence-parallel collectives)", True)
    return tuple(sorted(out.items()))


# unpinned, context parallelism is tried from this sequence length on (shorter: CP 1), the
# shortest NeMo's and Megatron-Bridge's recipes run with CP > 1 (Llama 3 8B/70B at 16K);
# pinned, any cp that splits the sequence in 2 cp chunks
CP_FROM_SEQ = 16384


def grid(pins: tuple, gpus: int, seq_len: int):
    """(tp, cp, pp, dp) with tp x cp x pp x dp = ``gpus``, each pinned value or, unpinned,
    every divisor (cp: 1, and with seq_len >= :data:`CP_FROM_SEQ` every divisor splitting the
    sequence in 2 cp chunks)."""
    for tp in pick(pins, "tp", divisors(gpus)):
        if gpus % tp:
            continue
        cps = [c for c in divisors(gpus // tp) if seq_len % (2 * c) == 0] \
            if seq_len >= CP_FROM_SEQ else []
        for cp in pick(pins, "cp", [1] + [c for c in cps if c > 1]):
            if (gpus // tp) % cp:
                continue
            for pp in pick(pins, "pp", divisors(gpus // (tp * cp))):
                dp = gpus // (tp * cp * pp)
                if gpus % (tp * cp * pp) == 0 and dp in pick(pins, "dp", (dp,)):
                    yield tp, cp, pp, dp


def cp_reason(model, tp: int, cp: int, seq_len: int, attention: str | None = None) -> str | None:
    """Why ``cp`` ranks cannot split this model's sequence (a :data:`PIN_REASONS`-like
    reason the search counts), or None (:func:`tpsim.layer.context_parallel.check_cp`;
    multi-head latent attention runs without CP, unfused ``attention`` (None: the model's)
    neither)."""
    if cp > 1 and model.mla:
        return "cp_mla"
    if cp > 1 and (attention or model.attention) == "unfused":
        return "cp_unfused"
    try:
        check_cp(model, tp, cp, "p2p", seq_len, "fused")
    except ConfigError:
        return "cp_seq"
    return None


def pick(pins: tuple, name: str, today) -> list:
    """The values of ``name`` to enumerate: ``today``'s unpinned, else the pinned ones."""
    for n, values in pins:
        if n == name:
            return list(values)
    return list(today)


def micro_batches(pins: tuple, replica_batch: int) -> tuple[list[int], int]:
    """The micro-batches to enumerate for a replica's batch, and how many pinned ones do not
    divide it."""
    every = divisors(replica_batch)
    chosen = pick(pins, "micro_batch", every)
    return [mb for mb in chosen if replica_batch % mb == 0], \
        sum(replica_batch % mb != 0 for mb in chosen)


def virtual_stages(pins: tuple, layers: int, pp: int) -> tuple[list[int], int]:
    """The virtual stages to enumerate at ``pp``, and how many pinned ones need pp > 1."""
    chosen = pick(pins, "virtual_stages",
                  [1] + (list(range(2, layers // pp + 1)) if pp > 1 else []))
    return [v for v in chosen if v == 1 or pp > 1], sum(v > 1 and pp == 1 for v in chosen)


def zero_stages(dp: int, pp: int, pins: tuple,
                with_pp: bool = False) -> list[tuple[bool, int]]:
    """The (distributed optimizer, zero) pairs to enumerate: ZeRO 0 to 3, ZeRO-1 as the
    distributed optimizer (zero 0, as Megatron names it); only ZeRO 0 at dp 1 (``dp``: the
    dp x cp ranks the state shards over; nothing to shard); ZeRO-2 and 3 without a pipeline
    (DeepSpeed refuses them with pipeline parallelism, Megatron-core's distributed optimizer is
    ZeRO-1), and ``with_pp`` (``--zero-with-pp``) with one too, as PyTorch's pipeline schedules
    run FSDP2 (:mod:`tpsim.training.sharded_dp`). ``--distributed-optimizer`` pins ZeRO-1,
    ``--no-distributed-optimizer`` the others."""
    dos = pick(pins, "distributed_optimizer", (False, True))
    out = [(z == 1, 0 if z == 1 else z) for z in pick(pins, "zero", ZERO_STAGES)]
    return [(do, z) for do, z in out if do in dos and (dp > 1 or (not do and z == 0))
            and (z < 2 or pp == 1 or with_pp)]


def knobs(tp: int, dp: int, recompute, pins: tuple, pp: int = 1,
          zero_with_pp: bool = False) -> tuple[list, str | None]:
    """(sequence parallel, TP overlap, recompute, (distributed optimizer, ZeRO stage))
    combinations (:func:`zero_stages`), and when pins leave none, the reason
    (:data:`PIN_REASONS`)."""
    sps = [sp for sp in pick(pins, "sequence_parallel", (False, True)) if tp > 1 or not sp]
    ovs = pick(pins, "tp_comm_overlap", (False, True))
    dos = zero_stages(dp, pp, pins, zero_with_pp)
    out = [(sp, ov, rc, do) for sp in sps for ov in ovs if sp or not ov
           for rc in recompute for do in dos]
    if out:
        return out, None
    return out, "pinned_dp1" if any(sp or not ov for sp in sps for ov in ovs) else "pinned_tp1"


def gpus_nodes(topology, gpus: int) -> int | None:
    """The nodes that hold ``gpus`` GPUs when the topology has fewer and its network can be
    sized (:func:`tpsim.training.nodes.nodes_needed`), else None (the
    topology as it is: a job too large for it is refused by check_fits)."""
    topo = topology_of(topology)
    return nodes_needed(topo, gpus) or None
