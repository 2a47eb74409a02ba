"""Serving as an engine runs it: ``tpsim.serve`` -> :class:`ServePrediction`.

An engine loop as vLLM's V1 scheduler (vllm/v1/core/sched/scheduler.py) runs it, with
TensorRT-LLM's in-flight batching and SGLang's chunked prefill doing the same:

* **continuous batching**: each engine step schedules the running sequences first (a decode
  needs one token, an unfinished prefill the rest of its prompt), then admits waiting
  requests in arrival order while fewer than ``max_num_seqs`` run; every token scheduled
  counts against the step's budget of ``max_num_batched_tokens``, and a prompt that does not
  fit is cut into chunks (chunked prefill);
* **paged KV cache**: blocks of ``block_size`` tokens; a sequence holding n tokens of cache
  holds ceil(n / block_size) blocks. The blocks fill what the device leaves after the weights
  and the activations of one step at the token budget (:func:`kv_cache_blocks`, from
  :func:`tpsim.serving.memory.serving_memory`'s pieces and ``Device.usable_bytes`` as
  ``tpsim infer`` takes them);
* **engines of vLLM's V0 kind** (off by default): ``separate_prefill``, a step that prefills
  runs no decodes, the running sequences waiting for it (:meth:`EngineLoop._prefill_due`);
  ``num_scheduler_steps`` S > 1, multi-step scheduling: a waiting request is admitted only
  at the end of the run of S decode steps in progress (:func:`.decode_run.run_end`); one
  that ends inside a run ends with it, a last step's time per step left (vLLM's multi_step.py
  output processor cuts past max_tokens); a run's and a prefill step's tokens stream with
  the next step (:mod:`.output_lag`);
* **preemption by recompute**: a running sequence that needs a block when none is free takes
  them from the most recently admitted one, which loses its cache and goes back to the head
  of the queue, its prompt and the tokens it had generated to be prefilled again; no waiting
  request is admitted in a step that preempted (vLLM V1's rule);
* **time**: a step lasts :class:`tpsim.serving.step_model.StepModel`'s price of its tokens
  (CUDA graphs unless ``eager``, as ``tpsim infer`` prices them) and the engine's host work
  for its sequences, after it or overlapped with it (:mod:`tpsim.serving.host`: overlapped,
  each step's batch is fixed as the step before it starts, ``horizon_s``); a
  prefill's last chunk samples the sequence's next token (its first: TTFT), a decode one
  token each. Steps that only decode, with nothing to admit, are advanced together up to the
  next finish, arrival or block shortage (:mod:`tpsim.serving.decode_run`): O(events) steps;
* **admission** (``admission``): vLLM's rule above, or SGLang's reservation
  (:mod:`tpsim.serving.admission`: the head waits while it does not fit);
* **pipeline** (``pp`` > 1): each GPU holds ceil(layers/pp) layers' weights and KV cache, so
  the blocks hold more tokens; a step is a round of min(pp, sequences) micro-batches through the
  stages (:class:`~tpsim.serving.step_model.StepModel`); ``max_num_seqs`` bounds them all.
* **expert parallelism** (``ep`` > 1, a mixture-of-experts model): ep attention replicas of
  tp x pp GPUs, one scheduler over them; each GPU holds E/ep of each MoE layer's experts, so
  more blocks, and the engine's cache is the ep replicas' blocks together (a sequence within
  one replica's); a step spreads its sequences over the replicas (g = min(pp ep, sequences)
  in :class:`~tpsim.serving.step_model.StepModel`); ``max_num_seqs`` and the token budget
  bound the whole step, all replicas together (vLLM's data-parallel engines: x ep here).

A request may arrive with its prompt already cached (``cached``: a disaggregated decode
instance receives the prefill's KV cache and its first token): it is admitted with the blocks
of its prompt and decodes from its first step. Prefix caching is not modelled. A speculative
draft: :mod:`tpsim.serving.spec_engine` prices its steps and the tokens they emit.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

from ..base.errors import ConfigError
from ..cluster.nccl import Topology, release_of, topology_of
from ..spec.model import ModelConfig, load_model
from ..spec.serve import ServeSettings, split_settings
from ..spec.serving import ServingLayout
from .admission import admission
from .arrivals import draw_requests
from .admit_step import decode_admit_step
from .batching import all_running, schedule
from .decode_run import advance
from .energy import run_energy
from .frontend import frontend_latency_s, frontend_s, paced_wall_s
from .gaps import TokenGaps, latencies
from .host import host_step_s, horizon_s, prefill_op_s, step_wall_s
from .output_lag import OutputLag
from .infer import _check, _Server
from .memory import activations_per_sequence, kv_bytes_per_token, weights_per_gpu
from .serve_result import (EngineConfig, Latency, Percentiles, Scheduler, ServeInputs,
                           ServePrediction, Throughput)
from .spec_engine import draft_bytes, spec_inputs, speculation
from .step_model import StepModel
from .engine_memory import engine_memory_rule, headroom


def kv_cache_blocks(m: ModelConfig, topo: Topology, lay: ServingLayout,
                    st: ServeSettings) -> EngineConfig:
    """The paged KV cache: usable = Device.usable_bytes(h, the activations below:
    the bytes that churn, the pool itself allocated once); KV bytes = usable -
    weights_per_gpu (of one of pp stages) - activations_per_sequence at a prompt of
    max_num_batched_tokens (the profile run of one full step, as vLLM sizes it, on every
    stage); kv_bytes_per_token of one stage's layers (both with a speculative draft's own,
    :func:`tpsim.serving.spec_engine.draft_bytes`); num_gpu_blocks = ep floor(KV bytes /
    (block_size x kv_bytes_per_token)), the ep replicas' blocks together, each GPU holding
    E/ep experts of each MoE layer; kv_cache_tokens likewise; kv_cache_bytes one GPU's. h is
    the layout's memory_headroom, else the engine's (``st.admission``:
    :func:`tpsim.serving.engine_memory.headroom`)."""
    draft = draft_bytes(m, topo, lay)        # a speculative draft's weights and KV per token
    weights = weights_per_gpu(m, lay.tp, lay.pp, lay.dtype, lay.activation_dtype, lay.ep) \
        + draft[0]
    act = activations_per_sequence(m, lay.tp, 1, st.max_num_batched_tokens,
                                   lay.activation_dtype)
    h = headroom(lay.memory_headroom, st.admission, topo.device, lay.tp)
    usable = topo.device.usable_bytes(h, act)
    per_token = kv_bytes_per_token(m, lay.tp, lay.pp, lay.cache_dtype) + draft[1]
    blocks = math.floor(max(usable - weights - act, 0.0) / (st.block_size * per_token))
    return EngineConfig(st.max_num_seqs, st.max_num_batched_tokens, st.block_size,
                        usable / topo.device.memory_bytes, lay.ep * blocks,
                        lay.ep * blocks * st.block_size, per_token, weights, act,
                        blocks * st.block_size * per_token, h,
                        engine_memory_rule(lay.memory_headroom, st.admission, lay.tp))


class EngineLoop:
    """The engine's state over a run (module docstring); numpy arrays by request id (the
    tokens in the cache, prompt + generated, generated, wanted), the running ids a list in
    admission order."""

    def __init__(self, reqs, st: ServeSettings, blocks: int, model: StepModel,
                 cached: bool = False, spec=None):
        self.arr, self.prompt, self.gen = reqs.arrival_s, reqs.prompt, reqs.gen
        self.wants = np.asarray(self.gen, dtype=np.int64)   # tokens each request generates
        n = len(self.arr)
        self.users = None if cached else st.users          # a closed loop of clients
        if self.users is not None:                          # the rest sent as requests end
            self.arr = np.where(np.arange(n) < self.users, self.arr, np.inf)
        self.sent = n if self.users is None else min(self.users, n)
        self.lat = 0.0 if cached else frontend_latency_s(st)   # sent -> seen by the engine
        prompt = np.asarray(self.prompt, dtype=np.int64)
        self.computed = prompt.copy() if cached else np.zeros(n, np.int64)   # in the cache
        self.tokens = prompt + int(cached)                                   # prompt + generated
        self.done = np.full(n, int(cached), dtype=np.int64)                  # generated
        self.past = self.done - self.wants                    # generated - wanted (<= 0)
        self.first = np.zeros(n)
        self.last = np.zeros(n)
        self.bs, self.free, self.model, self.st = st.block_size, blocks, model, st
        self.capacity = blocks                          # the cache's blocks, free or held
        self.max_seqs, self.budget = st.max_num_seqs, st.max_num_batched_tokens
        self.waiting, self.running = deque(), []
        self._ids, self.decoding = None, True    # the running ids' array; all of them decode
        self.t, self.next, self.finished = float(self.arr[0]) if n else 0.0, 0, 0
        self.steps = self.prefill_steps = self.preemptions = self.seq_steps = 0
        self.multi, self.since = st.num_scheduler_steps, 0   # decode steps into the run
        self.prefill_busy_s = self.decode_busy_s = 0.0   # engine steps with / without prefill
        self.host_wait_s = self.wall = 0.0     # the GPU waiting for the host; the last step
        self.frontend_wait_s = 0.0                       # the engine waiting for the front end
        self.gaps, self.admit = TokenGaps(n), admission(st)   # ITL gaps; who is admitted
        self.spec, self.lag = spec, OutputLag(st.num_scheduler_steps)   # a draft or None

    def blocks(self, n: int) -> int:
        return -(-n // self.bs)

    def ids(self) -> np.ndarray:
        """The running ids as an array (read-only), made again only after they change
        (:meth:`changed`)."""
        if self._ids is None:
            self._ids = np.array(self.running, dtype=np.int64)
            self._ids.flags.writeable = False
        return self._ids

    def changed(self) -> None:
        """The running set changed (an admission, a preemption): its array and whether all of
        it decodes are to be found again."""
        self._ids = self.decoding = None

    def run(self) -> None:
        n = len(self.arr)
        while self.finished < n:
            seen = horizon_s(self.t, self.wall, self.st.host_overlap, bool(self.running))
            while self.next < n and self.arr[self.next] + self.lat <= seen:
                self.waiting.append(self.next)
                self.next += 1
            if not self.running and not self.waiting:
                self.t, self.since, self.wall = float(self.arr[self.next]) + self.lat, 0, 0.0
                self.admit.idle()
                continue
            room = self.waiting and len(self.running) < self.max_seqs and (
                not self.running or self.admit.fits(self, self.waiting[0]))
            if not self.running:
                self.since = 0                          # an idle engine schedules at once
            if (not room or self.since) and self._decoding() and not self.spec \
                    and advance(self):
                continue
            self._step()

    def _decoding(self) -> bool:
        """Every running sequence decodes: one token to feed and its first token out (a prompt
        whose last chunk is one token is still a prefill)."""
        if self.decoding is None:
            run = self.ids()
            self.decoding = bool(((self.tokens[run] - self.computed[run] == 1)
                                  & (self.done[run] > 0)).all())
        return self.decoding

    def _preempt(self) -> int:
        v = self.running.pop()
        self.free += self.blocks(int(self.computed[v]))
        self.computed[v] = 0
        self.waiting.appendleft(v)
        self.preemptions += 1
        self.changed()
        self.admit.retracted(self)
        return v

    def _prefill_due(self) -> bool:
        """A prompt to prefill this step: a running one unfinished, or the first waiting one
        admissible (room among max_num_seqs and blocks for its first chunk)."""
        if not self._decoding():
            return True
        if not self.waiting or len(self.running) >= self.max_seqs:
            return False
        w, c, tk = self.waiting[0], self.computed, self.tokens
        return self.blocks(c[w] + min(tk[w] - c[w], self.budget)) <= self.free

    def _step(self) -> None:
        alone = self.st.separate_prefill and self._prefill_due()
        fast = None if alone else all_running(self)
        if fast is not None and self.running and not self.spec and self._decoding():
            decode_admit_step(self, fast)              # the usual step, found with less work
            return
        ids, news = schedule(self, alone, fast)
        if not ids.size and self.st.separate_prefill:   # its prompt preempted: decode instead
            ids, news = schedule(self, False, all_running(self))
        if not ids.size:
            raise ConfigError("--max-num-batched-tokens", "", "room for one block of a "
                              "request: the KV cache holds no block", self.budget)
        cs, tks, ds = self.computed[ids], self.tokens[ids], self.done[ids]
        decodes = (tks - cs == 1) & (ds > 0)
        fed = cs + news
        made = fed == tks                             # each samples its next token
        outs = int(np.count_nonzero(made))
        dt, seqs, chunked = self._price(ids, news, cs, decodes, outs)
        engine = float(step_wall_s(dt, host_step_s(self.st, ids.size), self.st.host_overlap))
        fresh = ds == 0                               # no token out yet
        admitted = int(np.count_nonzero((cs == 0) & fresh))
        wall = float(paced_wall_s(engine, frontend_s(self.st, admitted, outs)))
        self._account(ids.size, dt, engine, wall)
        self.computed[ids] = fed
        firsts = ids[made & fresh]
        made = ids[made]
        self.tokens[made] += 1
        self.done[made] += 1
        self.past[made] += 1
        self.first[firsts] = self.t
        streamed = made if self.since == 0 or self.multi == 1 else firsts
        if self.spec:
            self.spec.emit(self, seqs)
        self.lag.release(self, self.t - wall, self.t, chunked)   # the last step's
        self.lag.stream(self, streamed, [self.t], [1])
        # all decode next where every running one fed its last token (else: look again)
        whole = ids.size == len(self.running)      # then ids is the running ones in order
        self.decoding = True if not self.spec and whole and outs == ids.size else None
        if whole and self._ids is None:
            ids.flags.writeable = False
            self._ids = ids
        self._retire(made)                 # only those that sampled grew

    def _price(self, ids, news, cs, decodes, outs: int) -> tuple[float, np.ndarray, bool]:
        """The GPU time of a step of ``ids`` feeding ``news`` tokens each after ``cs`` cached,
        those of ``decodes`` decoding, ``outs`` sampling: (the time, the decoding ids,
        whether it prefills); the counts of its kind."""
        b = int(np.count_nonzero(decodes))
        seqs, dec = (ids, cs) if b == ids.size else (ids[decodes], cs[decodes])
        kv, q = sum(dec.tolist()) + b, self.spec.k + 1 if self.spec else 1   # each + 1
        if b < ids.size:
            chunked = ~decodes
            dt = self.model.mixed_step_arrays(news[chunked], cs[chunked], b, kv,
                                              outs + (q - 1) * b,
                                              prefill_op_s(self.st, self.model), q)
            dt += self.spec.draft_s(b, kv) if self.spec else 0.0
            self.prefill_steps += 1
            self.prefill_busy_s += dt
            self.since = 0
        else:
            dt = float(self.spec.step_s(b, kv) if self.spec else self.model.decode_step_s(b, kv))
            self.decode_busy_s += dt
            self.admit.decoded(1)
            self.since = (self.since + 1) % self.multi
        return dt, seqs, b < ids.size

    def _account(self, seqs: int, dt: float, engine: float, wall: float) -> None:
        """A step of ``seqs`` sequences, ``dt`` on the GPU, ``engine`` with the host, ``wall``
        with the front end: the clock and the counts."""
        self.host_wait_s += engine - dt
        self.frontend_wait_s += wall - engine
        self.t, self.wall = self.t + wall, wall
        self.steps += 1
        self.seq_steps += seqs

    def _retire(self, run: np.ndarray) -> None:
        """The sequences of ``run`` (running ones, in admission order: the only ones whose
        tokens grew) that have all their tokens leave, their blocks freed."""
        self._leave(run[self.past[run] >= 0])

    def _leave(self, ended: np.ndarray) -> None:
        """The sequences of ``ended`` (running ones, in admission order) that have all their
        tokens leave, their blocks freed; none: nothing to do."""
        if not ended.size:
            return
        self.free += sum(((self.computed[ended] + (self.bs - 1)) // self.bs).tolist())
        t = self.t + (-self.since % self.multi) * self.wall     # at the run's end
        self.last[ended] = t
        self.gaps.flush(ended, t)
        self.finished += ended.size
        sent = min(ended.size, len(self.arr) - self.sent)   # their clients send the next ones
        self.arr[self.sent:self.sent + sent] = t
        self.sent += sent
        gone = set(ended.tolist())
        self.running = [r for r in self.running if r not in gone]
        self._ids = None


def serve(model, topology="dgx-h100", *, layout: ServingLayout | None = None,
          settings: ServeSettings | None = None, **given) -> ServePrediction:
    """Serve ``settings.requests`` requests with an engine loop (module docstring).

    ``layout``: a :class:`~tpsim.spec.serving.ServingLayout` (tp, pp, ep, dtype, kv_dtype,
    allreduce, eager, memory_headroom; prompt and gen as the lengths' means; batch unused);
    ``settings``: a :class:`~tpsim.spec.serve.ServeSettings` (rate, requests, seed,
    distributions and the engine's knobs); either or both as keywords instead. ``nccl`` (the
    layout's): the NCCL release priced (:func:`~tpsim.cluster.nccl.topology_of`)."""
    lay, st = split_settings(layout, settings, given, drafts=True)
    m = model if isinstance(model, ModelConfig) else load_model(model)
    topo = topology_of(topology, lay.nccl)
    reqs = draw_requests(st.requests, st.rate, st.seed, lay.prompt, lay.gen, st.prompt_dist,
                         st.gen_dist)
    eng, sm = engine_parts(m, topo, lay, st, int((reqs.prompt + reqs.gen).max()))
    loop = EngineLoop(reqs, st, eng.num_gpu_blocks, sm, spec=speculation(sm, topo, lay, st.seed))
    loop.run()
    reqs = dataclasses.replace(reqs, arrival_s=loop.arr)    # a closed loop's sending times
    return summarize(m, topo, lay, st, reqs, eng, loop, sm)


def engine_parts(m: ModelConfig, topo: Topology, lay: ServingLayout, st: ServeSettings,
                 longest: int, sm: StepModel | None = None) -> tuple[EngineConfig, StepModel]:
    """The engine's KV cache (:func:`kv_cache_blocks`) and step-time tables for sequences of
    at most ``longest`` tokens (``sm``: tables already built for this model, shared where
    exact: :meth:`StepModel.like`); a ConfigError
    where the split or the longest sequence does not fit."""
    _check(m, topo, dataclasses.replace(lay, batch=lay.pp * lay.ep))   # the engine's batch
    eng = kv_cache_blocks(m, topo, lay, st)
    if eng.num_gpu_blocks == 0:           # the weights and activations leave no cache
        raise ConfigError("--tp", "", f"a split whose {eng.weights_bytes / 2**30:.1f} GiB of "
                          f"{m.name}'s weights per GPU leave room for a KV cache on "
                          f"{topo.device.name} (more --tp or --pp, or --dtype fp8)", lay.tp)
    if -(-(longest - 1) // st.block_size) > eng.num_gpu_blocks // lay.ep:
        raise ConfigError("--prompt", "", f"prompt + gen within the KV cache's "
                          f"{eng.kv_cache_tokens} tokens", longest)
    srv = _Server(m, topo, lay.tp, lay.pp, lay.dtype, lay.activation_dtype, lay.cache_dtype,
                  lay.allreduce, lay.eager, lay.ep, lay.decode_attention)
    args = (st.max_num_batched_tokens, st.max_num_seqs, longest,
            *((0, 0) if lay.eager else (st.cuda_graph_align, st.cuda_graph_max_bs)))
    return eng, (sm and sm.like(srv, *args)) or StepModel(srv, *args)


def summarize(m, topo, lay, st, reqs, eng, loop, sm) -> ServePrediction:
    """The run in numbers: throughput = tokens (requests) / duration, duration = the last
    token - the first arrival; TTFT, TPOT and e2e per request and the ITL per streamed chunk
    (:class:`Latency`, :mod:`tpsim.serving.gaps`) as means and percentiles
    (:meth:`Percentiles.of`)."""
    ttft, tpot, e2e = latencies(loop, reqs)
    duration = float(loop.last.max() - reqs.arrival_s.min())
    out_tokens, in_tokens = int(reqs.gen.sum()), int(reqs.prompt.sum())
    inputs = ServeInputs(m.name, topo.name, topo.device.name, lay.tp, lay.pp, lay.ep,
                         lay.dtype, lay.cache_dtype, lay.allreduce, not lay.eager, st.rate,
                         st.requests, st.seed, lay.prompt, lay.gen, st.prompt_dist,
                         st.gen_dist, in_tokens, out_tokens, st.users, st.eager_prefill,
                         st.admission, **spec_inputs(lay),
                         decode_attention=lay.decode_attention,
                         nccl=release_of(lay.nccl))
    thr = Throughput(out_tokens / duration, in_tokens / duration, st.requests / duration, duration)
    lat = Latency(Percentiles.of(ttft), Percentiles.of(tpot), Percentiles.of(e2e),
                  loop.gaps.percentiles())
    sch = Scheduler(loop.steps, loop.prefill_steps, loop.preemptions,
                    loop.seq_steps / max(loop.steps, 1), sm.prices, loop.host_wait_s,
                    loop.frontend_wait_s)
    energy, cost = run_energy(topo, lay.tp * lay.pp * lay.ep, duration, loop.prefill_busy_s,
                              loop.decode_busy_s, out_tokens, st.usd_per_gpu_hour)
    return ServePrediction(inputs, eng, thr, lat, sch, ttft, e2e, np.array(loop.done), energy,
                           cost)


__all__ = ["serve", "kv_cache_blocks", "engine_parts", "summarize", "latencies", "EngineLoop",
           "ServeSettings"]
