"""The fastest layout of a training job that fits: enumerate, prune, bound, re-price exactly.

Every layout with tp x cp x pp x dp = gpus is enumerated:

* tp: a divisor of the model's heads and ffn_hidden that divides or is a multiple of its
  kv_heads (:meth:`tpsim.spec.model.ModelConfig.check_tp`), inside one node unless asked otherwise
  (TP across nodes runs its collectives on the NICs: Megatron's users keep it in the node);
* cp: 1, and at long sequences every divisor that splits them in 2 cp chunks
  (:func:`tpsim.search.pins.grid`), each with every exchange that runs there
  (:mod:`tpsim.search.cp_comms`);
* pp with v virtual stages: layers / (pp v) per model chunk when that divides; also Megatron's
  uneven splits, the first and last stage holding fewer or more layers than the e of each
  middle stage, in a window sized by the output layer's cost (:mod:`tpsim.search.splits`),
  and interleaving needs the micro-batches to be a multiple of pp;
* micro-batch: every divisor of the replica's batch (global batch / dp);
* sequence parallelism on/off (tp > 1), TP communication overlap on/off (needs SP),
  recomputation none/selective/full, distributed optimizer on/off and ZeRO-2/3 (dp > 1;
  beside a pipeline with ``zero_with_pp``);

each, or only the values pinned (``tpsim search --tp 8 --pp 4,8``: :mod:`tpsim.search.pins`),
with every other setting of predict held fixed (``fixed``, ``framework``:
:mod:`tpsim.search.fixed`).

What cannot run is dropped, counted by reason (:data:`REASONS`); every other layout is priced:
its fullest stage's memory exactly as :func:`tpsim.training.predict.predict` counts it, its step time
by a lower bound of the step simulation (:mod:`tpsim.search.step`, :mod:`tpsim.training.step_bound`).
Those that do not fit are dropped. The rest are re-priced with :func:`tpsim.training.predict.predict`
in the order of their bounds until the next bound exceeds the k-th best simulated step time:
a layout left out has a bound, and so a step time, above every candidate reported (branch and
bound), and every number reported is predict's.
"""
from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import PurePath

from ..base.errors import ConfigError
from ..base.schema import MAX_INT
from ..spec.frameworks import check_given
from ..spec.model import ModelConfig, load_model
from ..training.predict import _settings
from ..spec.layout import RECOMPUTE, Layout
from ..base.collector import paused_gc
from .jobs import Workers
from .fixed import changed_settings, held, probe
from .pins import check_pins, gpus_nodes, pick
from .space import REASONS, Space, enumerate_layouts
from .parts import same_recompute
from .run import Run
from ..training.moe_overlap import check_overlap
from ..training.nodes import check_fits, with_nodes
from ..spec.parallel import Parallelism
from ..cluster.nccl import release_of, topology_of

BOUND_TOLERANCE = 1e-9      # float rounding between the bound's sums and the simulation's
MAX_TOP = 100               # candidates a search re-prices and reports, at most


@dataclass(frozen=True)
class Candidate:
    """A layout re-priced by :func:`tpsim.training.predict.predict`: its ``step``
    (:class:`~tpsim.sim.result.StepTimes`) and fullest stage's ``memory``, with the bound the
    search ranked it by."""
    layout: Layout
    bound_s: float
    step: object = field(repr=False)
    memory: object = field(repr=False)

    @property
    def step_s(self) -> float:
        return self.step.time_s


@dataclass(frozen=True)
class SearchResult:
    """``evaluated``: layouts priced (memory and step bound); ``fitting``: those that fit;
    ``candidates``: the best ``top`` by predict's step time; ``repriced``: layouts predict ran
    for; ``dropped``: reason -> count (:data:`REASONS`); ``max_gap``: the largest relative gap
    between a re-priced layout's bound and its simulated step."""
    model: str
    topology: str
    gpus: int
    global_batch: int
    evaluated: int
    fitting: int
    candidates: tuple[Candidate, ...]
    repriced: int
    dropped: dict
    max_gap: float
    run: Run = field(repr=False)
    nodes: int | None = None
    pricing_s: float = 0.0          # wall seconds to enumerate and price every layout
    notes: tuple[str, ...] = ()
    sources: tuple[str, str] = ("", "")   # --model and --topology as given (a name or a path)
    nodes_from_gpus: bool = False   # the network sized to ``nodes`` for --gpus (no --nodes)
    pins: tuple = ()                # (field, values) of the dimensions pinned
    fixed: dict = field(default_factory=dict)   # the settings held fixed away from defaults
    framework: str | None = None    # the stack whose preset filled them (--framework)
    nccl: str = "topology"          # the NCCL release priced (tpsim.cluster.nccl)


def _run(model, topology, nodes, seq_len, dtype, global_batch, checked: Layout | None = None,
         fixed: dict | None = None) -> Run:
    """What every layout of the search shares: the model, the topology sized to ``nodes``,
    and the settings a :class:`~tpsim.spec.layout.Layout` checks, resolved, those of
    ``checked`` (the fixed settings ``fixed`` checked together:
    :func:`tpsim.search.fixed.probe`) included."""
    shared = (checked or Layout()).replace(tp=1, seq_len=seq_len, dtype=dtype, nodes=nodes)
    m = model if isinstance(model, ModelConfig) else load_model(model)
    topo = topology_of(topology)
    if nodes is not None:
        topo = with_nodes(topo, nodes)
    m, topo, lay = _settings(m, topo, shared)
    if (fixed or {}).get("mtp_layers") is not None:     # the MTP the run trains, as predict's
        m = dataclasses.replace(m, mtp_layers=fixed["mtp_layers"])
    kept = tuple(sorted((k, v) for k, v in changed_settings(fixed or {}).items()
                        if k not in ("dropout", "attention")))    # the Run's own, resolved
    return Run(m, topo, lay.seq_len, lay.dtype, lay.dropout, lay.attention, global_batch, kept)


def _check(gpus, global_batch, top, jobs, tp_across_nodes=False, progress=None,
           zero_with_pp=False) -> None:
    for flag, v in (("--gpus", gpus), ("--global-batch", global_batch), ("--top", top),
                    ("--jobs", jobs)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INT:
            raise ConfigError(flag, "", f"a positive integer (at most {MAX_INT})", v)
    if top > MAX_TOP:           # each one re-priced by the step simulation and kept whole
        raise ConfigError("--top", "", f"at most {MAX_TOP} candidates", top)
    cores = os.cpu_count() or 1
    if jobs > cores:            # a process each: more than the cores only adds start-up
        raise ConfigError("--jobs", "", f"at most the {cores} CPU cores of this machine", jobs)
    for flag, value in (("--tp-across-nodes", tp_across_nodes), ("--zero-with-pp", zero_with_pp)):
        if not isinstance(value, bool):
            raise ConfigError(flag, "", "true or false", value)
    if progress is not None and not callable(progress):
        raise ConfigError("progress", "", "None or a function (phase, done, total)", progress)


def equivalent(run: Run, lay: Layout) -> Layout:
    """The layout that runs exactly as ``lay`` does: selective recomputation of the default
    modules with fused attention is no recomputation (:func:`tpsim.search.parts.same_recompute`)."""
    recompute, modules = same_recompute(run, lay.recompute)
    if recompute != lay.recompute:
        return dataclasses.replace(lay, recompute=recompute, recompute_modules=modules)
    return lay


def pipelines(layouts: list[Layout]) -> list[list[int]]:
    """Indices of the layouts that share a pipeline (pp, virtual stages, the layers' split):
    one array pass each (:func:`tpsim.search.price.price_pipelines`)."""
    groups: dict = {}
    for i, lay in enumerate(layouts):
        key = (lay.pp, lay.virtual_stages, lay.first_stage_layers, lay.last_stage_layers)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


PROGRESS_STEPS = 8      # the pricing reports its progress this many times


def bound_layouts(workers, layouts: list[Layout], progress=None):
    """(step-time bound, fullest stage's total bytes, fits) of every layout, in order."""
    out = [None] * len(layouts)
    groups = pipelines(layouts)
    usable = workers.run.topo.device.usable_bytes
    done = 0
    step = -(-len(groups) // PROGRESS_STEPS)
    for start in range(0, len(groups), step):
        chunk = groups[start:start + step]
        for g, rows in zip(chunk, workers.bound([[layouts[i] for i in g] for g in chunk])):
            for i, (bound, nbytes, need) in zip(g, rows):
                out[i] = (bound, nbytes, need <= usable(layouts[i].memory_headroom))
            done += len(g)
        if progress:
            progress("pricing layouts", done, len(layouts))
    return out


def reprice(workers, ranked: list, top: int, progress=None) -> list[Candidate]:
    """Branch and bound: simulate the layouts of ``ranked`` ((layout, bound), bounds
    ascending) with :func:`tpsim.training.predict.predict` until the next bound exceeds the ``top``-th
    best step time found (a bound never exceeds its layout's step time). An interleaved
    layout's bound is first tightened (:meth:`tpsim.search.jobs.Workers.tight`: the cool-down,
    which a 1F1B schedule does not have); one that rises goes back in line at its new bound."""
    cands, times, seen, later = [], [], set(), []     # later: (tighter bound, order, layout)
    i = 0

    def kth() -> float:
        return times[top - 1] if len(times) >= top else math.inf

    def due() -> bool:
        nxt = min(ranked[i][1] if i < len(ranked) else math.inf,
                  later[0][0] if later else math.inf)
        return nxt < math.inf and nxt <= kth() * (1 + BOUND_TOLERANCE)   # nothing left: done
    while due():
        batch = []
        while len(batch) < workers.jobs and due():
            if later and (i == len(ranked) or later[0][0] <= ranked[i][1]):
                bound, _, lay = heapq.heappop(later)
                batch.append((lay, bound))
                continue
            lay, bound = ranked[i]
            i += 1
            same = equivalent(workers.run, lay)
            if same in seen:              # the same run under another name: simulated once
                continue
            seen.add(same)
            tight = max(bound, workers.tight(lay)) if lay.virtual_stages > 1 else bound
            if tight > bound:
                heapq.heappush(later, (tight, i, lay))
            else:
                batch.append((lay, bound))
        for (lay, bound), (step, mem) in zip(batch, workers.predict([b[0] for b in batch])):
            cands.append(Candidate(lay, bound, step, mem))
            bisect.insort(times, step.time_s)
        if progress:
            progress("re-pricing with the step simulation", len(cands), None)
    return cands


def _priced(model, topology, gpus, global_batch, seq_len, dtype, nodes, top, jobs,
            tp_across_nodes, memory_headroom=0.0, progress=None, pins=None, zero_with_pp=False,
            fixed=None):
    """The run, the layouts, (reason -> count) dropped, and every layout's bound and memory;
    ``fixed``: the settings held fixed and ``pins`` as :func:`tpsim.search.fixed.held` returns
    them."""
    _check(gpus, global_batch, top, jobs, tp_across_nodes, progress, zero_with_pp)
    Layout(memory_headroom=memory_headroom)       # checked as predict checks it
    pinned = check_pins(pins, gpus)
    run = _run(model, topology, nodes if nodes is not None else gpus_nodes(topology, gpus),
               seq_len, dtype, global_batch, fixed and probe(fixed, pins), fixed)
    check_fits(run.topo, Parallelism(tp=gpus))
    if run.setting("overlap_moe_comm"):       # what no layout can change (a dense model)
        check_overlap(run.layout(), 2 if run.model.moe else 1)
    if run.model.moe and run.setting("shard_group"):      # its experts' replicas: not bounded
        raise ConfigError("--shard-group", "", "none with a mixture of experts under tpsim "
                          "search (tpsim predict prices it)", run.setting("shard_group"))
    space = Space(gpus, global_batch, tp_across_nodes, memory_headroom=memory_headroom,
                  recompute=tuple(pick(pinned, "recompute", RECOMPUTE)), pins=pinned,
                  zero_with_pp=zero_with_pp,
                  fixed=tuple(changed_settings(fixed or {}).items()))
    layouts, dropped = enumerate_layouts(run.model, run.topo, space, run.seq_len)
    if not layouts:
        why = ", ".join(f"{n:,} {REASONS[k]}" for k, n in dropped.most_common())
        raise ConfigError("--gpus", "", f"a number of GPUs with a layout that can run at "
                          f"--global-batch {global_batch} (none of the {sum(dropped.values()):,} "
                          f"layouts of {gpus} GPUs{' pinned' if pinned else ''} can: {why})")
    return run, layouts, dropped


def _ranked(layouts, priced, indices) -> list:
    fitting = [i for i in indices if priced[i][2]]
    return [(layouts[i], priced[i][0]) for i in sorted(fitting, key=lambda i: (priced[i][0], i))]


def search(model, topology, gpus: int, global_batch: int, *, seq_len: int | None = None,
           dtype: str | None = None, nodes: int | None = None, top: int = 10, jobs: int = 1,
           tp_across_nodes: bool = False, progress=None,
           memory_headroom: float = 0.0, pins: dict | None = None,
           zero_with_pp: bool = False, fixed: dict | None = None,
           framework: str | None = None, nccl: str | None = None) -> SearchResult:
    """The ``top`` fastest layouts of ``model`` on ``gpus`` GPUs of ``topology`` at
    ``global_batch`` sequences per step that fit in memory, keeping ``memory_headroom`` of
    it free (:class:`~tpsim.spec.layout.Layout`) (module docstring); ``pins``: field -> the
    values of the dimensions pinned (:mod:`tpsim.search.pins`); ``zero_with_pp``: also
    ZeRO-2/3 with a pipeline; ``fixed``: Layout field -> value of the settings every layout
    runs with, ``framework`` a stack's preset of them, as ``tpsim predict --framework``
    (:mod:`tpsim.search.fixed`). Without ``nodes``, a topology of fewer GPUs than ``gpus`` has
    its network sized to hold them (:func:`gpus_nodes`); ``nccl``: the NCCL release priced, the
    layout's setting as ``seq_len`` is (:mod:`tpsim.search.fixed` OWN;
    :func:`~tpsim.cluster.nccl.topology_of`; None: the file's own values)."""
    start, given = time.perf_counter(), topology
    topology = topology_of(topology, nccl)
    values, pins = held(fixed, framework, pins)
    m = model if isinstance(model, ModelConfig) else load_model(model)
    check_given(m, fixed or {}, framework)      # the settings given, before the preset's
    with paused_gc():
        run, layouts, dropped = _priced(m, topology, gpus, global_batch, seq_len, dtype,
                                        nodes, top, jobs, tp_across_nodes, memory_headroom,
                                        progress, pins, zero_with_pp, values)
        with Workers(run, jobs) as workers:
            priced = bound_layouts(workers, layouts, progress)
            pricing = time.perf_counter() - start
            ranked = _ranked(layouts, priced, range(len(layouts)))
            dropped["memory"] += len(layouts) - len(ranked)
            cands = reprice(workers, ranked, top, progress)
    best = sorted(cands, key=lambda c: c.step_s)[:top]
    sized = None if nodes is not None else gpus_nodes(topology, gpus)
    gap = max(((c.step_s - c.bound_s) / c.step_s for c in cands), default=0.0)
    return SearchResult(run.model.name, run.topo.name, gpus, global_batch, len(layouts),
                        len(ranked), tuple(best), len(cands),
                        {k: dropped[k] for k in REASONS if dropped[k]}, gap, run, nodes or sized,
                        pricing, _notes(run, tp_across_nodes, sized, gpus, check_pins(pins, gpus)),
                        (_source(model, run.model.name), _source(given, run.topo.name)),
                        sized is not None, check_pins(pins, gpus),
                        changed_settings(values), framework, release_of(nccl))


def _source(given, name: str) -> str:
    """What reloads ``given``: the name or path passed in, else a loaded object's name."""
    return str(given) if isinstance(given, (str, PurePath)) else name


def best_by(model, topology, gpus: int, global_batch: int, key, *, seq_len: int | None = None,
            dtype: str | None = None, nodes: int | None = None, jobs: int = 1,
            tp_across_nodes: bool = False, progress=None, memory_headroom: float = 0.0,
            fixed: dict | None = None, framework: str | None = None,
            nccl: str | None = None) -> tuple[Run, dict]:
    """The fastest fitting layout of each cell ``key(layout)`` (say (tp, pp)): the same branch
    and bound inside each cell; a cell whose layouts all run out of memory maps to None;
    ``fixed``, ``framework`` and ``nccl``: the settings every layout runs with and the NCCL
    release priced, as :func:`search`'s."""
    if not callable(key):
        raise ConfigError("key", "", "a function of a layout (say lambda lay: (lay.tp, lay.pp))",
                          key)
    values, pins = held(fixed, framework, None)
    with paused_gc():
        run, layouts, _ = _priced(model, topology_of(topology, nccl), gpus, global_batch, seq_len,
                                  dtype, nodes, 1, jobs, tp_across_nodes, memory_headroom,
                                  progress, pins, False, values)
        return run, _best_by(run, layouts, key, jobs, progress)


def _best_by(run, layouts, key, jobs, progress) -> dict:
    cells: dict = {}
    for i, lay in enumerate(layouts):
        cells.setdefault(key(lay), []).append(i)
    with Workers(run, jobs) as workers:
        priced = bound_layouts(workers, layouts, progress)
        best = {}
        for cell, indices in cells.items():
            cands = reprice(workers, _ranked(layouts, priced, indices), 1)
            best[cell] = min(cands, key=lambda c: c.step_s) if cands else None
    return best


def _notes(run: Run, tp_across_nodes: bool, sized: int | None, gpus: int,
           pins: tuple = ()) -> tuple[str, ...]:
    out = []
    if sized is not None:
        out.append(f"the network of {run.topo.name} sized to {sized} nodes of "
                   f"{run.topo.devices_per_node} GPUs for --gpus {gpus} (--nodes sets it)")
    if not tp_across_nodes:
        out.append(f"TP is kept inside a node ({run.topo.devices_per_node} GPUs): "
                   "--tp-across-nodes tries more")
    if same_recompute(run, "selective")[0] == "none" and \
            "selective" in pick(pins, "recompute", RECOMPUTE):
        out.append("selective recomputation is no recomputation with fused attention: such "
                   "layouts are priced but shown once, as none")
    return tuple(out)
