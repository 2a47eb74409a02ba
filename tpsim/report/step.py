"""The step section of ``tpsim predict``'s text: one optimizer step, where its time goes, per
stage where the stages differ."""
from __future__ import annotations

from ..base.units import gpus_text, tflops_text
from .formulas import STEP, formula_lines

PARTS = (("compute", "compute_s", "GPU compute of the layers and the model's ends"),
         ("exposed TP", "tp_comm_exposed_s", "TP collectives the compute does not hide"),
         ("host wait", "host_wait_s", "GPU idle until the host issues the next op"),
         ("bubble", "bubble_s", "pipeline fill and drain"),
         ("exposed PP", "pp_comm_exposed_s", "p2p transfers, tied-embedding all-reduce"),
         ("exposed DP", "dp_comm_exposed_s", "gradient scaling and reduction after the flush"),
         ("optimizer", "optimizer_s", "gradient norm and Adam"))


def _s(x: float) -> str:
    return f"{x:.3f} s" if x >= 1 else f"{x * 1e3:.2f} ms"


def _head(p) -> list[str]:
    i, st = p.inputs, p.step
    sched = {"1f1b": "1F1B", "interleaved-1f1b": f"interleaved 1F1B, {st.virtual_stages} "
             "chunks per stage"}.get(st.schedule, st.schedule)
    dp = "" if st.dp == 1 else (", distributed optimizer" if st.distributed_optimizer else "") \
        + (", DP reduce overlapped with the backward" if st.overlap_grad_reduce
           else ", DP reduce after the backward")
    return [
        f"one training step: TP {i.tp}{cp_text(i)} x PP {st.pp} x DP {st.dp} = {gpus_text(i.gpus)}; "
        f"global batch "
        f"{st.global_batch} = {st.micro_batches} micro-batch{'es' if st.micro_batches > 1 else ''} "
        f"of {i.micro_batch} per replica; {sched}{dp}:",
        f"  step time      {_s(st.time_s):>12s}   {st.tokens_per_s:,.0f} tokens/s, "
        f"{tflops_text(st.tflops_per_gpu)} TFLOP/s per GPU, MFU {st.mfu * 100:.1f}%, HFU {st.hfu * 100:.1f}%",
        f"  as published   {tflops_text(st.megatron_tflops_per_gpu)} TFLOP/s per GPU by Megatron-LM's count "
        f"(causal attention as half the square; "
        f"{tflops_text(st.megatron_full_square_tflops_per_gpu)} with the full square, before March 2025)",
    ]


def energy_line(st, indent: str = "  ") -> list[str]:
    """The step's energy (and cost, given a price) in one line: per step and per token
    (tokens = tokens_per_s x time_s); none where the device gives no tdp_W."""
    if st.energy_j is None and st.cost_usd is None:
        return []
    tokens = st.tokens_per_s * st.time_s
    parts = [] if st.energy_j is None else [
        f"energy {st.energy_j / 1e3:,.2f} kJ per step with the data centre's PUE, "
        f"{st.energy_j / tokens:.3f} J per token"]
    if st.cost_usd is not None:
        parts.append(f"cost ${st.cost_usd:,.4f} per step, ${st.cost_usd / tokens * 1e6:,.2f} "
                     f"per million tokens")
    return [indent + "; ".join(parts)]


def _breakdown(st) -> list[str]:
    lines = ["  where it goes, per GPU (mean over stages; the parts sum to the step time):"]
    for label, key, what in PARTS:
        v = getattr(st, key)
        lines.append(f"    {label:13s} {_s(v):>11s} {v / st.time_s * 100:6.1f}%   {what}")
    if st.ep_comm_exposed_s:         # the MoE layers' share of exposed TP, with --ep > 1
        v = st.ep_comm_exposed_s
        lines.insert(3, f"      {'of which EP':11s} {_s(v):>11s} {v / st.time_s * 100:6.1f}%   the MoE "
                     "layers' expert-parallel all-to-alls (ep_comm_exposed_s)")
    if st.offload_exposed_s:         # a part of the split only with --cpu-offload-layers
        v = st.offload_exposed_s
        lines.append(f"    {'offload':13s} {_s(v):>11s} {v / st.time_s * 100:6.1f}%   activation "
                     "copies to and from host memory the compute waits for")
    if st.pp > 1:
        lines.append(f"    (equal stages and free transfers would give a bubble of (p-1)/(m v) = "
                     f"{st.ideal_bubble_fraction * 100:.1f}% of the compute)")
    return lines


def _stages(st) -> list[str]:
    keys = [k for _, k, _ in PARTS]
    rows = [tuple(round(getattr(s, k), 6) for k in keys) for s in st.stages]
    if len(st.stages) < 2 or len(set(rows)) == 1:
        return []
    lines = ["  per stage (first: embedding, last: output layer and loss):",
             f"    {'stage':>5s} {'layers':>6s} " + " ".join(f"{lbl:>11s}" for lbl, _, _ in PARTS)]
    for s in st.stages:
        lines.append(f"    {s.stage:5d} {s.layers:6d} "
                     + " ".join(f"{_s(getattr(s, k)):>11s}" for k in keys))
    return lines


def step_lines(p) -> list[str]:
    """The step section for a :class:`~tpsim.sim.result.Prediction` with a ``step``."""
    st = p.step
    return _head(p) + energy_line(st) + _breakdown(st) + _stages(st) + formula_lines(STEP)


def clock_lines(i) -> list[str]:
    """The clock the step's tensor kernels were priced at (:class:`~tpsim.sim.result.Inputs`'
    clock_window, sustained_clock, sustained_utilisation, layer_clock;
    :mod:`tpsim.cluster.sustained`): one line, or none where the device has no sustained
    clock."""
    if i.clock_window == "none":
        return []
    if i.clock_window == "step":
        return [f"tensor clock {i.layer_clock:.3f} of boost: the layer's mean draw at the power "
                "limit (clock_window step)"]
    if i.sustained_utilisation is None:
        return [f"tensor clock {i.sustained_clock:.3f} of boost at the power limit"]
    return [f"tensor clock per kernel (clock_window kernel): min(1, {i.sustained_clock:.3f} "
            f"({i.sustained_utilisation:g} / (u w))^(1/3)) of boost, u its efficiency"]


def cp_text(i) -> str:
    """`` x CP 4 (p2p)`` for context parallelism (:class:`~tpsim.sim.result.Inputs`), else
    nothing."""
    return f" x CP {i.cp} ({i.cp_comm})" if i.cp > 1 else ""
