"""Where tpsim's MoE layer spends its time, by component, beside the time per layer that each
published whole-step figure of :mod:`moe_published` implies: the gap that the published rows
leave, per MoE layer and micro-batch, set against the components tpsim prices.

For each row of ``bench/moe_published.py`` (the Megatron-Bridge summary's and the
Megatron-MoE-ModelZoo's), the simulated MoE layer's ops (``tpsim predict --ops``), forward and
backward of one micro-batch on one GPU, grouped by the op's name:

    attention     the attention kernel (and MLA's, DeepSeek-V3)
    dense GEMMs   QKV, projection, MLA's projections, shared experts, their dgrad and wgrad
    expert GEMMs  the grouped GEMMs (fc1, fc2; dgrad, wgrad)
    FP8 casts     every ``.cast`` op (Transformer Engine's quantize) but the router's
    router        the router's GEMM, top-k, the casts to and from its dtype
                  (``--moe-router-dtype``) and their backward
    glue          permute / sort / unsort / unpermute, the activation, norms, residuals, adds
    TP comm, EP comm   the exposed time of the ops off the compute stream (collectives, and
                  the ring exchange's copies: what the compute stream does not hide); CP comm,
                  the context-parallel ring's, where a dense layer has one (bench/cp_published.py)
    host wait     the GPU idle until the host issues the next op

(the layer's total = compute + exposed comm + host wait, :class:`tpsim.sim.result.LayerTimes`).

``--host``: each phase (forward, backward) of the same layer on the GPU alone beside the host's
time to issue it (:func:`tpsim.sim.simulate.phase_times`: its Python-level ops x
``host_dispatch_us``, the kernels its ops launch from C++, its waits at the dispatcher's syncs),
and the host time an op would need for the host to take as long as the GPU,

    h* = (t_gpu - launches - waits) / ops

(the host's waits taken at ``host_dispatch_us``, which a slower host would only shorten): where
h* is near ``host_dispatch_us`` the phase is host-bound or nearly, where it is far above it the
host could be several times slower before the GPU waited for it.
The published figure's time per layer and micro-batch is read off tpsim's step without the EP
overlap:

    t_pub = t_layer * step_pub / step_tpsim

(the whole step scaled, so every part of it, the model's ends and the pipeline's idle time
included, is assumed off by the same factor); the gap column is t_pub - t_layer. tpsim's layer
is the one without the EP overlap; where the recipe runs it, the last column is the share of
the step tpsim's overlap saves (the published rows' own saving: the ModelZoo's 19.7 s against
17.6 s, 11%). Nothing here is fitted.

    python bench/moe_breakdown.py [--host]
"""
from __future__ import annotations

from moe_published import (COMMON, DISPATCH, ROWS, TOPOLOGY, ZOO_COMMON, ZOO_ROWS,
                           extra_rows)
from tpsim.sim.launches import phase_launch_s
from tpsim.sim.schedule import sync_waits
from tpsim.sim.simulate import gpu_phases
from tpsim.training.predict import predict

GROUPS = (("attention", ("attn",)), ("expert GEMMs", ("experts.fc1", "experts.fc2")),
          ("router", ("router",)),
          ("dense GEMMs", ("qkv", "proj", "mlp_in", "mlp_out", "shared.fc", "q_down", "q_up",
                           "kv_down", "kv_up")))
COLUMNS = ("attention", "dense GEMMs", "expert GEMMs", "FP8 casts", "router", "glue",
           "TP comm", "EP comm", "host wait")
EP_OPS = ("dispatch", "combine", "routing")   # routing: HybridEP's routing-map all-gather


def group_of(name: str, kind: str, stream: str = "compute") -> str:
    """The component (module docstring) of the op ``name`` of ``kind`` on ``stream``."""
    if kind == "collective" or stream != "compute":
        if any(op in name for op in EP_OPS):
            return "EP comm"
        return "CP comm" if ".attn.cp" in name else "TP comm"
    if name.endswith(".cast") and ".router." not in name:
        return "FP8 casts"
    for group, parts in GROUPS:
        if any(f".{p}" in name for p in parts):
            return group if kind != "elementwise" or group == "router" else "glue"
    return "glue"


def breakdown(p) -> dict[str, float]:
    """Seconds per component of the prediction ``p``'s layer (module docstring): each compute
    op's time, each op off the compute stream for its part outside the compute stream's busy
    time (where ops off it overlap, their union's: one wait of the compute stream), the host's
    wait. COLUMNS, and CP comm where the layer has any."""
    tl = p.run.timeline
    busy = tl.intervals("compute")
    out = dict.fromkeys(COLUMNS, 0.0)
    index = {name: i for i, name in enumerate(p.run.template.names)}
    waits = []
    for row in p.ops:
        if row.name not in index:      # a phase's host-bound rest: the host wait below
            continue
        i, group = index[row.name], group_of(row.name, row.kind, row.stream)
        if row.stream != "compute":
            waits.append((tl.start[i], tl.end[i], group))
        else:
            out[group] += tl.end[i] - tl.start[i]
    for group, seconds in _exposed(waits, busy).items():
        out[group] = out.get(group, 0.0) + seconds
    out["host wait"] = p.layer.host_wait_s
    return out


def _exposed(waits, busy) -> dict[str, float]:
    """Seconds per group of the time covered by the (start, end, group) ``waits`` and not by
    the ``busy`` intervals, each instant counted once, for the group of the op that began
    first among those covering it."""
    cuts = sorted({t for s, e, _ in waits for t in (s, e)} | {t for a, b in busy for t in (a, b)})
    out: dict[str, float] = {}
    for lo, hi in zip(cuts, cuts[1:]):
        mid = (lo + hi) / 2
        if any(a <= mid < b for a, b in busy):
            continue
        covering = [(s, g) for s, e, g in waits if s <= mid < e]
        if covering:
            group = min(covering, key=lambda c: c[0])[1]
            out[group] = out.get(group, 0.0) + hi - lo
    return out


def cases():
    """(label, prediction without the EP overlap, tpsim's step with the recipe's settings,
    published step seconds) of every row."""
    for label, model, gpus, layout, tokens, _ in ROWS:
        kw = {**COMMON, **layout, **DISPATCH.get(label, {})}
        mine = predict(model, TOPOLOGY, nodes=gpus // 8, **kw)
        alone = predict(model, TOPOLOGY, nodes=gpus // 8, **{**kw, "overlap_moe_comm": False})
        yield label, alone, mine.step.time_s, mine.step.tokens_per_s / gpus / tokens * \
            mine.step.time_s
    for label, layout, step in ZOO_ROWS:
        kw = {**ZOO_COMMON, **layout}
        mine = predict("qwen3-235b-a22b", TOPOLOGY, nodes=32, **kw)
        alone = predict("qwen3-235b-a22b", TOPOLOGY, nodes=32, **{**kw, "overlap_moe_comm": False})
        yield label, alone, mine.step.time_s, step
    for label, model, nodes, kw, step in extra_rows():
        yield label, predict(model, TOPOLOGY, nodes=nodes, **kw), None, step


def main() -> None:
    head = "".join(f"{c[:9]:>10s}" for c in COLUMNS)
    print(f"MoE layer, forward + backward of one micro-batch on one GPU, us (no EP overlap)\n"
          f"{'case':44s}{head}{'layer':>8s}{'publ.':>8s}{'gap':>8s}{'overlap':>9s}")
    for label, alone, step, step_pub in cases():
        parts = breakdown(alone)
        layer = alone.layer.total_s
        pub = layer * step_pub / alone.step.time_s
        saved = alone.step.time_s - step if step is not None else 0.0
        cells = "".join(f"{parts[c] * 1e6:10.0f}" for c in COLUMNS)
        print(f"{label[:44]:44s}{cells}{layer * 1e6:8.0f}{pub * 1e6:8.0f}"
              f"{(pub - layer) * 1e6:8.0f}{saved / alone.step.time_s:+9.1%}")


def host_phases(p) -> list[tuple[float, float, float]]:
    """(GPU seconds, host seconds, break-even host seconds an op h*) of the forward and the
    backward of the prediction ``p``'s layer (module docstring, ``--host``)."""
    sim = p.run
    h = sim.host_dispatch_s
    gpu = gpu_phases(sim)
    waits = sync_waits(sim.template, sim.times, h, sim.launch_s)
    launches = phase_launch_s(sim.template, sim.launch_s)
    out = []
    for g, n, w, lau in zip(gpu, sim.template.host_ops, waits, launches):
        out.append((g, n * h + w + lau, (g - w - lau) / n if n else float("inf")))
    return out


def host_main() -> None:
    print("MoE layer's phases, GPU alone against the host's issue, us (no EP overlap); h*: the\n"
          "host time an op at which the host would take as long as the GPU")
    print(f"{'case':44s}{'fwd GPU':>9s}{'host':>7s}{'h*':>6s}{'bwd GPU':>9s}{'host':>7s}{'h*':>6s}"
          f"{'host wait':>10s}")
    for label, alone, _, _ in cases():
        cells = "".join(f"{g * 1e6:9.0f}{t * 1e6:7.0f}{b * 1e6:6.0f}"
                        for g, t, b in host_phases(alone))
        print(f"{label[:44]:44s}{cells}{alone.layer.host_wait_s * 1e6:10.0f}")


if __name__ == "__main__":
    import sys
    host_main() if "--host" in sys.argv[1:] else main()
