"""Pipeline parallelism: 1F1B and interleaved 1F1B as data, and their step graph.

A schedule is, for every pipeline stage, the exact sequence of what that stage's program does,
as Megatron-core's ``pipeline_parallel/schedules.py`` issues it: forward and backward *chunks*
(one model chunk on one micro-batch) and blocking point-to-point batches (its
``batch_isend_irecv`` followed by a device synchronize, so each batch ends only when all of its
sends and receives have completed). Nothing is assumed about the bubble: it falls out of running
these sequences on in-order streams (:func:`tpsim.sim.schedule.run`).

* :func:`one_f_one_b` (``forward_backward_pipelining_without_interleaving``): stage r runs
  w = min(p - r - 1, m) warm-up forwards, then m - w steady (forward, send_forward_recv_backward,
  backward, send_backward_recv_forward) pairs, then w cool-down backwards.
* :func:`interleaved` (``forward_backward_pipelining_with_interleaving``): v model chunks per
  stage, chunk c of stage r is virtual stage c p + r; micro-batches go through the chunks in
  groups of p (``get_schedule_table``); warm-up (p - r - 1) 2 + (v - 1) p forwards (all m v when
  that is more), steady forward-backward pairs each followed by one combined p2p batch, cool-down.

For equal stages and free transfers the idle time of every stage is (p - 1)(t_f + t_b) / v for
chunk times t_f, t_b of a whole stage: the bubble fraction (p - 1) / (m v) of Narayanan et al.
2021 (section 2.2), which the tests check against the simulation.

:class:`StepGraph` collects the ops of a whole step (chunks, transfers and what the step module
adds: gradient buckets, the optimizer) with their durations, orders them into a valid program
order and runs them; :func:`add_pipeline` puts a schedule into it. A transfer between two stages
starts when both sides have posted it (each side's previous op has ended: NCCL's send and
receive meet), runs on the directed link between the two stages (one stream per direction, so
transfers on a link queue in order), and both sides' next ops wait for it.
"""
from __future__ import annotations

from ..base.record import record
from ..spec.pipeline_layout import check_layers, mtp_count

FORWARD, BACKWARD = "F", "B"


@record
class Compute:
    """One chunk: ``kind`` F or B of model chunk ``chunk`` (0..v-1 on its stage) on a micro-batch."""
    kind: str
    microbatch: int
    chunk: int = 0

    def __str__(self) -> str:
        return f"{self.kind}{self.microbatch}" + (f".{self.chunk}" if self.chunk else "")


@record
class Message:
    """An activation (forward) or a gradient (backward) of one micro-batch between the virtual
    stages ``src`` and ``dst`` (virtual stage = chunk * p + stage)."""
    kind: str          # activation | gradient
    microbatch: int
    src: int
    dst: int


@record
class P2P:
    """One blocking batch of sends and receives (Megatron's ``_communicate``)."""
    sends: tuple[Message, ...]
    recvs: tuple[Message, ...]

    def __str__(self) -> str:
        parts = [f"send {m.kind[0]}{m.microbatch}>{m.dst}" for m in self.sends]
        parts += [f"recv {m.kind[0]}{m.microbatch}<{m.src}" for m in self.recvs]
        return "[" + ", ".join(parts) + "]"


@record
class Schedule:
    """Per stage, its program: Compute and P2P entries in issue order."""
    name: str
    pp: int
    microbatches: int
    chunks: int
    stages: tuple[tuple, ...]

    def text(self, with_p2p: bool = False) -> str:
        """One line per stage: its chunks in order (``F3`` forward of micro-batch 3, ``B0.1``
        backward of micro-batch 0 on model chunk 1), optionally with the p2p batches."""
        return "\n".join(f"stage {r}: " + " ".join(str(e) for e in prog
                                                  if with_p2p or isinstance(e, Compute))
                         for r, prog in enumerate(self.stages))


class _Program:
    """Builds one stage's program, dropping transfers to or from outside the pipeline."""

    def __init__(self, p: int, v: int, stage: int):
        self.last, self.stage, self.entries = p * v - 1, stage, []
        self.p = p

    def vs(self, chunk: int) -> int:
        return chunk * self.p + self.stage

    def needs(self, c: Compute) -> Message | None:
        """The message a chunk receives before it runs (None: the first or last virtual stage)."""
        g = self.vs(c.chunk)
        if c.kind == FORWARD:
            return Message("activation", c.microbatch, g - 1, g) if g > 0 else None
        return Message("gradient", c.microbatch, g + 1, g) if g < self.last else None

    def makes(self, c: Compute) -> Message | None:
        """The message a chunk sends once it has run."""
        g = self.vs(c.chunk)
        if c.kind == FORWARD:
            return Message("activation", c.microbatch, g, g + 1) if g < self.last else None
        return Message("gradient", c.microbatch, g, g - 1) if g > 0 else None

    def run(self, c: Compute) -> None:
        self.entries.append(c)

    def p2p(self, sends=(), recvs=()) -> None:
        sends = tuple(m for m in sends if m is not None)
        recvs = tuple(m for m in recvs if m is not None)
        if sends or recvs:
            self.entries.append(P2P(sends, recvs))


def _positive(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, not {v!r}")


def one_f_one_b(p: int, m: int) -> Schedule:
    """Megatron-core's 1F1B without interleaving on ``p`` stages and ``m`` micro-batches."""
    _positive("p", p)
    _positive("m", m)
    stages = []
    for r in range(p):
        P = _Program(p, 1, r)
        F = [Compute(FORWARD, i) for i in range(m)]
        B = [Compute(BACKWARD, i) for i in range(m)]
        w = min(p - r - 1, m)
        rest = m - w
        for i in range(w):                                   # warm-up
            P.p2p(recvs=(P.needs(F[i]),))
            P.run(F[i])
            P.p2p(sends=(P.makes(F[i]),))
        if rest:
            P.p2p(recvs=(P.needs(F[w]),))
        for i in range(rest):                                # steady 1F1B
            P.run(F[w + i])
            P.p2p(sends=(P.makes(F[w + i]),), recvs=(P.needs(B[i]),))
            P.run(B[i])
            nxt = (P.needs(F[w + i + 1]),) if i < rest - 1 else ()
            P.p2p(sends=(P.makes(B[i]),), recvs=nxt)
        for i in range(rest, m):                             # cool-down
            P.p2p(recvs=(P.needs(B[i]),))
            P.run(B[i])
            P.p2p(sends=(P.makes(B[i]),))
        stages.append(tuple(P.entries))
    return Schedule("1f1b", p, m, 1, tuple(stages))


def schedule_table(m: int, v: int, group: int) -> list[tuple[int, int]]:
    """(micro-batch, model chunk) of each forward in order: ``group`` micro-batches through
    chunk 0, the same through chunk 1, ..., then the next group (Megatron-core's
    ``get_schedule_table``; the last group takes what is left)."""
    table = []
    for lo in range(0, m, group):
        hi = m if lo + group >= m else lo + group
        table += [(mb, c) for c in range(v) for mb in range(lo, hi)]
    return table


def interleaved_warmup(p: int, v: int, stage: int, m: int) -> int:
    """Warm-up forwards of ``stage``: (p - stage - 1) 2 + (v - 1) p, or all m v when more."""
    w = (p - stage - 1) * 2 + (v - 1) * p
    return min(w, m * v)


def interleaved(p: int, m: int, v: int) -> Schedule:
    """Megatron-core's interleaved 1F1B: ``v`` model chunks per stage, groups of p micro-batches.

    Megatron-core requires m to be a multiple of p here (its default group size p; a remainder
    under p leaves dependency bubbles it refuses to run).
    """
    for name, x in (("p", p), ("m", m), ("v", v)):
        _positive(name, x)
    if m % p:
        raise ValueError(f"interleaving needs micro-batches ({m}) to be a multiple of p ({p})")
    table = schedule_table(m, v, p)
    total = m * v
    stages = []
    for r in range(p):
        P = _Program(p, v, r)
        F = [Compute(FORWARD, mb, c) for mb, c in table]
        B = [Compute(BACKWARD, mb, v - 1 - c) for mb, c in table]
        w = interleaved_warmup(p, v, r, m)
        rest = total - w
        P.p2p(recvs=(P.needs(F[0]),))
        for k in range(w):                                   # warm-up
            P.run(F[k])
            recvs = (P.needs(F[k + 1]),) if k + 1 < total else ()
            if k == w - 1 and rest:
                recvs += (P.needs(B[0]),)
            P.p2p(sends=(P.makes(F[k]),), recvs=recvs)
        for k in range(rest):                                # steady: F, B, one combined batch
            P.run(F[w + k])
            P.run(B[k])
            recvs = (P.needs(F[w + k + 1]),) if w + k + 1 < total else ()
            P.p2p(sends=(P.makes(F[w + k]), P.makes(B[k])), recvs=recvs + (P.needs(B[k + 1]),))
        if not rest:
            P.p2p(recvs=(P.needs(B[0]),))
        for k in range(rest, total):                         # cool-down
            P.run(B[k])
            nxt = (P.needs(B[k + 1]),) if k + 1 < total else ()
            P.p2p(sends=(P.makes(B[k]),), recvs=nxt)
        stages.append(tuple(P.entries))
    return Schedule("interleaved-1f1b", p, m, v, tuple(stages))


def pipeline_schedule(p: int, m: int, v: int = 1) -> Schedule:
    """1F1B for v = 1, interleaved 1F1B otherwise."""
    return one_f_one_b(p, m) if v == 1 else interleaved(p, m, v)


def in_flight(schedule: Schedule, stage: int) -> list[int]:
    """Per model chunk of ``stage``, the most micro-batches whose forward has run and whose
    backward has not, at the moment the stage holds the most activations in all (counted in
    chunks: the program order is the order the stage runs them)."""
    live = [0] * schedule.chunks
    best, at = -1, list(live)
    for e in schedule.stages[stage]:
        if isinstance(e, Compute):
            live[e.chunk] += 1 if e.kind == FORWARD else -1
            if sum(live) > best:
                best, at = sum(live), list(live)
    return at


def stage_totals(virtual: list[int] | tuple[int, ...], pp: int, v: int) -> list[int]:
    """Layers each pipeline stage holds over its ``v`` chunks, from the layers of each virtual
    stage (chunk * pp + stage, :func:`split_layers`)."""
    return [sum(virtual[c * pp + r] for c in range(v)) for r in range(pp)]


def split_layers(layers: int, pp: int, v: int = 1, first: int | None = None,
                 last: int | None = None) -> list[int]:
    """Layers of each virtual stage (chunk * pp + stage), as Megatron-core splits them
    (``get_num_layers_to_build``, megatron/core/transformer/transformer_block.py; checks in
    TransformerConfig.__post_init__): each pipeline stage holds n_r layers, ``first`` on stage 0
    and ``last`` on stage pp - 1 when given (its --decoder-first/last-pipeline-num-layers), the
    rest split evenly over the other stages (layers / pp each without either); each of a
    stage's ``v`` model chunks holds n_r / v of them. Raises ValueError naming what does not
    divide: the middle stages' share, or a stage's layers over its v chunks."""
    stages = _stage_counts(layers, pp, first, last)
    for r, n in enumerate(stages):
        if n % v:
            raise ValueError(f"{n} layers on pipeline stage {r} do not split evenly over "
                             f"{v} virtual stages")
    return [stages[r] // v for _ in range(v) for r in range(pp)]


def layout_layers(layers: int, mtp_layers: int | None, lay) -> list[int]:
    """Layers of each virtual stage of Layout ``lay``: its --pipeline-layout's transformer
    layers (:func:`tpsim.spec.pipeline_layout.check_layers`, its ``m`` checked against
    ``mtp_layers`` when given), else :func:`split_layers` (a ValueError naming what does not
    divide); and the ``mtp_layers`` multi-token-prediction layers (None: the layout's ``m``,
    none without one) counted in the last virtual stage, where Megatron-core runs them
    (``mtp_on_this_rank``: without a layout, the last pipeline stage's last virtual stage;
    with one, where its ``m`` stand, which tpsim accepts only there)."""
    if lay.pipeline_layout is not None:
        counts = check_layers(lay.pipeline_layout, lay.pp, lay.virtual_stages, layers,
                              mtp_layers)
        mtp = mtp_count(lay.pipeline_layout)
    else:
        counts = split_layers(layers, lay.pp, lay.virtual_stages, lay.first_stage_layers,
                              lay.last_stage_layers)
        mtp = mtp_layers or 0
    return counts[:-1] + [counts[-1] + mtp]


def mtp_of(lay, model) -> int:
    """The multi-token-prediction layers Layout ``lay`` trains: its ``mtp_layers``
    (--mtp-layers, Megatron's --mtp-num-layers), by default the model's ``mtp_layers``."""
    return model.mtp_layers if lay.mtp_layers is None else lay.mtp_layers


def _stage_counts(layers: int, pp: int, first: int | None, last: int | None) -> list[int]:
    """Layers of each pipeline stage: ``first``/``last`` on the end stages, the rest evenly."""
    if first is None and last is None:
        if layers % pp:
            raise ValueError(f"{layers} layers do not split evenly over {pp} pipeline stages")
        return [layers // pp] * pp
    ends = [x for x in (first, last) if x is not None]
    middle = pp - len(ends)
    rest = layers - sum(ends)
    if pp < len(ends) or rest < 0 or (middle and rest % middle) or bool(rest) != bool(middle):
        if pp == 1:
            raise ValueError(f"{layers} layers on one stage: --first-stage-layers and "
                             "--last-stage-layers set the end stages' layers of a pipeline")
        said = "/".join("-" if x is None else str(x) for x in (first, last))
        raise ValueError(f"{layers} layers: first/last stage layers {said} leave {rest} "
                         f"for {middle} middle stages, not an even split")
    out = [rest // middle if middle else 0] * pp
    if first is not None:
        out[0] = first
    if last is not None:
        out[-1] = last
    return out


@record
class StageOps:
    """What :func:`add_pipeline` added for one stage: its last op(s) and, per model chunk, the
    ops of the last micro-batch's backward (split as asked, for gradient buckets)."""
    end: tuple[int, ...]
    last_backward: dict


def _transfer_stream(src: int, dst: int) -> str:
    return f"p2p {src}>{dst}"


def add_pipeline(g, schedule: Schedule, chunk_s, transfer_s, split=None,
                 waits=None) -> list[StageOps]:
    """Put ``schedule`` into the :class:`~tpsim.training.step_graph.StepGraph` ``g``.

    ``chunk_s(stage, chunk, kind)``: seconds of one chunk; ``transfer_s(src_stage, dst_stage)``:
    seconds of one p2p transfer; ``split(stage, chunk)``: None, or the (name, seconds) pieces the
    last micro-batch's backward of that chunk runs as (they sum to the chunk's time);
    ``waits``: None, or {(stage, chunk): seconds} the first forward of that chunk waits for
    the weight all-gather first (a "dp" op before it). Each stage
    runs on stream ``stage{r}``; a transfer on ``p2p {a}>{b}``, after both sides' previous ops.
    """
    p = schedule.pp
    transfer = {}
    for r, prog in enumerate(schedule.stages):           # transfers, in each sender's order
        for e in prog:
            if isinstance(e, P2P):
                for msg in e.sends:
                    a, b = msg.src % p, msg.dst % p
                    transfer[msg] = g.add(f"{msg.kind}{msg.microbatch} {msg.src}>{msg.dst}",
                                          _transfer_stream(a, b), transfer_s(a, b),
                                          phase="forward" if msg.kind == "activation" else "backward",
                                          block=f"stage{a}", kind="p2p")
    out = []
    last_mb = schedule.microbatches - 1
    for r, prog in enumerate(schedule.stages):
        stream, prev, pieces = f"stage{r}", (), {}
        for e in prog:
            if isinstance(e, P2P):
                ids = tuple(transfer[m] for m in (*e.sends, *e.recvs))
                for t in ids:
                    g.depend(t, prev)
                prev = ids
                continue
            phase = "forward" if e.kind == FORWARD else "backward"
            if waits and e.kind == FORWARD and e.microbatch == 0 and (r, e.chunk) in waits:
                prev = (g.add(f"s{r}.chunk{e.chunk}.param-gather-wait", stream,
                              waits[r, e.chunk], prev, phase, f"stage{r}", "dp"),)
            parts = split(r, e.chunk) if split and e.kind == BACKWARD and \
                e.microbatch == last_mb else None
            if parts is None:
                parts = [("", chunk_s(r, e.chunk, e.kind))]
            ids = []
            for label, seconds in parts:
                ids.append(g.add(f"s{r}.{e}{'.' + label if label else ''}", stream, seconds,
                                 prev, phase, f"stage{r}", "compute"))
                prev = (ids[-1],)
            if len(ids) > 1 or (split and e.kind == BACKWARD and e.microbatch == last_mb):
                pieces[e.chunk] = tuple(ids)
        out.append(StageOps(tuple(prev), pieces))
    return out


def warmup_forwards(p: int, v: int, m: int, stage: int) -> int:
    """Warm-up forwards of ``stage`` (Megatron-core's schedules.py): 1F1B min(p - r - 1, m);
    interleaved min(2 (p - r - 1) + (v - 1) p, m v)
    (:func:`interleaved_warmup`)."""
    return min(p - stage - 1, m) if v == 1 else interleaved_warmup(p, v, stage, m)


def table_forwards(n: int, p: int, v: int) -> tuple[int, ...]:
    """Forwards of each model chunk among the first ``n`` of the schedule table (groups of p
    micro-batches through chunk 0, then chunk 1, ...:
    :func:`schedule_table`): chunk c has
    (n // p v) p + min(max(n mod p v - c p, 0), p); 1F1B (v = 1): n."""
    if v == 1:
        return (n,)
    period = p * v
    return tuple(n // period * p + min(max(n % period - c * p, 0), p) for c in range(v))
