"""``tpsim search``'s results for people (a ranked table) and programs (JSON)."""
from __future__ import annotations

import math
import shlex

from ..base.units import gpus_text
from ..cluster.nccl import nccl_text
from ..base.formula import qualname
from ..search.driver import REASONS, search
from ..search.pins import PINNABLE
from ..search.price import price_pipelines
from ..training.energy import step_cost_usd
from .flat_csv import csv_text
from .formulas import MEMORY, STEP, formula_lines
from .remedies import pin_text, setting_flags

FLAGS = "SP: sequence parallelism; TPO: TP communication overlap; DO: distributed optimizer; " \
        "VP: model chunks per stage (interleaved 1F1B); L a/b: layers on the first/last stage"
EXPERT_FLAGS = "EP, ETP: expert parallelism, expert TP (a mixture of experts)"


# the functions behind a candidate's numbers: predict's step and memory (the re-pricing), and
# the bound that ranked it; JSON field -> name, and the table's columns
CANDIDATE = {"step_time_s": STEP["time_s"],
             **{k: STEP[k] for k in ("tokens_per_s", "mfu", "bubble_s", "tp_comm_exposed_s",
                                     "pp_comm_exposed_s", "dp_comm_exposed_s")},
             "memory_bytes": MEMORY["total_bytes"], "fits": MEMORY["fits"],
             "energy_j": STEP["energy_j"], "cost_usd": STEP["cost_usd"],
             "bound_s": qualname(price_pipelines)}
COLUMNS = {"step": "step_time_s", "tokens/s": "tokens_per_s", "MFU": "mfu",
           "memory": "memory_bytes", "bubble": "bubble_s", "exp. TP": "tp_comm_exposed_s",
           "exp. PP": "pp_comm_exposed_s", "exp. DP": "dp_comm_exposed_s",
           "the bound that ranked them": "bound_s"}
SEARCH = qualname(search)


def layout_label(lay) -> str:
    """TP8 CP2 PP4 VP8 DP16 EP8 ETP1 mb2 SP TPO DO sel (CP: context parallelism, when above 1,
    its exchange after a slash when not p2p: CP2/ag (all-gather), CP2/a2a, CP8/a2a+p2p; EP,
    ETP: a mixture of experts' ep and expert TP, when not 1 and tp; and L a/b for an uneven
    first/last stage)."""
    comm = {"p2p": "", "all-gather": "/ag"}.get(lay.cp_comm, f"/{lay.cp_comm}")
    cp = f"CP{lay.cp}{comm}"
    parts = [f"TP{lay.tp}"] + ([cp] if lay.cp > 1 else []) + [f"PP{lay.pp}"] + (
        [f"VP{lay.virtual_stages}"] if lay.virtual_stages > 1 else [])
    parts += [f"DP{lay.dp}"] + ([f"EP{lay.ep}"] if lay.ep > 1 else []) + \
        ([f"ETP{lay.expert_tp}"] if lay.expert_tp is not None else []) + [f"mb{lay.micro_batch}"]
    parts += [name for name, on in (("SP", lay.sequence_parallel), ("TPO", lay.tp_comm_overlap),
                                    ("DO", lay.distributed_optimizer),
                                    (f"Z{lay.zero}", lay.zero > 1)) if on]
    parts += [] if lay.recompute == "none" else [{"selective": "sel"}.get(lay.recompute,
                                                                          lay.recompute)]
    if lay.first_stage_layers or lay.last_stage_layers:
        parts.append(f"L{lay.first_stage_layers or '-'}/{lay.last_stage_layers or '-'}")
    return " ".join(parts)


def predict_command(result, lay) -> str:
    """The ``tpsim predict`` line that gives a candidate's numbers."""
    run = result.run
    model, topology = (shlex.quote(src or name) for src, name in
                       zip(result.sources, (result.model, result.topology)))
    args = [f"--model {model}", f"--topology {topology}", f"--tp {lay.tp}",
            f"--pp {lay.pp}", f"--dp {lay.dp}"] + ([f"--cp {lay.cp}"] if lay.cp > 1 else []) + [
            f"--global-batch {result.global_batch}",
            f"--micro-batch {lay.micro_batch}", f"--seq {run.seq_len}", f"--dtype {run.dtype}"]
    if result.nodes:
        args.append(f"--nodes {result.nodes}")
    if result.nccl != "topology":
        args.append(f"--nccl {result.nccl}")
    if lay.virtual_stages > 1:
        args.append(f"--virtual-stages {lay.virtual_stages}")
    if lay.cp > 1 and lay.cp_comm != "p2p":
        args.append(f"--cp-comm {lay.cp_comm}")
    if lay.ep > 1:
        args.append(f"--ep {lay.ep}")
    if lay.expert_tp is not None:
        args.append(f"--expert-tp {lay.expert_tp}")
    for flag, on in (("--sequence-parallel", lay.sequence_parallel),
                     ("--tp-comm-overlap", lay.tp_comm_overlap),
                     ("--distributed-optimizer", lay.distributed_optimizer)):
        if on:
            args.append(flag)
    if lay.recompute != "none":
        args.append(f"--recompute {lay.recompute}")
    if lay.zero:
        args.append(f"--zero {lay.zero}")
    for flag, n in (("--first-stage-layers", lay.first_stage_layers),
                    ("--last-stage-layers", lay.last_stage_layers)):
        if n:
            args.append(f"{flag} {n}")
    return "tpsim predict " + " ".join(args + fixed_flags(result))


def fixed_flags(result) -> list[str]:
    """The flags of the settings the search held fixed: ``--framework`` and each setting away
    from its default (a preset's included, which predict takes as given)."""
    out = [f"--framework {result.framework}"] if result.framework else []
    return out + setting_flags(result.fixed)


def _s(x: float) -> str:
    return f"{x:.3f} s" if x >= 1 else f"{x * 1e3:.1f} ms"


def _bound_share(max_gap: float) -> str:
    """What the bound that ranked the re-priced layouts is of their simulated steps: at least
    1 - max_gap of each (rounded down, so that "at least" holds)."""
    share = math.floor((1 - max(max_gap, 0.0)) * 1000) / 10
    return (f"the bound that ranked them was at least {share:.1f}% of each one's simulated step "
            "(a lower bound that only orders and prunes: the steps shown are simulated, so a "
            "looser bound costs search time, not accuracy)")


def _pct(x: float, of: float) -> str:
    return f"{x / of * 100:.1f}%"


def search_report(result) -> str:
    """The ranked table, what was priced and why the rest was dropped."""
    run, dev = result.run, result.run.topo.device.name
    where = f"{result.topology}{nccl_text(result.nccl)}"
    lines = [f"fastest layouts of {result.model} on {gpus_text(result.gpus)} of {where} "
             f"({dev}), global batch {result.global_batch} x {run.seq_len} tokens, {run.dtype}:",
             f"  priced {result.evaluated:,} layouts in {result.pricing_s:.2f} s "
             f"(memory of every stage exactly, the step by a lower bound of its simulation); "
             f"{result.fitting:,} fit",
             f"  {result.repriced} re-priced with the step simulation (tpsim predict) until the "
             f"next bound exceeded the slowest of the {len(result.candidates)} shown; "
             f"{_bound_share(result.max_gap)}",
             *formula_lines(SEARCH, "  formula  "), ""]
    if result.pins:
        lines.insert(1, "  pinned: " + ", ".join(pin_text(n, v) for n, v in result.pins))
    if result.fixed or result.framework:
        lines.insert(1, "  fixed (every layout): " + " ".join(fixed_flags(result)))
    if not result.candidates:
        lines[2:] = ["  no layout fits in memory: more GPUs (--gpus, --nodes), a smaller global "
                     "batch or a shorter sequence", *formula_lines(SEARCH, "  formula  "), ""]
        return "\n".join(lines + _dropped(result))
    width = max(34, *(len(layout_label(c.layout)) for c in result.candidates))
    head = (f"  {'#':>2s}  {'layout':{width}s} {'step':>9s} {'tokens/s':>10s} {'MFU':>6s} "
            f"{'memory':>8s} {'bubble':>7s} {'exp. TP':>8s} {'exp. PP':>8s} {'exp. DP':>8s}")
    lines.append(head)
    for i, c in enumerate(result.candidates, 1):
        st, t = c.step, c.step.time_s
        lines.append(f"  {i:2d}  {layout_label(c.layout):{width}s} {_s(t):>9s} {st.tokens_per_s:10,.0f} "
                     f"{st.mfu * 100:5.1f}% {c.memory.total_bytes / 2**30:5.1f}GiB "
                     f"{_pct(st.bubble_s, t):>7s} {_pct(st.tp_comm_exposed_s, t):>8s} "
                     f"{_pct(st.pp_comm_exposed_s, t):>8s} {_pct(st.dp_comm_exposed_s, t):>8s}")
    flags = FLAGS + (f"; {EXPERT_FLAGS}" if result.run.model.moe else "")
    lines += [f"  ({flags}; sel/full: recomputation; memory: the fullest stage, GiB = 2^30 bytes; "
              "exp.: exposed communication, % of the step)"]
    lines += formula_lines({col: CANDIDATE[key] for col, key in COLUMNS.items()}, "  formula  ")
    if result.candidates:
        best = result.candidates[0].step
        lines += ["", "the best, in full:", "  " + predict_command(result,
                                                                result.candidates[0].layout)]
        if best.energy_j is not None:
            lines.append(f"  energy {best.energy_j / 1e3:,.1f} kJ per step at the facility "
                         "(--json: every candidate's energy_j, and cost_usd with a price)")
        lines += formula_lines({k: CANDIDATE[k] for k in ("energy_j", "cost_usd")},
                               "  formula  ")
    return "\n".join(lines + [""] + _dropped(result))


def _dropped(result) -> list[str]:
    lines = ["dropped:"] + [f"  {n:>10,}  {REASONS[k]}" for k, n in result.dropped.items()]
    return lines + (["", *result.notes] if result.notes else [])


CANDIDATE_KEYS = ("tp", "cp", "pp", "dp", "virtual_stages", "micro_batch", "sequence_parallel",
                  "recompute", "distributed_optimizer", "zero", "tp_comm_overlap",
                  "first_stage_layers", "last_stage_layers", "ep", "expert_tp", "cp_comm")


def search_json(result, usd_per_gpu_hour: float | None = None) -> dict:
    """The ``--json`` object: ``evaluated``, ``candidates`` (best first), ``dropped``;
    each candidate's energy per step (predict's) and its GPUs' rent per step at
    ``usd_per_gpu_hour`` (:func:`tpsim.training.energy.step_cost_usd`; None without)."""
    cands = []
    for c in result.candidates:
        st = c.step
        cands.append({**{k: getattr(c.layout, k) for k in CANDIDATE_KEYS},
                      "step_time_s": st.time_s, "tokens_per_s": st.tokens_per_s, "mfu": st.mfu,
                      "memory_bytes": c.memory.total_bytes, "fits": c.memory.fits,
                      "bubble_s": st.bubble_s, "tp_comm_exposed_s": st.tp_comm_exposed_s,
                      "pp_comm_exposed_s": st.pp_comm_exposed_s,
                      "dp_comm_exposed_s": st.dp_comm_exposed_s, "bound_s": c.bound_s,
                      "energy_j": st.energy_j,
                      "cost_usd": step_cost_usd(result.gpus, st, usd_per_gpu_hour),
                      "predict": predict_command(result, c.layout), "formula": dict(CANDIDATE)})
    return {"model": result.model, "topology": result.topology, "nccl": result.nccl,
            "gpus": result.gpus,
            "global_batch": result.global_batch, "seq_len": result.run.seq_len,
            "dtype": result.run.dtype, "evaluated": result.evaluated, "fitting": result.fitting,
            "repriced": result.repriced, "bound_max_gap": result.max_gap,
            "pricing_s": result.pricing_s, "nodes": result.nodes,
            "nodes_from_gpus": result.nodes_from_gpus, "framework": result.framework,
            "fixed": dict(result.fixed),
            "pinned": {k: list(dict(result.pins)[k]) if k in dict(result.pins) else None
                       for k in PINNABLE}, "candidates": cands,
            "dropped": dict(result.dropped),
            "dropped_reasons": {k: REASONS[k] for k in result.dropped}, "formula": SEARCH}


JOB_KEYS = ("model", "topology", "nccl", "gpus", "global_batch", "seq_len", "dtype", "nodes")


def search_csv(result, usd_per_gpu_hour: float | None = None) -> str:
    """``--csv``: one row per candidate, best first: the job's keys, then the candidate's
    scalar keys (:mod:`tpsim.report.flat_csv`)."""
    js = search_json(result, usd_per_gpu_hour)
    return csv_text({**{k: js[k] for k in JOB_KEYS}, **c} for c in js["candidates"])
