"""``tpsim predict``'s first answer: the verdict, the step and where it goes, the layer, memory,
and what to try next, in at most 30 lines of at most 120 columns. Every section in full (the
op table, the layer, its collectives, the model, the stages) is ``--ops``
(:func:`tpsim.report.render.prediction_report`); every number with its formula is ``--json``.

The advice reads the layout: it names a knob only where the knob is off and would act on the
part that is large (the distributed optimizer only with DP > 1 and not already on, sequence
parallelism only with TP > 1, ...).
"""
from __future__ import annotations

from ..cluster.nccl import nccl_text
from ..base.units import gpus_text, tflops_text
from . import formulas as fm
from ..spec.layout import Layout
from ..training.remedies import runs
from ..search.fixed import FIXED
from ..spec.frameworks import FRAMEWORKS, runs_under
from .remedies import offered, remedy_flags, setting_flags
from .step import PARTS, clock_lines, cp_text, energy_line

WIDTH = 120        # columns
GIB = 2**30        # the memory lines' unit, as the CUDA runtime reports a device's memory


def _ms(s: float) -> str:
    return f"{s:.3f} s" if s >= 1 else f"{s * 1e3:.2f} ms"


def _head(p) -> list[str]:
    i = p.inputs
    tp_where = "inside one node" if i.nodes == 1 else f"across {i.nodes} nodes"
    knobs = [f"micro-batch {i.micro_batch} x seq {i.seq_len}",
             f"global batch {i.global_batch} ({i.micro_batches} micro-batch"
             f"{'es' if i.micro_batches > 1 else ''} per replica)", i.dtype,
             f"{i.attention} attention", f"dropout {i.dropout:g}",
             f"SP {'on' if i.sequence_parallel else 'off'}",
             f"recompute {i.recompute}"]
    knobs += [k for k, on in (("distributed optimizer", i.distributed_optimizer),
                              (f"ZeRO-{i.zero}", i.zero > 1),
                              ("TP overlap", i.tp_comm_overlap),
                              (f"{i.virtual_stages} chunks per stage", i.virtual_stages > 1),
                              (f"multi-token prediction {i.mtp_layers}", i.mtp_layers > 0),
                              ("DP reduce after the backward",
                               i.dp > 1 and not i.overlap_grad_reduce)) if on]
    knobs += clock_lines(i)
    return [f"tpsim predict: {i.model} on {i.topology}{nccl_text(i.nccl)} ({i.device}): TP {i.tp}{cp_text(i)} x "
            f"PP {i.pp} x "
            f"DP {i.dp} = {gpus_text(i.gpus)}, TP {tp_where}", *_wrap(knobs, "", ", ")]


def _usable(mem) -> float:
    """What the tensors may take: the capacity less the reserve (CUDA context, NCCL buffers,
    headroom, the allocator's waste on the churned bytes: :meth:`tpsim.cluster.topology.Device.usable_bytes`)."""
    return mem.capacity_bytes - mem.reserved_bytes


def _verdict(p) -> str:
    mem = p.memory
    need, room = mem.total_bytes / GIB, _usable(mem) / GIB
    of = f"{room:.1f} GiB usable of the {p.inputs.device}'s {mem.capacity_bytes / GIB:.2f} GiB"
    if mem.fits:
        return f"FITS: {need:.1f} GiB per GPU, {of}"
    return f"DOES NOT FIT: {need:.1f} GiB per GPU needed, {need - room:.1f} GiB over the {of}"


def _step(p) -> list[str]:
    st = p.step
    lines = [f"step {_ms(st.time_s)}: {st.tokens_per_s:,.0f} tokens/s, {tflops_text(st.tflops_per_gpu)} "
             f"TFLOP/s per GPU, MFU {st.mfu * 100:.1f}% (model FLOPs over the whole step)",
             *energy_line(st, ""), "where it goes, per GPU (the parts sum to the step):"]
    parts = [(label, getattr(st, key)) for label, key, _ in PARTS]
    ep = f" (EP {_ms(st.ep_comm_exposed_s)})" if st.ep_comm_exposed_s > 0 else ""
    cells = [f"{label} {_ms(v)} {v / st.time_s * 100:.1f}%{ep if label == 'exposed TP' else ''}"
             for label, v in parts if v > 0 or label == "compute"]
    return lines + _wrap(cells, "  ", " | ")


def _layer(p) -> list[str]:
    layer = p.layer
    cells = [f"one layer (x{p.model.layers}): {_ms(layer.total_s)} forward + backward"]
    if p.collectives:
        c = max(p.collectives, key=lambda c: c.count * c.time_s)
        n = sum(x.count for x in p.collectives)
        groups = "/".join(dict.fromkeys(x.group.upper() for x in p.collectives))
        of = f" ({c.group.upper()})" if "/" in groups else ""
        cells += [f"{groups} comm exposed {layer.exposed_comm_share * 100:.1f}% of it",
                  f"{n} {groups} collectives, the largest {c.op}{of} of {c.bytes / 1e6:.1f} MB "
                  f"in {c.time_s * 1e6:.0f} us ({c.algorithm})"]
    return _wrap(cells, "", "; ")


def _memory(p) -> str:
    m = p.memory
    where = f" (fullest stage {m.stage})" if len(p.stage_memory) > 1 else ""
    return (f"memory per GPU{where}, GiB: weights {m.weights_bytes / GIB:.2f} + gradients "
            f"{m.gradients_bytes / GIB:.2f} + optimizer {m.optimizer_bytes / GIB:.2f} + "
            f"activations {m.activations_bytes / GIB:.2f}"
            + (f" + TP buffers {m.tp_buffers_bytes / GIB:.2f}" if m.tp_buffers_bytes else "")
            + f" = {m.total_bytes / GIB:.2f}")


def _wrap(cells: list[str], indent: str, sep: str, width: int = WIDTH) -> list[str]:
    lines, cur = [], indent
    for c in cells:
        add = c if cur == indent else sep + c
        if len(cur) + len(add) > width and cur != indent:
            lines.append(cur)
            cur = indent + c
        else:
            cur += add
    return lines + [cur]


def advice(p, framework: str | None = None) -> list[str]:
    """What to try next, read from the layout and where the memory or the time goes; nothing
    ``framework`` (``--framework``) cannot run."""
    i, mem, st = p.inputs, p.memory, p.step
    out = []
    if not mem.fits:
        out += _memory_advice(p, mem, framework)
    else:
        out += _time_advice(p, i, st, framework)
    out.append(f"the layouts that fit on {gpus_text(i.gpus)}, fastest first:")
    return out


def search_command(i, model: str | None = None, topology: str | None = None,
                   asked: dict | None = None, framework: str | None = None) -> list[str]:
    """The ``tpsim search`` of the same job (:class:`~tpsim.sim.result.Inputs` ``i``): its
    model and topology (``model``, ``topology``: as the user named them, a path for a file),
    GPUs, batch, length and dtype, and every setting the search holds fixed that the run set
    (``asked``: the Layout's settings as given, before the model's defaults filled them; else
    ``i.layout``), as ``--moe-dispatcher flex``, and ``--framework``; wrapped in ``WIDTH``
    columns with shell continuations, so that it pastes as one command."""
    preset = FRAMEWORKS[framework] if framework else {}       # --framework sets these itself
    held = {n: v for n, v in (i.layout if asked is None else asked).items()
            if n in FIXED and (n not in preset or preset[n] != v)}
    words = (f"tpsim search --model {model or i.model} --topology {topology or i.topology} "
             f"--gpus {i.gpus} --global-batch {i.global_batch} --seq {i.seq_len} "
             f"--dtype {i.dtype}" + (f" --framework {framework}" if framework else "") +
             (f" --nccl {i.nccl}" if i.nccl != "topology" else "")).split(" ")
    words += [w for flag in setting_flags(held) for w in flag.split(" ")]
    lines = _wrap(words, "    ", " ", WIDTH - 2)
    return [line + " \\" for line in lines[:-1]] + [lines[-1]]


def _memory_advice(p, mem, framework: str | None = None) -> list[str]:
    """The does-not-fit notice's remedies (:func:`tpsim.training.remedies.memory_remedies`:
    only changes that run), each with what it saves."""
    i = p.inputs
    remedies = next((offered(n.values, framework) for n in p.warnings
                     if n.code == "memory_does_not_fit"), ())
    state = mem.state_bytes
    why = {"distributed_optimizer": f"shards the optimizer state over the {i.dp} DP replicas: "
                                      f"-{mem.optimizer_bytes * (1 - 1 / i.dp) / GIB:.1f} GiB",
           "recompute": f"keeps only each layer's input of the "
                          f"{mem.activations_bytes / GIB:.1f} GiB of activations",
           "sequence_parallel": "splits the norms' and dropouts' activations over TP",
           "zero": "(FSDP) shards the weights and gradients too, all-gathering each layer's "
                   "weights as it runs",
           "pp": f"splits the {state / GIB:.1f} GiB of weights, gradients and optimizer "
                   f"state per GPU over more stages",
           "tp": "splits every layer's weights and activations over more TP ranks"}
    return [f"{remedy_flags(change)} {why[next(iter(change))]}" for change in remedies]


def _layout(i) -> Layout:
    """The layout of the prediction's inputs (the layers' split aside: an even one)."""
    return Layout(**{f: getattr(i, f) for f in LAYOUT_INPUTS})


LAYOUT_INPUTS = ("tp", "cp", "pp", "dp", "virtual_stages", "micro_batch", "global_batch",
                 "seq_len", "sequence_parallel", "tp_comm_overlap", "recompute",
                 "distributed_optimizer", "overlap_grad_reduce")


def _time_advice(p, i, st, framework: str | None = None) -> list[str]:
    """What cuts the largest parts of the step, each change offered only where it runs
    (:func:`tpsim.training.remedies.runs`)."""
    share = {key: getattr(st, key) / st.time_s for _, key, _ in PARTS}
    lay, out = _layout(i), []

    def ok(**changes) -> bool:
        return runs(p.model.layers, lay, **changes) and runs_under(framework, changes)
    v2 = f" or --virtual-stages {2 * i.virtual_stages}" if i.pp > 1 and \
        ok(virtual_stages=2 * i.virtual_stages) else ""
    if share["bubble_s"] > 0.1:
        out.append(f"more micro-batches per step (--global-batch){v2}: the bubble is "
                   "(p-1)/(m v) of the compute")
    if share["tp_comm_exposed_s"] > 0.05:
        if i.tp > 1 and not i.sequence_parallel and ok(sequence_parallel=True):
            out.append("--sequence-parallel: reduce-scatter + all-gather instead of all-reduce")
        elif i.sequence_parallel and not i.tp_comm_overlap and not i.experts and \
                ok(tp_comm_overlap=True):
            out.append("--tp-comm-overlap hides the TP collectives behind the GEMMs")
    if share["dp_comm_exposed_s"] > 0.05:
        out.append("drop --no-overlap-grad-reduce: reduce the gradients beside the backward"
                   if not i.overlap_grad_reduce else
                   "a larger --global-batch spreads the gradient reduction over more work")
    if share["optimizer_s"] > 0.1:
        out.append("a larger --global-batch spreads the optimizer step over more micro-batches")
    larger = next((mb for mb in range(i.micro_batch + 1, i.global_batch // i.dp + 1)
                   if ok(micro_batch=mb)), None)
    if share["host_wait_s"] > 0.05 and larger:
        out.append(f"--micro-batch {larger}: the GPU waits for the host to issue small kernels")
    return out


def _formulas() -> list[str]:
    named = {"step": fm.STEP["time_s"], "energy": fm.STEP["energy_j"],
             "where it goes": fm.STAGE, "layer": fm.LAYER, "memory": fm.MEMORY["total_bytes"]}
    return _wrap([f"{k} {v}" for k, v in named.items()], "formulas: ", ", ")


def prediction_summary(p, model: str | None = None, topology: str | None = None,
                       asked: dict | None = None, framework: str | None = None) -> str:
    """The first answer for a :class:`~tpsim.sim.result.Prediction` (module docstring);
    ``model``, ``topology``, ``asked`` and ``framework`` name the job in its search line
    (:func:`search_command`); the advice offers nothing ``framework`` lacks."""
    lines = [*_head(p), "", _verdict(p), *_step(p), *_layer(p), _memory(p), "", "try next:",
             *(line for a in advice(p, framework) for line in _wrap(a.split(" "), "  ", " ")),
             *search_command(p.inputs, model, topology, asked, framework), "",
             *_formulas(),
             "--ops: the op table and every section in full; --json: every number with its formula"]
    return "\n".join(lines)
