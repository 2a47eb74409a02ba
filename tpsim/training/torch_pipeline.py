"""torch.distributed.pipelining's interleaved 1F1B as it ran through torch 2.8: one blocking
batch of point-to-point transfers after every time step of its table.

``ScheduleInterleaved1F1B`` of torch 2.8 (``torch/distributed/pipelining/schedules.py``, the
version NeMo AutoModel pinned in its ``uv.lock`` at 89e3a9fdd) is a ``PipelineScheduleMulti``:
every rank computes the whole table (``_get_1f1b_rank_ops``): ``rank`` idle steps, w warm-up
forwards with w = min((v - 1) g + 2 (p - 1 - rank), m v) for g = m / max(1, m // p)
micro-batches a round, then v p + 2 (p - 1 - rank) - (w + rank) idle steps, then (forward,
backward) pairs until every forward has run, then (idle, backward) pairs. Forward k runs model
chunk (k // g) mod v, backward k chunk v - 1 - ((k - w) // g) mod v, each chunk's micro-batches
in order. ``_step_microbatches`` walks the rank's steps; after each it issues one
``batch_isend_irecv`` of what its own action sends and what its neighbours' actions of the same
step send to it, and waits for it (``_wait_batch_p2p``) before the next step: the ranks go in
lock-step, a step ending when its neighbours' step has. In the steady phase neighbouring ranks
run a forward and a backward in the same step, so each step lasts about the longer (the
backward); Megatron-core's schedule (:func:`tpsim.training.pipeline.interleaved`) instead
exchanges once per (forward, backward) pair. torch 2.9 runs the same table on
``_PipelineScheduleRuntime`` (each receive waited just before its chunk): not priced here.

A step's transfers are :class:`~tpsim.training.pipeline.P2P` batches, the programs the same
objects (and, for the timing walk, the same integers: :mod:`tpsim.training.step_programs`) as
Megatron-core's, so the bubble again falls out of running them.
"""
from __future__ import annotations

from .pipeline import (BACKWARD, FORWARD, Compute, Message, Schedule, _Program, _positive,
                       pipeline_schedule)

TORCH = "torch-multi"


def rank_steps(p: int, m: int, v: int, rank: int) -> list:
    """Rank ``rank``'s time steps (module docstring): None (idle) or (kind, micro-batch,
    chunk)."""
    rounds = max(1, m // p)
    g = m // rounds
    total = m * v
    w = min((v - 1) * g + 2 * (p - 1 - rank), total)
    post = v * p + 2 * (p - 1 - rank) - (w + rank)
    out: list = [None] * rank
    seen = {FORWARD: [0] * v, BACKWARD: [0] * v}

    def act(kind: str, chunk: int) -> tuple:
        mb = seen[kind][chunk]
        seen[kind][chunk] += 1
        return kind, mb, chunk
    for k in range(total + w):
        if k < total:
            out.append(act(FORWARD, (k // g) % v))
            if k == w - 1:
                out += [None] * post
        else:
            out.append(None)
        if k >= w:
            out.append(act(BACKWARD, v - 1 - ((k - w) // g) % v))
    return out


def _sent(p: int, v: int, rank: int, step) -> Message | None:
    """What the action ``step`` of ``rank`` sends (None: nothing, or no action)."""
    if step is None:
        return None
    kind, mb, chunk = step
    g = chunk * p + rank
    if kind == FORWARD:
        return Message("activation", mb, g, g + 1) if g < p * v - 1 else None
    return Message("gradient", mb, g, g - 1) if g > 0 else None


def step_batches(p: int, m: int, v: int) -> list[list[tuple]]:
    """Per rank, per time step: (its action, the messages it sends, those it receives): its
    action's output, and its neighbours' (the ranks of the virtual stages next to its own)
    outputs of the same step that go to one of its virtual stages."""
    steps = [rank_steps(p, m, v, r) for r in range(p)]
    n = max(map(len, steps))
    steps = [s + [None] * (n - len(s)) for s in steps]
    sent = [[_sent(p, v, r, a) for a in s] for r, s in enumerate(steps)]
    out = []
    for r in range(p):
        rows = []
        for t in range(n):
            recvs = [msg for q in sorted({(r - 1) % p, (r + 1) % p})
                     if (msg := sent[q][t]) is not None and msg.dst % p == r and q != r]
            sends = (sent[r][t],) if sent[r][t] is not None else ()
            rows.append((steps[r][t], sends, tuple(recvs)))
        out.append(rows)
    return out


def torch_interleaved(p: int, m: int, v: int) -> Schedule:
    """torch 2.8's ``ScheduleInterleaved1F1B`` (module docstring) as programs: each step's
    chunk, then its blocking batch."""
    for name, x in (("p", p), ("m", m), ("v", v)):
        _positive(name, x)
    stages = []
    for r, rows in enumerate(step_batches(p, m, v)):
        P = _Program(p, v, r)
        for action, sends, recvs in rows:
            if action is not None:
                P.run(Compute(*action))
            P.p2p(sends, recvs)
        stages.append(tuple(P.entries))
    return Schedule(TORCH, p, m, v, tuple(stages))


def runtime_schedule(p: int, m: int, v: int = 1, runtime: str = "megatron") -> Schedule:
    """The pipeline ``runtime`` runs: :func:`torch_interleaved` for TORCH with v > 1, else
    Megatron-core's (:func:`tpsim.training.pipeline.pipeline_schedule`)."""
    return torch_interleaved(p, m, v) if v > 1 and runtime == TORCH else \
        pipeline_schedule(p, m, v)


def torch_program(p: int, m: int, v: int, r: int) -> tuple[list, list]:
    """:func:`torch_interleaved`'s program of stage ``r`` as :class:`~tpsim.training.
    step_programs.Shape` keeps it: a compute is 2 chunk + b (b = 1: a backward; plus 2 v for
    the last micro-batch's backward), a batch the tuple of its message ids (sends, then
    receives: 2 (mb p v + src) + 1 for a gradient), and the sends in order."""
    V = p * v

    def code(msg: Message) -> int:
        return 2 * (msg.microbatch * V + msg.src) + (msg.kind == "gradient")
    out, sends = [], []
    for action, sent, recvs in step_batches(p, m, v)[r]:
        if action is not None:
            kind, mb, chunk = action
            b = kind == BACKWARD
            out.append(2 * chunk + b + (2 * v if b and mb == m - 1 else 0))
        ids = tuple(code(x) for x in (*sent, *recvs))
        if ids:
            out.append(ids)
            sends += [code(x) for x in sent]
    return out, sends
