"""A closed loop measured as a load generator measures it: in its steady state.

genai-perf (the client behind NVIDIA NIM's published LLM benchmarks) drives a server with
``--concurrency C`` through perf_analyzer: C clients, each sending its next request when its
last one ends, measured over windows of ``--measurement-interval`` ms repeated until three in a
row agree, so the ramp (the C first requests sent at once) and the drain (fewer than C users
left) fall outside the numbers it reports (perf_analyzer's concurrency mode and measurement
windows: triton-inference-server/perf_analyzer, docs/measurements_metrics.md: a window
counts the requests completed in it; stabilization passes before the reported ones). Two
pieces:

* **the window** (:func:`steady_window`): t0 = the end of the last of the C first requests
  (every client has finished one: the warm-up), t1 = the last sending (after it a client
  that finishes sends nothing: the drain). The requests measured are those sent at or after
  t0 and ended by t1; the throughput is the output tokens of the requests that end in
  (t0, t1] over t1 - t0;
* **the users' phases** (:func:`staggered_sends`): in a steady closed loop with no common
  start the C clients' sendings are spread over a cycle, one request's time through the
  engine: client i sends first at i / C x cycle. The cycle is estimated from the engine's
  decode step at C sequences (:func:`decode_cycle_s`), not from any measurement.

TTFT is counted, as genai-perf counts it, from the request's sending to its first token.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..base.errors import ConfigError
from ..cluster.nccl import topology_of
from ..spec.model import ModelConfig, load_model
from ..spec.serve import split_settings
from .arrivals import draw_requests
from .frontend import frontend_latency_s, frontend_s, paced_wall_s
from .engine import EngineLoop, engine_parts, summarize
from .host import host_step_s, step_wall_s
from .serve_result import Percentiles


@dataclass(frozen=True)
class SteadyState:
    """A closed loop's steady-state numbers: ``t0_s``, ``t1_s`` the window, ``requests`` the
    requests measured, ``output_tokens_per_s`` over the window, ``ttft_s`` and ``tpot_s``
    (:class:`Percentiles`) of the requests measured."""
    t0_s: float
    t1_s: float
    requests: int
    output_tokens_per_s: float
    ttft_s: Percentiles
    tpot_s: Percentiles


def steady_window(sent, first, last, gen, users: int) -> SteadyState:
    """The measurement window of a closed loop of ``users`` clients (module docstring), from
    each request's sending, first token and last token times (s) and generated tokens:
    t0 = max(last[:users]), t1 = max(sent); measured: sent >= t0 and last <= t1; throughput
    = sum(gen where t0 < last <= t1) / (t1 - t0); TTFT = first - sent; TPOT = (last - first) /
    (gen - 1) over those with gen > 1."""
    sent, first, last = (np.asarray(a, float) for a in (sent, first, last))
    gen = np.asarray(gen)
    t0, t1 = float(last[:users].max()), float(sent.max())
    if t1 <= t0:
        raise ConfigError("--requests", "", "enough requests for a second round of every "
                          "user (a steady window after the first)", len(sent))
    m = (sent >= t0) & (last <= t1)
    ended = (last > t0) & (last <= t1)
    multi = m & (gen > 1)
    tpot = (last[multi] - first[multi]) / (gen[multi] - 1)
    return SteadyState(t0, t1, int(m.sum()), float(gen[ended].sum() / (t1 - t0)),
                       Percentiles.of(first[m] - sent[m]), Percentiles.of(tpot))


def little_ttft_s(users: int, gen: int, tokens_per_s: float, tpot_s: float) -> float:
    """A steady closed loop's mean TTFT from its throughput and TPOT, s, by Little's law
    (users = request rate x time per request; the clients think for no time between
    requests): TTFT = users x gen / tokens_per_s - (gen - 1) x tpot_s. Its sensitivity to the
    throughput, d ln TTFT / d ln tokens_per_s = -users x gen / (tokens_per_s x TTFT), is
    large under load: a small error in the throughput is a large one in the TTFT."""
    return users * gen / tokens_per_s - (gen - 1) * tpot_s


def decode_cycle_s(st, model, users: int, prompt: int, gen: int) -> float:
    """One request's time through the engine at ``users`` sequences, s: frontend_latency +
    gen x the decode step at b = users holding users x (prompt + gen / 2) tokens, with the
    host's work and the front end's pace (:func:`tpsim.serving.host.step_wall_s`,
    :func:`tpsim.serving.frontend.paced_wall_s`). Prefills are left out: it spaces the
    clients, and the window measures whatever the engine then does."""
    gpu = float(model.decode_step_s(users, users * (prompt + gen / 2)))
    engine = float(step_wall_s(gpu, host_step_s(st, users), st.host_overlap))
    step = float(paced_wall_s(engine, frontend_s(st, 0, users)))
    return frontend_latency_s(st) + gen * step


def staggered_sends(users: int, cycle_s: float) -> np.ndarray:
    """The C clients' first sendings spread over one cycle: i / C x cycle_s, i = 0..C-1."""
    return np.arange(users) / users * cycle_s


def serve_steady(model, topology="dgx-h100", *, stagger: bool = True, **given):
    """``tpsim.serve`` of a closed loop (``users`` given) measured in its steady state:
    (:class:`ServePrediction` of the whole run, :class:`SteadyState` of its window). With
    ``stagger`` the clients' first sendings are :func:`staggered_sends` over
    :func:`decode_cycle_s`; without, all at t = 0 as ``tpsim serve --users`` sends them."""
    lay, st = split_settings(None, None, given)
    m = model if isinstance(model, ModelConfig) else load_model(model)
    topo = topology_of(topology, lay.nccl)
    reqs = draw_requests(st.requests, st.rate, st.seed, lay.prompt, lay.gen, st.prompt_dist,
                         st.gen_dist)
    eng, sm = engine_parts(m, topo, lay, st, int((reqs.prompt + reqs.gen).max()))
    loop = EngineLoop(reqs, st, eng.num_gpu_blocks, sm)
    c = min(st.users, len(loop.arr))
    if stagger:
        loop.arr[:c] = staggered_sends(c, decode_cycle_s(st, sm, c, lay.prompt, lay.gen))
        loop.t = float(loop.arr[0])
    loop.run()
    reqs = dataclasses.replace(reqs, arrival_s=loop.arr)
    return (summarize(m, topo, lay, st, reqs, eng, loop, sm),
            steady_window(loop.arr, loop.first, loop.last, reqs.gen, c))


__all__ = ["serve_steady", "little_ttft_s", "SteadyState", "steady_window", "decode_cycle_s", "staggered_sends"]
