"""Results for people (text) and programs (JSON). Human units (us, GB/s) appear only in text;
JSON keeps tpsim's SI values with the unit in each key. Every section names the function that
computed it: a ``formula`` key in JSON, ``formula`` lines in text (:mod:`tpsim.report.formulas`)."""
from __future__ import annotations

import dataclasses

from . import formulas as fm
from .energy import energy_json, energy_lines
from .speculative import speculative_json, speculative_lines
from .header import kernel_note
from .remedies import does_not_fit_text, notice_text, notice_values
from .step import clock_lines, step_lines
from .values import plain
from ..cluster.nccl import nccl_text
from ..base.units import format_size, tflops_text
from ..spec.precision import LOW_PRECISION


def collective_table(costs, topo) -> str:
    """A nccl-tests-style table. GB/s here is 1e9 bytes per second, as in nccl-tests."""
    c0 = costs[0]
    head = [f"# {c0.op} on {c0.ranks} ranks of {topo.name} ({topo.device.name})",
            "# size: bytes as nccl-tests counts them; algbw = size/time; busbw = algbw * bus factor;"
            " GB/s = 1e9 B/s",
            f"{'size':>10s} {'bytes':>12s} {'time_us':>12s} {'algbw_GBps':>11s} {'busbw_GBps':>11s}"
            f"  algorithm/protocol  formula (the function that priced it)"]
    rows = [f"{format_size(c.nbytes):>10s} {c.nbytes:12d} {c.time_s * 1e6:12.2f} "
            f"{c.algbw_Bps / 1e9:11.2f} {c.busbw_Bps / 1e9:11.2f}  {c.algorithm}/{c.protocol}"
            f"  {c.formula}" for c in costs]
    return "\n".join(head + rows)


# --------------------------------------------------------------------------- predict (issue 4)

def _ms(s: float) -> str:
    return f"{s * 1e3:.3f} ms"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _op_table(ops) -> list[str]:
    head = (f"{'op':26s} {'kind':11s} {'stream':7s} {'shape':38s} {'GFLOP':>8s} {'MB':>8s} "
            f"{'time_us':>9s} {'start_us':>9s} {'share':>6s}  formula")
    lines = [head]
    for phase in ("forward", "backward"):
        for o in (o for o in ops if o.phase == phase):
            moved = o.comm_bytes if o.kind == "collective" else o.bytes
            lines.append(f"{o.name:26s} {o.kind:11s} {o.stream:7s} {o.shape[:38]:38s} "
                         f"{o.flops / 1e9:8.1f} {moved / 1e6:8.1f} {o.time_s * 1e6:9.1f} "
                         f"{o.start_s * 1e6:9.1f} {_pct(o.share):>6s}  {o.formula}")
    return lines


def _layer_lines(layer) -> list[str]:
    return [
        "one layer, forward + backward, on one GPU:",
        f"  forward        {_ms(layer.forward_s):>12s}",
        f"  backward       {_ms(layer.backward_s):>12s}",
        f"  total          {_ms(layer.total_s):>12s}   (the schedule's makespan)",
        f"  compute        {_ms(layer.compute_s):>12s}   (compute stream busy)",
        f"  communication  {_ms(layer.comm_s):>12s}   comm share {_pct(layer.comm_share)} "
        "(comm stream busy / total)",
        f"  exposed comm   {_ms(layer.exposed_comm_s):>12s}   {_pct(layer.exposed_comm_share)} "
        "of the layer (comm not hidden behind compute: the TP overhead)",
        f"  interference   {_ms(layer.interference_s):>12s}   {_pct(layer.interference_s / (layer.total_s or 1))} "
        "of the layer (compute slowed while a collective runs beside it: hidden comm is not free)",
        f"  host wait      {_ms(layer.host_wait_s):>12s}   {_pct(layer.host_wait_s / (layer.total_s or 1))} "
        "of the layer (GPU idle until the host issues the next op: small layers are host-bound)",
        *fm.formula_lines(fm.LAYER),
    ]


def _collective_lines(collectives, heads, kv_heads) -> list[str]:
    lines = [f"collectives per layer (bytes as nccl-tests counts them, MB = 1e6 bytes); "
             f"heads per rank {heads}, kv heads per rank {kv_heads}:"]
    if not collectives:
        lines.append("  none (tp = 1)")
    for c in collectives:
        lines.append(f"  {c.phase:9s} {c.count} x {c.op:15s} {c.bytes:>12d} B ({c.bytes / 1e6:.1f} MB)"
                     f"  {c.time_s * 1e6:8.1f} us each  {c.algorithm:14s} {c.group} group, "
                     f"{c.formula}")
    return lines


def _model_lines(p) -> list[str]:
    m = p.model
    return [
        f"whole model, one micro-batch, forward + backward ({m.params / 1e9:.2f} B parameters, "
        "no pipeline):",
        f"  {m.layers} layers x {_ms(m.layer_s)} = {_ms(m.layers * m.layer_s)}",
        f"  embedding      {_ms(m.embedding_s):>12s}   (vocab-parallel)",
        f"  output layer   {_ms(m.output_s):>12s}   (logits GEMM + vocab-parallel cross-entropy)",
        f"  step           {_ms(m.step_s):>12s}",
        f"  {m.flops / 1e12:.1f} TFLOP per GPU (model FLOPs): {tflops_text(m.tflops_per_gpu)} TFLOP/s per GPU, "
        f"MFU {_pct(m.mfu)}",
        f"  {m.hardware_flops / 1e12:.1f} TFLOP per GPU with recomputation (hardware FLOPs): "
        f"HFU {_pct(m.hfu)}",
        *fm.formula_lines(fm.MODEL),
    ]


def _capacity_text(m) -> str:
    """'of U GiB usable (C GiB less R reserved)': the memory the tensors may take."""
    gib = 2**30
    return (f"of {(m.capacity_bytes - m.reserved_bytes) / gib:.2f} GiB usable "
            f"({m.capacity_bytes / gib:.2f} GiB less {m.reserved_bytes / gib:.2f} reserved)")


def _memory_lines(mem, dtype: str, stages=(), chunks: int = 1) -> list[str]:
    gb = 2**30
    fits = "fits" if mem.fits else "DOES NOT FIT"
    what = ("model chunks" if chunks > 1 else "micro-batches") if mem.in_flight > 1 else \
        ("model chunk" if chunks > 1 else "micro-batch")
    where = (f"fullest stage: {mem.stage} of {len(stages)}, " if len(stages) > 1 else "") + \
        f"activations of {mem.in_flight} {what} in flight"
    shard = f", optimizer sharded {mem.optimizer_shards} ways" if mem.optimizer_shards > 1 else ""
    shard += f" (ZeRO-{mem.zero})" if mem.zero > 1 else ""
    weights = f"bf16 + {dtype.upper()}-cached" if dtype in LOW_PRECISION else dtype
    lines = [
        f"memory per GPU (GiB = 2^30 bytes; mixed-precision Adam: {weights} weights, main "
        f"gradients, fp32 master + m + v{shard}; {where}):",
        f"  parameters     {mem.params_per_gpu / 1e9:9.2f} B",
        f"  weights        {mem.weights_bytes / gb:9.2f} GiB",
        f"  gradients      {mem.gradients_bytes / gb:9.2f} GiB",
        f"  optimizer      {mem.optimizer_bytes / gb:9.2f} GiB",
        f"  activations    {mem.activations_bytes / gb:9.2f} GiB  (as the recompute mode saves them)",
        f"  total          {mem.total_bytes / gb:9.2f} GiB  {_capacity_text(mem)}: {fits}",
    ]
    if mem.step_copy_bytes:
        lines.insert(-1, f"  step's copy    {mem.step_copy_bytes / gb:9.2f} GiB  (the optimizer's fp32 "
                         "gradients, held instead of the activations: max of the two)")
    if mem.tp_buffers_bytes:
        lines.insert(-1, f"  TP buffers     {mem.tp_buffers_bytes / gb:9.2f} GiB  (Transformer Engine's "
                         "TP-overlap userbuffers)")
    if mem.offloaded_bytes:
        lines.append(f"  on the host    {mem.offloaded_bytes / gb:9.2f} GiB  (the offloaded "
                     "layers' activations, outside the total)")
    if len(stages) > 1:
        lines.append("  per stage      " + " ".join(f"{m.total_bytes / gb:.1f}" for m in stages)
                     + " GiB")
    return lines + fm.formula_lines(fm.MEMORY)


def prediction_report(p, framework: str | None = None) -> str:
    """``tpsim predict``'s text output for a :class:`~tpsim.sim.result.Prediction`; its notices
    offer no remedy ``framework`` (``--framework``) cannot run."""
    i = p.inputs
    where = "inside one node" if i.nodes == 1 else f"across {i.nodes} nodes"
    lines = [
        f"tpsim predict: {i.model} on {i.topology}{nccl_text(i.nccl)} ({i.device}), TP={i.tp} {where}"
        + (f", CP={i.cp} ({i.cp_comm})" if i.cp > 1 else ""),
        f"micro-batch {i.micro_batch} x seq {i.seq_len}, {i.dtype}, {i.attention} attention, "
        f"dropout {i.dropout:g}, sequence parallel {'on' if i.sequence_parallel else 'off'}, "
        f"recompute {i.recompute}", *clock_lines(i),
        "",
        "ops of one layer on one GPU, in time order (share = op time / layer time; "
        "MB: memory traffic, or collective size):",
        *_op_table(p.ops), "",
        *_layer_lines(p.layer), "",
        *_collective_lines(p.collectives, i.heads_per_rank, i.kv_heads_per_rank), "",
        *_model_lines(p), "",
        *(step_lines(p) + [""] if p.step is not None else []),
        *_memory_lines(p.memory, i.dtype, p.stage_memory, i.virtual_stages),
    ]
    lines += [f"WARNING: {notice_text(w, framework)}" for w in p.warnings]
    return "\n".join(lines)


def _with_formula(obj, formula) -> dict:
    """A result dataclass as a dict, with the ``formula`` that computed it
    (:mod:`tpsim.report.formulas`)."""
    return {**plain(obj), "formula": formula if isinstance(formula, str)
            else dict(formula)}


def _step_json(step) -> dict:
    stages = [_with_formula(s, fm.STAGE) for s in step.stages]
    return {**{f.name: stages if f.name == "stages" else plain(getattr(step, f.name))
               for f in dataclasses.fields(step)}, "formula": dict(fm.STEP)}


def prediction_json(p, framework: str | None = None) -> dict:
    """The JSON object of ``tpsim predict --json`` (keys documented in docs/json.md); its
    notices offer no remedy ``framework`` cannot run."""
    return {
        "inputs": plain(p.inputs),
        "layer": _with_formula(p.layer, fm.LAYER),
        "collectives": [{**plain(c), "total_time_s": c.total_time_s}
                        for c in p.collectives],
        "ops": [o._asdict() for o in p.ops],
        "model": _with_formula(p.model, fm.MODEL),
        "memory": _with_formula(p.memory, fm.MEMORY),
        "step": _step_json(p.step) if p.step is not None else None,
        "stage_memory": [_with_formula(m, fm.MEMORY) for m in p.stage_memory],
        "warnings": [notice_text(w, framework) for w in p.warnings],
        "notices": [{"code": w.code, **notice_values(w, framework)} for w in p.warnings],
    }


def models_table(models) -> str:
    """``tpsim models``: one line per preset; params counts every expert, active the ones a token
    meets (:meth:`~tpsim.spec.model.ModelConfig.active_params`); ffn: a dense layer's MLP."""
    models = list(models)
    w = max(len("name"), *(len(m.name) for m in models))
    head = (f"{'name':{w}s} {'params':>8s} {'active':>8s} {'layers':>6s} {'hidden':>6s} "
            f"{'heads':>5s} {'kv':>4s} {'ffn':>6s} {'vocab':>6s} {'seq':>5s}  {'act':6s} "
            "description")
    rows = [f"{m.name:{w}s} {m.params() / 1e9:7.2f}B {m.active_params() / 1e9:7.2f}B "
            f"{m.layers:6d} {m.hidden:6d} {m.heads:5d} {m.kv_heads:4d} {m.ffn_hidden:6d} "
            f"{m.vocab:6d} {m.seq_len:5d}  {m.activation:6s} {m.description}" for m in models]
    return "\n".join([head] + rows)


# --------------------------------------------------------------------------- infer

def _bound_line(c, where: str = "") -> str:
    t = c.time_s or 1.0
    terms = (("HBM", c.hbm_s), ("FLOPs", c.flops_s), ("collectives", c.comm_s),
             ("kernel launches", c.launch_s), ("host dispatch", c.host_s))
    return (f"  bound by {c.bound}{where}: " + ", ".join(f"{k} {_pct(v / t)}" for k, v in terms)
            + "  (share of the time)")


def _infer_phase_lines(p) -> list[str]:
    pre, dec = p.prefill, p.decode
    dev_bw = dec.hbm_peak_Bps
    c, d = pre.cost, dec.cost
    return [
        f"prefill (time to first token) {_ms(pre.time_s):>12s}   "
        f"{pre.tokens_per_s:,.0f} prompt tokens/s, MFU {_pct(pre.mfu)}",
        _bound_line(c),
        f"  per GPU: {c.flops / 1e12:.2f} TFLOP, {c.hbm_bytes / 1e9:.2f} GB HBM traffic, "
        f"{c.comm_bytes / 1e9:.3f} GB in collectives, {c.ops:.0f} ops",
        *fm.formula_lines(fm.PREFILL), "",
        f"decode, {dec.steps} steps (kv_len {p.inputs.prompt + 1}..{p.inputs.prompt + dec.steps}):",
        f"  time per output token {_ms(dec.time_per_token_s):>12s}   (mean; first step "
        f"{_ms(dec.first_step_s)}, last {_ms(dec.last_step_s)})",
        f"  tokens/s       {dec.tokens_per_s:12,.1f}   (over the batch of {p.inputs.batch})",
        _bound_line(d, f" at kv_len {dec.kv_len}"),
        f"  per step per GPU: {d.hbm_bytes / 1e9:.2f} GB HBM traffic "
        f"({dec.hbm_bandwidth_Bps / 1e12:.2f} TB/s, {_pct(dec.hbm_bandwidth_Bps / dev_bw)} of "
        f"{dev_bw / 1e12:.2f} TB/s peak), {d.flops / 1e12:.3f} TFLOP, "
        f"{d.comm_bytes / 1e6:.2f} MB in collectives, {d.ops:.0f} ops",
        f"  {dec.integration}", *speculative_lines(p.speculative),
        *fm.formula_lines(fm.DECODE), "",
        f"total          {_ms(p.total.time_s):>12s}   prefill + {dec.steps} steps; "
        f"{p.total.tokens_per_s:,.1f} output tokens/s (static batch)",
        *fm.formula_lines(fm.TOTAL), *energy_lines(p.energy, p.cost),
    ]


def _infer_memory_lines(p) -> list[str]:
    m, i, gb = p.memory, p.inputs, 2**30
    fits = "fits" if m.fits else "DOES NOT FIT"
    return [
        f"memory per GPU (GiB = 2^30 bytes; {i.dtype} linear weights, {i.kv_dtype} KV cache):",
        f"  weights        {m.weights_bytes / gb:9.2f} GiB",
        f"  KV cache       {m.kv_cache_bytes / gb:9.2f} GiB  ({m.kv_bytes_per_token:,.0f} B per "
        f"token x {i.prompt + i.gen - 1} tokens x {i.batch} sequences)",
        f"  activations    {m.activations_bytes / gb:9.2f} GiB  (the prefill's widest point)",
        f"  total          {m.total_bytes / gb:9.2f} GiB  {_capacity_text(m)}: "
        f"{fits}; the largest batch that fits: {m.max_batch}",
        f"  reserved: CUDA context and NCCL buffers, what {i.memory_rule} keeps free, the "
        "allocator's waste",
        *fm.formula_lines(fm.INFER_MEMORY),
    ]


def infer_notice_text(n) -> str:
    """A serving :class:`~tpsim.sim.result.Notice` in words (others: :func:`notice_text`)."""
    v = n.values
    if n.code == "serving_memory_does_not_fit":
        return (f"{does_not_fit_text(v)} (largest batch that fits: {v['max_batch']}; more TP "
                "or PP, fp8, or a shorter context)")
    if n.code == "custom_all_reduce_fallback":
        return (f"the {v['phase']} all-reduces of {v['bytes']} B run on NCCL: the custom "
                f"kernel does not serve them ({v['why']})")
    return notice_text(n)


def infer_report(p) -> str:
    """``tpsim infer``'s text output for an :class:`~tpsim.serving.result.InferPrediction`."""
    i = p.inputs
    where = "inside one node" if i.nodes == 1 else f"across {i.nodes} nodes"
    host = "CUDA graphs (no host dispatch per op)" if i.cuda_graphs else "eager (host issues every op)"
    lines = [
        f"tpsim infer: {i.model} on {i.topology}{nccl_text(i.nccl)} ({i.device}), TP={i.tp} "
        f"{where}, PP={i.pp}",
        f"batch {i.batch}, prompt {i.prompt}, gen {i.gen} tokens; GEMMs {i.dtype}, activations "
        f"{i.act_dtype}, KV cache {i.kv_dtype}; all-reduce {i.allreduce}; {host}{kernel_note(i)}", "",
        *_infer_phase_lines(p), "",
        *_infer_memory_lines(p), "",
        f"one decode layer on one GPU at kv_len {p.decode.kv_len}, in time order:",
        *_op_table(p.decode_ops),
        *_collective_lines(p.decode_collectives, i.heads_per_rank, i.kv_heads_per_rank), "",
        "one prefill layer on one GPU, in time order:",
        *_op_table(p.prefill_ops),
        *_collective_lines(p.prefill_collectives, i.heads_per_rank, i.kv_heads_per_rank),
    ]
    lines += [f"WARNING: {infer_notice_text(w)}" for w in p.warnings]
    return "\n".join(lines)


def _phase_json(cost) -> dict:
    return {**plain(cost), "bound": cost.bound}


def infer_json(p) -> dict:
    """The JSON object of ``tpsim infer --json``."""
    pre, dec = p.prefill, p.decode
    return {
        "inputs": plain(p.inputs),
        "prefill": {"time_s": pre.time_s, "tokens_per_s": pre.tokens_per_s, "mfu": pre.mfu,
                    "cost": _phase_json(pre.cost), "formula": dict(fm.PREFILL)},
        "decode": {**plain(dec, ("cost",)),
                   "cost": _phase_json(dec.cost), "formula": dict(fm.DECODE)},
        "total": _with_formula(p.total, fm.TOTAL),
        **energy_json(p), **speculative_json(p),
        "memory": _with_formula(p.memory, fm.INFER_MEMORY),
        "decode_ops": [o._asdict() for o in p.decode_ops],
        "prefill_ops": [o._asdict() for o in p.prefill_ops],
        "collectives": {"decode": [plain(c) for c in p.decode_collectives],
                        "prefill": [plain(c) for c in p.prefill_collectives]},
        "warnings": [infer_notice_text(w) for w in p.warnings],
        "notices": [{"code": w.code, **w.values} for w in p.warnings],
    }


# --------------------------------------------------------------------------- comparisons

_INPUT = {"seq": "seq_len"}         # a flag's name where Inputs names the field otherwise


def comparison_table(preds, varied: list[str]) -> str:
    """``tpsim predict`` with comma lists: one row per combination, the settings that vary
    first, then the layer, the step and the fullest stage's memory."""
    keys = [(k, _INPUT.get(k, k)) for k in varied]
    widths = [max(len(k), *(len(str(getattr(p.inputs, f))) for p in preds)) for k, f in keys]
    head = "  ".join(f"{k:>{w}s}" for (k, _), w in zip(keys, widths))
    lines = [f"{head}  {'layer':>10s} {'step':>10s} {'tokens/s':>11s} {'MFU':>6s} "
             f"{'memory':>9s}  fits"]
    for p in preds:
        cells = "  ".join(f"{str(getattr(p.inputs, f)):>{w}s}" for (_, f), w in zip(keys, widths))
        st = p.step
        lines.append(f"{cells}  {_ms(p.layer.total_s):>10s} {st.time_s:9.3f}s "
                     f"{st.tokens_per_s:11,.0f} {_pct(st.mfu):>6s} "
                     f"{p.memory.total_bytes / 2**30:6.1f}GiB  {'yes' if p.memory.fits else 'NO'}")
    lines.append("(layer: one layer forward + backward; step: one optimizer step (one micro-batch "
                 "per replica unless --global-batch); memory: the fullest stage, GiB = 2^30 bytes)")
    return "\n".join(lines + fm.formula_lines(COLUMN_FORMULAS, "formula  "))


COLUMN_FORMULAS = {"layer": fm.LAYER, "step": fm.STEP["time_s"],
                   "tokens/s": fm.STEP["tokens_per_s"], "MFU": fm.STEP["mfu"],
                   "memory": fm.MEMORY["total_bytes"]}


def collective_comparison(rows, varied: list[str], releases=()) -> str:
    """``tpsim collective`` with comma lists: one row per (topology, collective) combination,
    nccl-tests' columns (GB/s = 1e9 B/s); ``releases``: each row's ``--nccl``."""
    keys = [k for k in ("topology", "nccl", "op", "ranks", "algo", "protocol") if k in varied]
    names = {"topology": lambda t, c, n: t.name, "nccl": lambda t, c, n: n,
             "op": lambda t, c, n: c.op, "ranks": lambda t, c, n: str(c.ranks),
             "algo": lambda t, c, n: c.algorithm, "protocol": lambda t, c, n: c.protocol}
    cells = [[names[k](t, c, n) for k in keys]
             for (t, c), n in zip(rows, releases or ("",) * len(rows))]
    widths = [max([len(k)] + [len(r[i]) for r in cells]) for i, k in enumerate(keys)]
    head = "".join(f"{k:>{w}s}  " for k, w in zip(keys, widths))
    lines = [f"{head}{'size':>10s} {'time_us':>12s} {'algbw_GBps':>11s} {'busbw_GBps':>11s}"
             "  algorithm/protocol  formula"]
    for r, (t, c) in zip(cells, rows):
        lead = "".join(f"{x:>{w}s}  " for x, w in zip(r, widths))
        lines.append(f"{lead}{format_size(c.nbytes):>10s} {c.time_s * 1e6:12.2f} "
                     f"{c.algbw_Bps / 1e9:11.2f} {c.busbw_Bps / 1e9:11.2f}  "
                     f"{c.algorithm}/{c.protocol}  {c.formula}")
    return "\n".join(lines)
