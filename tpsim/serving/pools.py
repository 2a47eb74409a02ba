"""One engine instance of a serving deployment, run at a request rate, and the highest rate at
which it meets its latency targets (:func:`capacity`): the pieces of
:func:`tpsim.serving.serve_search.serve_search`.

An instance serves everything (``kind`` "both": aggregated serving), only prompts (``prefill``:
each request's first token, after which its KV cache leaves for a decode instance), or only
the generation (``decode``: requests arrive with their prompt cached and their first token
made). Requests reach one of n alike instances at random, so each sees Poisson arrivals at the
deployment's rate / n (the thinning of a Poisson process). Each run is tpsim's own engine loop
(:class:`~tpsim.serving.engine.EngineLoop`) over ``settings.requests`` requests from
``settings.seed``: the same requests at every rate, since the lengths are drawn after the gaps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..cluster.topology import Topology
from ..cost.collectives import send_recv_time
from ..spec.model import ModelConfig
from ..spec.parallel import Group
from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from .arrivals import Requests, draw_requests
from .energy import run_energy
from .engine import EngineLoop, engine_parts, latencies
from .memory import kv_bytes_per_token
from .serve_result import Percentiles
from .step_model import StepModel

KINDS = ("both", "prefill", "decode")
SPAN = 32          # the capacity search starts at the offline rate / SPAN
HALVINGS = 5       # bisections of the rate's logarithm after that: within 2^(5/32) ~ 11%


@dataclass(frozen=True)
class Point:
    """One run of an instance at ``rate`` requests/s: TTFT (a prefill instance's includes the
    KV transfer) and TPOT percentiles, s; ``j``: its GPUs' energy over the run at the
    facility (:func:`~tpsim.serving.energy.run_energy`, None without the device's tdp_W);
    ``output_tokens``: the tokens its requests generate in all; ``requests_per_s``: requests
    / duration (the offline run's is the instance's most)."""
    rate: float
    ttft_s: Percentiles
    tpot_s: Percentiles
    j: float | None
    output_tokens: int
    requests_per_s: float


@dataclass
class Instance:
    """An engine instance: ``gpus`` = tp x pp x ep GPUs, its KV cache and step-time tables."""
    m: ModelConfig
    topo: Topology
    lay: ServingLayout
    st: ServeSettings
    kind: str
    sm: StepModel
    blocks: int
    pair: Group | None = None    # a prefill instance: the ranks its KV cache moves between

    @property
    def gpus(self) -> int:
        return self.lay.tp * self.lay.pp * self.lay.ep

    def requests(self, rate: float) -> Requests:
        st, lay = self.st, self.lay
        return draw_requests(st.requests, rate, st.seed, lay.prompt, lay.gen, st.prompt_dist,
                             st.gen_dist)

    def run(self, rate: float) -> Point:
        """The instance at ``rate`` (module docstring)."""
        reqs = self.requests(rate)
        fed = Requests(reqs.arrival_s, reqs.prompt, np.ones_like(reqs.gen)) \
            if self.kind == "prefill" else reqs
        loop = EngineLoop(fed, self.st, self.blocks, self.sm, cached=self.kind == "decode")
        loop.run()
        ttft, tpot, _ = latencies(loop, reqs, reqs.arrival_s if self.kind == "decode" else None)
        if self.kind == "prefill":
            ttft = ttft + kv_transfer_s(self.m, self.topo, self.lay, reqs.prompt,
                                        self.pair)
        duration = float(loop.last.max() - reqs.arrival_s.min())
        out = int(reqs.gen.sum())
        energy, _ = run_energy(self.topo, self.gpus, duration, loop.prefill_busy_s,
                               loop.decode_busy_s, out, None)
        return Point(rate, Percentiles.of(ttft), Percentiles.of(tpot), energy.j, out,
                     len(reqs.gen) / duration)


def instance(m, topo, lay: ServingLayout, st: ServeSettings, kind: str, longest: int,
             tables: dict, pair: Group | None = None) -> Instance:
    """An :class:`Instance`; ``tables``: step-time tables by (tp, pp, ep, max_num_seqs) (the
    decode table and the largest CUDA graph stop at max_num_seqs), those of another pp or
    max_num_seqs at the same tp and ep shared where exact (:meth:`StepModel.like`), built for
    ``longest`` tokens (a ConfigError where the split or the longest sequence does not
    fit)."""
    key = (lay.tp, lay.pp, lay.ep, st.max_num_seqs)
    kin = tables.get(key) or next((v for k, v in sorted(
        tables.items(), key=lambda kv: kv[0][1] != lay.pp) if (k[0], k[2]) == (key[0], key[2])),
        None)
    eng, sm = engine_parts(m, topo, lay, st, longest, kin)
    tables[key] = sm
    return Instance(m, topo, lay, st, kind, sm, eng.num_gpu_blocks, pair)


def kv_transfer_s(m, topo, lay: ServingLayout, prompts: np.ndarray, pair) -> np.ndarray:
    """Each request's KV cache from its prefill instance to a decode instance, s: every GPU
    of the prefill instance sends its shard, prompt x kv_bytes_per_token(tp, pp) bytes (its
    stage's layers, its heads), at once to its own peer: one :func:`~tpsim.cost.collectives.send_recv_time` over the levels the
    pair ``pair`` (a :class:`~tpsim.spec.parallel.Group` of two ranks) spans: NVLink inside
    a node, the NIC between nodes."""
    per_token = kv_bytes_per_token(m, lay.tp, lay.pp, lay.cache_dtype)
    place = topo.place(pair)
    sizes, back = np.unique(prompts, return_inverse=True)
    times = np.array([send_recv_time(float(s) * per_token, place, topo).time_s for s in sizes])
    return times[back]


def kv_pair(prefill_gpus: int, gpus: int) -> Group:
    """Prefill GPU 0 and its peer, decode GPU 0 (the deployment's rank ``prefill_gpus``): the
    prefill pool on the first ranks, the decode pool on the rest."""
    return Group("kv", 2, prefill_gpus, 0, gpus)


def capacity(inst: Instance, ok, cut=None) -> tuple[Point | None, int, str | None]:
    """(the run at the highest rate at which ``ok(point)`` holds, runs made, None); None where
    it fails even at the offline rate / SPAN. The offline run's requests/s bounds the rate (no
    queue drains faster: the rate found is below it); from rate/SPAN, HALVINGS bisections of
    log(rate). ``cut(offline rate)``: why no rate below it can matter to the caller, or None;
    where it says why, the bisection is skipped: (the run at rate/SPAN, 2, why)."""
    top = inst.run(math.inf).requests_per_s
    lo, hi = math.log(top / SPAN), math.log(top)
    best = inst.run(math.exp(lo))
    if not ok(best):
        return None, 2, None
    why = cut(top) if cut is not None else None
    if why:
        return best, 2, why
    runs = 2
    for _ in range(HALVINGS):
        mid = (lo + hi) / 2
        p = inst.run(math.exp(mid))
        runs += 1
        if ok(p):
            lo, best = mid, p
        else:
            hi = mid
    return best, runs, None


__all__ = ["Instance", "Point", "instance", "capacity", "kv_transfer_s", "kv_pair", "KINDS"]
