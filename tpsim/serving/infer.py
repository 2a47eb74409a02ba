"""Serving a tensor-parallel model: prefill and decode with a KV cache -> :class:`InferPrediction`.

What it models, per GPU of one TP group (every rank runs the same ops in lock-step):

* **Prefill** (time to first token): the layer's forward at the prompt length
  (:func:`tpsim.layer.infer_graph.serving_layer_template`: flash attention, causal; the two TP
  all-reduces of (b*prompt x h) as in training) plus the KV-cache write, times the layers; the
  embedding over every prompt token and the output layer over the last token of each sequence.
* **Decode**: step k (k = 1 .. gen-1; the prefill emits the first token) feeds one token per
  sequence: GEMMs with m = batch, memory-bound on the weights at small batch and compute-bound
  past the roofline's knee (:func:`tpsim.cost.compute.gemm_time`); attention reading the cache of
  kv_len = prompt + k tokens, priced by its bytes (FlashDecoding-style, see
  :mod:`tpsim.layer.infer_graph`); two all-reduces of (b x h) per layer in the latency regime, priced
  by :func:`tpsim.cost.collectives.collective_time` (NCCL's LL/LL128/Simple and NVLS, the fastest),
  or with ``allreduce="custom"`` by vLLM's one-shot/two-shot kernel
  (:func:`tpsim.cost.collectives.custom_all_reduce_time`) wherever vLLM runs it (one NVLink node,
  2/4/6/8 ranks, under 8 MiB) and NCCL elsewhere.
* **Host**: serving engines replay each step as a CUDA graph, so no op waits for the host
  (``host_dispatch_s = 0``); ``eager=True`` issues every op from the host at the device's
  ``host_dispatch_us`` (:func:`tpsim.sim.schedule.issue_bound`). The per-step work of the engine's
  scheduler and sampler on the CPU is not modelled.
* **Mean time per token**: only the decode attention depends on kv_len, so the step time f(L)
  is a max-plus expression of affine functions of L: convex and piecewise linear. The mean over
  the integer lengths is taken exactly by :func:`mean_over_lengths` (affine pieces summed in
  closed form, kinks found by bisection): typically three step simulations, not gen - 1.
* **Pipeline** (``pp`` > 1): layers split into pp stages of ceil(layers/pp); the batch into pp
  micro-batches of batch/pp in flight (as vLLM's virtual engines keep every stage busy): a
  token's latency = layers x layer(batch/pp) + ends + (pp-1) stage-to-stage transfers, and the
  prefill fills the pipeline: its layers' time x (2pp-1)/pp.
* **Kinds of layer**: a model mixing dense and mixture-of-experts layers, or full and
  sliding-window attention (:func:`tpsim.spec.model_params.layer_kinds`), is priced as the sum
  over its kinds of count x one such layer. An MoE layer reads only the experts its tokens
  chose (:mod:`tpsim.layer.infer_moe`: E (1 - (1 - k/E)^B) of them in expectation); with
  ``ep`` > 1 each of ep attention replicas serves batch/ep sequences and the experts are split
  over the replicas, with an all-to-all dispatch and combine. Multi-head latent attention is
  :mod:`tpsim.layer.infer_mla` (absorbed decode over the latent cache).
* **Memory** (:func:`serving_memory`): weights per GPU (linears in ``dtype``, norms and the
  vocabulary in the activation dtype), the KV cache (kv heads replicated when tp > kv_heads:
  ModelConfig.kv_heads_per_rank), the prefill's widest activations; the largest batch that fits
  in what the device leaves to tensors (Device.usable_bytes of the layout's memory_headroom,
  else vLLM's default reserve: :func:`tpsim.serving.engine_memory.headroom`).
"""
from __future__ import annotations

import dataclasses
import math

from ..cost.collectives import custom_all_reduce_time, custom_all_reduce_unsupported
from ..cost.custom_staging import staged_custom_all_reduce
from ..cost.compute import decode_fixed_s, memory_bound
from ..base.errors import ConfigError
from ..layer.infer_graph import (decode_attention_core, embedding_template, output_template,
                                 resizer, serving_dims, serving_layer_template)
from ..spec.model_params import layer_kinds
from .energy import run_energy
from .speculative import draft_memory, speculative_steps
from .lengths import mean_over_lengths
from .memory import serving_memory
from .engine_memory import engine_memory_rule, headroom
from .result import (Decode, InferInputs, InferPrediction, PhaseCost, Prefill, Total)
from ..spec.model import ModelConfig, load_model
from ..layer.infer_graph import PHASES
from ..layer.ops import Attention, Collective, DecodeAttention, SendRecv
from ..spec.parallel import Parallelism
from ..spec.serve import ServeSettings
from ..spec.serving import ALLREDUCE, DTYPES, ServingLayout
from ..spec.settings import given_or_made
from ..sim.price import Pricing, price
from ..sim.result import Notice
from ..sim.schedule import run
from ..sim.simulate import Simulation, phase_times, simulate
from ..cluster.nccl import Topology, release_of, topology_of

def _check(m: ModelConfig, topo: Topology, lay: ServingLayout) -> None:
    """What the settings ask of the model and the topology (their own values:
    :class:`~tpsim.spec.serving.ServingLayout`); a ConfigError naming the flag."""
    tp, pp, ep = lay.tp, lay.pp, lay.ep
    topo.device.peak(lay.dtype)
    if tp * pp * ep > topo.max_ranks:
        raise ConfigError("--tp", "", f"tp x pp x ep at most the {topo.max_ranks} GPUs of "
                          f"{topo.name}", tp * pp * ep)
    serving_dims(m, tp, ep, 1, 1, lay.dtype, lay.activation_dtype, lay.cache_dtype)
    if lay.batch % (pp * ep):
        raise ConfigError("--batch", "", f"a multiple of --pp x --ep ({pp * ep}): pp "
                          "micro-batches in flight on each of ep attention replicas", lay.batch)
    if pp > m.layers:
        raise ConfigError("--pp", "", f"at most the {m.layers} layers of {m.name}", pp)
    if lay.speculative == "mtp" and not m.mtp_layers:
        raise ConfigError("--speculative", "", f"eagle or a --draft-model: {m.name} has no "
                          "multi-token-prediction layers (mtp_layers 0)", "mtp")


def serving_layout(settings: ServingLayout | None, given: dict) -> ServingLayout:
    """The run's :class:`~tpsim.spec.serving.ServingLayout`: ``settings``, or the keyword
    form's ``given`` settings (which build one). Both given: each keyword must agree."""
    return given_or_made(ServingLayout, settings, given, "infer", "settings")


def phase_cost(sim: Simulation, device, extra_flops: float = 0.0) -> PhaseCost:
    """What bounds one simulated pass (:class:`~tpsim.serving.result.PhaseCost`).

    A compute op is memory-bound when its time is that of its bytes alone,
    ``elementwise_time(op.bytes)`` = launch + bytes / (mem_bw * mem_eff) (the memory term of
    :func:`~tpsim.cost.compute.gemm_time` and :func:`~tpsim.cost.compute.attention_time`), else
    compute-bound; each pays ``kernel_launch``. Comm time is the GPU's makespan beyond the
    compute ops' own times; host time is the phase (:func:`~tpsim.sim.simulate.phase_times`) beyond
    the makespan. ``extra_flops``: FLOPs of ops priced by bytes alone (the decode attention).
    The decode attention's fixed part (:func:`~tpsim.cost.compute.decode_attention_time`)
    counts with the launches: a kernel's fixed cost, set by neither roofline.
    """
    launch_s = device.kernel_launch_s
    hbm = flops = launch = nominal = 0.0
    for op, t in zip(sim.ops, sim.times):
        if op.stream == "comm":
            continue
        nominal += t
        fixed = decode_fixed_s(device) if type(op) is DecodeAttention else 0.0
        launch += launch_s + fixed
        t -= fixed
        if memory_bound(t, op.bytes, device):
            hbm += t - launch_s
        else:
            flops += t - launch_s
    total, gpu = phase_times(sim)[0], sim.timeline.makespan_s
    return PhaseCost(total, hbm, flops, launch, gpu - nominal, total - gpu,
                     sim.flops + extra_flops, sum(op.bytes for op in sim.ops),
                     sum(op.comm_bytes for op in sim.ops), len(sim.ops))


def serve_simulate(template, dims, pricing: Pricing, host_s: float,
                   allreduce: str = "nccl", staged: bool = False) -> Simulation:
    """:func:`~tpsim.sim.simulate.simulate`, and with ``allreduce="custom"`` every all-reduce that
    vLLM's custom kernel serves re-priced by :func:`~tpsim.cost.collectives.custom_all_reduce_time`
    and the streams re-scheduled (NCCL's price stays where the kernel does not run); ``staged``
    (no CUDA graphs) adds the copy into its IPC buffer
    (:func:`~tpsim.cost.custom_staging.staged_custom_all_reduce`)."""
    sim = simulate(template, dims, pricing, host_s)
    if allreduce != "custom":
        return sim
    times, formulas, costs = list(sim.times), list(sim.formulas), list(sim.costs)
    topo, changed = pricing.topology, False
    for i, op in enumerate(sim.ops):
        if type(op) is Collective and op.op == "all-reduce":
            place = topo.place(pricing.group(op.group))
            if not custom_all_reduce_unsupported(op.nbytes, place):
                c = custom_all_reduce_time(op.nbytes, place, topo)
                c = staged_custom_all_reduce(c, topo.device) if staged else c
                times[i], formulas[i], costs[i], changed = c.time_s, c.formula, c, True
    if not changed:
        return sim
    tl = run(template, times, topo.device.comm_compute_interference)
    return dataclasses.replace(sim, times=times, formulas=formulas, costs=costs, timeline=tl)


class _Server:
    """The priced pieces of one configuration: pricing, host dispatch, templates, dims."""

    def __init__(self, m: ModelConfig, topo: Topology, tp, pp, dtype, act, kv_dtype,
                 allreduce, eager, ep: int = 1, decode_attention: str = "tensor-cores"):
        self.m, self.topo, self.tp, self.pp, self.ep = m, topo, tp, pp, ep
        self.decode_attention = decode_attention
        self.dtype, self.act, self.kv_dtype, self.allreduce = dtype, act, kv_dtype, allreduce
        self.pricing = Pricing(topo, Parallelism(tp=tp, pp=pp, ep=ep))
        self.eager, self.host_s = eager, topo.device.host_dispatch_s if eager else 0.0
        self._resize = None                # the first dims made, resized (dims)
        swiglu = m.activation == "swiglu"
        mla = (2 if m.q_lora_rank else 1) if m.mla else 0
        moe = (2 if m.shared_experts else 1) if m.moe else 0
        # (layers, prefill template, decode template, window) of each kind of layer, the MoE
        # ones first: the first kind is the one a report shows
        self.mix = tuple((n, *(serving_layer_template(p, tp > 1, swiglu, moe if sparse else 0,
                                                      ep > 1 and sparse, mla)
                               for p in PHASES), w) for n, sparse, w in layer_kinds(m))
        _, self.prefill_tpl, self.decode_tpl, self.window = self.mix[0]

    def dims(self, b: int, s: int, kv_len: int = 0):
        """The first kind of layer's dims (its attention window included): made once, then
        resized (:func:`~tpsim.layer.infer_graph.resizer`: a run's step tables ask for up to
        ~1,600)."""
        if self._resize is None:
            d = serving_dims(self.m, self.tp, self.ep, b, s, self.dtype, self.act,
                             self.kv_dtype, kv_len, decode_attention=self.decode_attention,
                             **({"window": self.window} if self.window else {}))
            self._resize = resizer(d)
            return d
        return self._resize(b, s, kv_len)

    def layers_cost(self, phase: str, dims, extra=None) -> PhaseCost:
        """All the model's layers at ``dims``: sum over the kinds of layer (dense or MoE, full
        or sliding-window attention) of their count x one such layer's :func:`phase_cost`;
        ``extra(dims)``: FLOPs of ops priced by bytes alone (the decode attention)."""
        total = None
        for n, *tpls, w in self.mix:
            d = dataclasses.replace(dims, window=w)
            c = self.cost(tpls[PHASES.index(phase)], d, extra(d) if extra else 0.0).scaled(n)
            total = c if total is None else total + c
        return total

    def prefill_layer_split(self, dims) -> tuple[float, float]:
        """(phase time, attention time) of the mean prefill layer at ``dims`` (the kinds of
        layer weighted by their counts)."""
        whole = attn = 0.0
        for n, tpl, _, w in self.mix:
            sim = self.sim(tpl, dataclasses.replace(dims, window=w))
            whole += n * phase_times(sim)[0]
            attn += n * sum(t for op, t in zip(sim.ops, sim.times) if type(op) is Attention)
        return whole / self.m.layers, attn / self.m.layers

    def sim(self, template, dims) -> Simulation:
        return serve_simulate(template, dims, self.pricing, self.host_s, self.allreduce,
                              self.eager)

    def cost(self, template, dims, extra_flops: float = 0.0) -> PhaseCost:
        return phase_cost(self.sim(template, dims), self.topo.device, extra_flops)

    def ends(self, b: int, s: int) -> PhaseCost:
        """Embedding over b*s tokens, output layer over the last token of each sequence."""
        tp_group = self.tp > 1
        return (self.cost(embedding_template(tp_group), self.dims(b, s))
                + self.cost(output_template(tp_group), self.dims(b, 1)))

    def p2p(self, nbytes: float) -> PhaseCost:
        """(pp - 1) stage-to-stage transfers of ``nbytes`` (activations of one micro-batch)."""
        if self.pp == 1:
            return PhaseCost(*[0.0] * 10)
        t = price(SendRecv(nbytes, "pp"), self.pricing)[0]
        return PhaseCost(t, 0, 0, 0, t, 0, 0, 0, nbytes, 1).scaled(self.pp - 1)

    def decode_layer(self, b: int, kv_len: int, s: int = 1) -> PhaseCost:
        """The mean decode layer (dense and MoE layers weighted by their counts); ``s`` > 1:
        s queries per sequence (a speculative verification), reading the cache once."""
        d = self.dims(b, s, kv_len)
        if len(self.mix) > 1:
            extra = lambda x: s * decode_attention_core(x).flops   # noqa: E731
            return self.layers_cost("decode", d, extra).scaled(1 / self.m.layers)
        return self.cost(self.decode_tpl, d, s * decode_attention_core(d).flops)


def _stretch(cost: PhaseCost, k: float) -> PhaseCost:
    """``cost`` with its times (not its work) multiplied by ``k``: a pipeline's fill."""
    times = ("time_s", "hbm_s", "flops_s", "launch_s", "comm_s", "host_s")
    return dataclasses.replace(cost, **{f: getattr(cost, f) * k for f in times})


def prefill_pass(srv: _Server, batch: int, prompt: int) -> tuple[Prefill, Simulation]:
    """The prompt pass (:class:`~tpsim.serving.result.Prefill`) and its layer's simulation:
    time = layers x one prefill layer (:func:`phase_cost`) x (2pp - 1)/pp (the pipeline's fill)
    + the embedding and output layer + (pp - 1) stage-to-stage transfers; tokens/s = batch x
    prompt / time; MFU = FLOPs / time / the dtype's peak."""
    pp, micro = srv.pp, batch // (srv.pp * srv.ep)
    d = srv.dims(micro, prompt)
    sim = srv.sim(srv.prefill_tpl, d)
    every = (phase_cost(sim, srv.topo.device).scaled(srv.m.layers) if len(srv.mix) == 1
             else srv.layers_cost("prefill", d))
    layers = _stretch(every, (2 * pp - 1) / pp)
    cost = layers + srv.ends(micro, prompt) + srv.p2p(d.T * d.h * d.bpe)
    mfu = cost.flops / cost.time_s / srv.topo.device.peak(srv.dtype)
    return Prefill(cost.time_s, batch * prompt / cost.time_s, cost, mfu), sim


def _mean_layer(srv: _Server, micro: int, first: int, last: int) -> tuple[float, int]:
    """:func:`mean_over_lengths` of the decode layer over kv_len first..last, split at a
    sliding window inside the range: past it a windowed layer's reads stop growing (a
    concave kink), so each side is convex and piecewise linear again."""
    f = lambda n: srv.decode_layer(micro, n).time_s    # noqa: E731
    w = srv.m.sliding_window
    if not w or not first <= w < last:
        return mean_over_lengths(f, first, last)
    (lo, a), (hi, b) = mean_over_lengths(f, first, w), mean_over_lengths(f, w + 1, last)
    return (lo * (w - first + 1) + hi * (last - w)) / (last - first + 1), a + b


def decode_steps(srv: _Server, batch: int, prompt: int, gen: int) -> tuple[Decode, Simulation]:
    """The gen - 1 decode steps (:class:`~tpsim.serving.result.Decode`) and the decode layer's
    simulation at the mean cache length: time per token = layers x the mean decode layer over
    kv_len prompt + 1 .. prompt + gen - 1 (:func:`mean_over_lengths`) + the ends + the p2p
    transfers; tokens/s = batch / time per token; the first and last steps at the shortest and
    longest cache; HBM bandwidth = the mean step's HBM bytes / its time."""
    micro, layers = batch // (srv.pp * srv.ep), srv.m.layers
    fixed = srv.ends(micro, 1) + srv.p2p(micro * srv.m.hidden * srv.dims(1, 1).bpe)
    first, last = prompt + 1, prompt + gen - 1
    mean_layer, calls = _mean_layer(srv, micro, first, last)
    tpot = layers * mean_layer + fixed.time_s
    kv_mid = round((first + last) / 2)
    cost = srv.decode_layer(micro, kv_mid).scaled(layers) + fixed
    step = lambda n: layers * srv.decode_layer(micro, n).time_s + fixed.time_s  # noqa: E731
    how = (f"exact mean over kv_len {first}..{last} from {calls} step simulations "
           "(piecewise-linear in kv_len)")
    dec = Decode(gen - 1, tpot, batch / tpot, step(first), step(last), kv_mid, cost,
                 cost.hbm_bytes / cost.time_s, srv.topo.device.memory_bandwidth_Bps, how)
    return dec, srv.sim(srv.decode_tpl, srv.dims(micro, 1, kv_mid))


def draft_server(topo: Topology, lay: ServingLayout) -> _Server | None:
    """The ``--draft-model``'s own server at the layout's tp (None for a head or no draft)."""
    if lay.draft_model is None:
        return None
    try:
        dm = load_model(lay.draft_model)
    except ConfigError as e:
        raise ConfigError("--draft-model", "", e.expected, lay.draft_model) from None
    serving_dims(dm, lay.tp, 1, 1, 1, lay.dtype, lay.activation_dtype, lay.cache_dtype)
    return _Server(dm, topo, lay.tp, 1, lay.dtype, lay.activation_dtype, lay.cache_dtype,
                   lay.allreduce, lay.eager, decode_attention=lay.decode_attention)


def speculate(srv: _Server, m: ModelConfig, topo: Topology, lay: ServingLayout, plain: Decode):
    """The decode with the layout's draft (:func:`~tpsim.serving.speculative.speculative_steps`)
    and the draft's (weights, KV bytes per token) per GPU
    (:func:`~tpsim.serving.speculative.draft_memory`)."""
    draft = draft_server(topo, lay)
    method = lay.speculative or "draft"
    dec, spec = speculative_steps(srv, draft, method, lay.num_speculative_tokens,
                                  lay.acceptance, lay.batch, lay.prompt, lay.gen, plain)
    mem = draft_memory(m, draft and draft.m, method, lay.tp, lay.dtype, lay.activation_dtype,
                       lay.cache_dtype, lay.ep)
    return dec, spec, mem


def _notices(srv: _Server, mem, runs, allreduce: str) -> tuple[Notice, ...]:
    topo, out = srv.topo, []
    if not mem.fits:
        out.append(Notice("serving_memory_does_not_fit", {
            "needed_bytes": mem.total_bytes, "capacity_bytes": mem.capacity_bytes,
            "usable_bytes": mem.capacity_bytes - mem.reserved_bytes,
            "device": topo.device.name, "max_batch": mem.max_batch}))
    nodes = math.ceil(srv.tp / topo.devices_per_node)
    if nodes > 1:
        out.append(Notice("tp_spans_nodes", {"tp": srv.tp, "nodes": nodes,
                                             "level": topo.network.name}))
    if allreduce == "custom":
        nccl = sorted({(phase, c.bytes) for phase, sim in runs.items()
                       for c in sim.collective_rows()
                       if c.op == "all-reduce" and not c.algorithm.startswith("custom")})
        for phase, nbytes in nccl:
            place = topo.place(srv.pricing.group("tp"))
            out.append(Notice("custom_all_reduce_fallback", {
                "phase": phase, "bytes": nbytes,
                "why": custom_all_reduce_unsupported(nbytes, place)}))
    return tuple(out)


def infer(model, topology="dgx-h100", *, settings: ServingLayout | None = None,
          usd_per_gpu_hour: float | None = None, **given) -> InferPrediction:
    """Time to first token, time per output token, tokens/s and memory of serving ``batch``
    sequences of ``prompt`` tokens, generating ``gen`` tokens each (the module docstring).

    ``model``/``topology``: shipped names, YAML paths or loaded objects. ``settings``: a
    :class:`~tpsim.spec.serving.ServingLayout` (tp, pp, batch, prompt, gen, dtype, kv_dtype,
    allreduce, eager; its fields say what each means), or its fields as keywords, which build
    one. ``dtype``: the GEMMs' (bf16, fp16, fp8; fp8 keeps 16-bit activations: bf16);
    ``kv_dtype``: the cache's (default ``dtype``); ``allreduce``: nccl | custom; ``eager``: no
    CUDA graphs; ``usd_per_gpu_hour``: the GPUs' price, for the batch's cost (None: no cost);
    ``nccl`` (a field too): the NCCL release priced (:func:`~tpsim.cluster.nccl.topology_of`).
    Energy and cost: :func:`tpsim.serving.energy.run_energy` over the batch's time, tp x pp
    (x ep) GPUs busy throughout, the prefill at full activity and the decode steps memory-bound.
    """
    lay = serving_layout(settings, given)
    ServeSettings(usd_per_gpu_hour=usd_per_gpu_hour)      # checks the price
    m = model if isinstance(model, ModelConfig) else load_model(model)
    topo = topology_of(topology, lay.nccl)
    _check(m, topo, lay)
    tp, pp, batch, prompt, gen = lay.tp, lay.pp, lay.batch, lay.prompt, lay.gen
    dtype, act, kv_dtype = lay.dtype, lay.activation_dtype, lay.cache_dtype
    allreduce = lay.allreduce
    srv = _Server(m, topo, tp, pp, dtype, act, kv_dtype, allreduce, lay.eager, lay.ep,
                  lay.decode_attention)
    pre, pre_sim = prefill_pass(srv, batch, prompt)
    dec, dec_sim = decode_steps(srv, batch, prompt, gen)
    spec, draft_mem = None, (0.0, 0.0)
    if lay.num_speculative_tokens:
        dec, spec, draft_mem = speculate(srv, m, topo, lay, dec)
    total_s = pre.time_s + dec.steps * dec.time_per_token_s
    h = headroom(lay.memory_headroom, "vllm", topo.device, tp)
    mem = serving_memory(m, tp, pp, batch, prompt, gen, dtype, act, kv_dtype,
                         topo.device.memory_bytes,
                         lambda churned: topo.device.usable_bytes(h, churned),
                         lay.ep, draft_mem)
    runs = {"prefill": pre_sim, "decode": dec_sim}
    inputs = InferInputs(m.name, topo.name, topo.device.name, tp, pp, batch, prompt, gen, dtype,
                         act, kv_dtype, allreduce, not lay.eager, m.heads // tp,
                         m.kv_heads_per_rank(tp), math.ceil(tp / topo.devices_per_node), lay.ep,
                         lay.speculative, spec and spec.draft_model, lay.num_speculative_tokens,
                         spec and spec.acceptance_rate, lay.decode_attention, h,
                         engine_memory_rule(lay.memory_headroom, "vllm", tp), release_of(lay.nccl))
    energy, cost = run_energy(topo, tp * pp * lay.ep, total_s, pre.time_s, total_s - pre.time_s,
                              batch * gen, usd_per_gpu_hour)
    return InferPrediction(inputs, pre, dec, Total(total_s, batch * gen / total_s), mem,
                           _notices(srv, mem, runs, allreduce), runs, energy, cost, spec)


__all__ = ["infer", "ServingLayout", "phase_cost", "serve_simulate", "mean_over_lengths", "DTYPES",
           "ALLREDUCE"]
