"""The serving layouts of ``gpus`` GPUs that meet latency targets, best first:
``tpsim.serve_search`` -> :class:`ServeSearchResult`.

The space, for a model on a topology:

* **aggregated**: replicas of tp x pp x ep GPUs (tp within a node and dividing the model's
  heads, pp at most its layers; a mixture-of-experts model also ep > 1 at pp = 1, ep dividing
  its experts: ep attention replicas sharing the experts, one engine,
  :mod:`tpsim.serving.engine`), replicas = gpus / (tp pp ep), each an engine serving prefill
  and decode (:func:`tpsim.serving.engine.serve`'s loop), for each ``max_num_seqs`` given;
* **disaggregated** (DistServe, Zhong et al. OSDI 2024; vLLM's and SGLang's PD disaggregation):
  P GPUs of prefill instances (tp_p x pp_p x ep_p each) and D = gpus - P of decode instances
  (tp_d x pp_d x ep_d each, for each ``max_num_seqs``; :func:`tpsim.serving.disagg.pool_shapes`); a request's prompt is prefilled on one, its KV cache sent to the
  other (:func:`tpsim.serving.pools.kv_transfer_s`, priced on the levels the two pools' ranks
  span), and its tokens generated there. Its TTFT is the prefill pool's plus the transfer, its
  TPOT the decode pool's.

Each instance's **capacity** is the highest request rate at which it meets its targets
(:func:`tpsim.serving.pools.capacity`: TTFT p99 <= ``ttft_p99_s`` and TPOT p99 <=
``tpot_p99_s``; a prefill instance the first, a decode instance the second), found by
bisection on its engine run; a deployment serves n instances x that rate, a disaggregated one
the lesser of its two pools' rates (rerun at that rate to report its percentiles; one that
misses there is dropped). A candidate's **output tokens/s** = its rate x the mean generated
tokens of the requests (what it serves in a steady state); ``output_tokens_per_s_per_gpu``
divides by ``gpus``; candidates are ranked by it. ``rate`` given: a candidate must serve at
least that many requests/s. Energy per output token: each pool's run's energy
(:func:`tpsim.serving.energy.run_energy`) over its output tokens, the pools' summed; cost per
million output tokens = :func:`tpsim.cluster.power.gpu_hours_usd` of the gpus for one second
/ output tokens/s x 1e6.

Work is bounded: one set of step-time tables per (tp, pp, ep, max_num_seqs) (shared where
exact, :meth:`~tpsim.serving.step_model.StepModel.like`), at most 7 engine runs of
``settings.requests`` requests per instance configuration (not per split; a prefill instance
once per tp and set of levels its KV cache crosses), two reruns per disaggregated candidate
shown. The disaggregated splits are searched first; an aggregated replica that provably
cannot be shown (:func:`_cut`: a bound on what it serves, its offline rate) is dropped after
the two runs that show it meets its targets. Modest request counts keep it to seconds; few
requests understate a queue's growth near capacity.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..base.errors import ConfigError
from ..cluster.power import gpu_hours_usd
from ..cluster.nccl import Topology, release_of, topology_of
from ..spec.model import ModelConfig, load_model
from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from ..spec.settings import given_or_made
from .arrivals import draw_requests
from .pools import Point, capacity, instance
from .serve_tally import REASONS, folded, instance_reason, result_key

SEQS = (64, 256)            # max_num_seqs tried by default (vLLM's default is 256)
TOP = 10


@dataclass(frozen=True)
class ServeCandidate:
    """One deployment at its operating point (module docstring). ``tp``, ``pp``, ``ep``,
    ``replicas``, ``max_num_seqs``: the aggregated replicas', or the decode instances'; the
    ``prefill_*`` fields (the prefill instances' split and count), ``decode_gpus`` and ``kv_transfer_s`` (mean per request) are None
    when aggregated. ``requests_per_s``: the most the deployment serves within the targets;
    the percentiles are its runs' there."""
    mode: str
    tp: int
    pp: int
    ep: int
    replicas: int
    max_num_seqs: int
    prefill_tp: int | None
    prefill_pp: int | None
    prefill_ep: int | None
    prefill_replicas: int | None
    prefill_gpus: int | None
    decode_gpus: int | None
    kv_transfer_s: float | None
    requests_per_s: float
    ttft_s_p50: float
    ttft_s_p99: float
    tpot_s_p50: float
    tpot_s_p99: float
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    j_per_output_token: float | None
    usd_per_million_output_tokens: float | None
    max_num_seqs_alike: tuple[int, ...] = ()   # the max_num_seqs giving these same results


@dataclass(frozen=True)
class ServeSearchResult:
    """What :func:`serve_search` returns: the question, the candidates best first, and how
    much was tried (``configurations``: instance configurations priced, ``runs``: engine
    runs; ``deployments``: the deployments considered, each shown, a candidate's twin
    (``max_num_seqs_alike``) or in ``dropped``, reason -> deployments dropped for it:
    :mod:`tpsim.serving.serve_tally`)."""
    model: str
    topology: str
    device: str
    gpus: int
    ttft_p99_s: float
    tpot_p99_s: float
    rate: float | None
    prompt: int
    gen: int
    requests: int
    candidates: tuple[ServeCandidate, ...]
    configurations: int
    runs: int
    dropped: dict
    deployments: int = 0
    nccl: str = "topology"                # the NCCL release priced (tpsim.cluster.nccl)




def splits(m: ModelConfig, topo: Topology, gpus: int) -> list[tuple[int, int, int]]:
    """(tp, pp, ep) of a replica: tp a divisor of gpus within a node that the model takes
    (ModelConfig.check_tp, as served), pp a divisor of gpus / tp at most the model's layers
    at ep = 1; a mixture-of-experts model also ep > 1 dividing gpus / tp and its experts, at
    pp = 1."""
    out = []
    for tp in (d for d in range(1, gpus + 1) if gpus % d == 0 and d <= topo.devices_per_node):
        try:
            m.check_tp(tp, serving=True)
        except ConfigError:
            continue
        rest = gpus // tp
        out += [(tp, pp, 1) for pp in range(1, rest + 1) if rest % pp == 0 and pp <= m.layers]
        out += [(tp, 1, ep) for ep in range(2, rest + 1)
                if m.moe and rest % ep == 0 and m.experts % ep == 0]
    return out


class _Search:
    """The state of one search: settings, tables, counters (module docstring)."""

    def __init__(self, m, topo, gpus, ttft, tpot, lay, st):
        self.m, self.topo, self.gpus, self.ttft, self.tpot = m, topo, gpus, ttft, tpot
        self.lay, self.st, self.tables = lay, st, {}
        self.runs = self.configurations = self.deployments = 0
        self.dropped: dict[str, int] = {}
        draws = [draw_requests(st.requests, r, st.seed, lay.prompt, lay.gen, st.prompt_dist,
                               st.gen_dist) for r in (float("inf"), 1.0)]   # lengths: 2 draws
        self.longest = max(int((r.prompt + r.gen).max()) for r in draws)
        self.mean_gen = float(draws[1].gen.mean())

    def drop(self, why: str, n: int = 1) -> None:   # n deployments dropped for ``why``
        self.dropped[why] = self.dropped.get(why, 0) + n

    def best(self, kind, tp, pp, seqs, pair=None, ep=1, cut=None) -> tuple:
        """(the instance, its run at capacity, None) for one configuration; (None, None, None)
        where it does not fit, (the instance, None, None) where it never meets its targets;
        ``cut``: :func:`~tpsim.serving.pools.capacity`'s (its third item then says why the
        capacity was not searched)."""
        self.configurations += 1
        lay = replace(self.lay, tp=tp, pp=pp, ep=ep)
        st = replace(self.st, max_num_seqs=seqs)
        try:
            inst = instance(self.m, self.topo, lay, st, kind, self.longest, self.tables, pair)
        except ConfigError:
            return None, None, None
        ok = {"both": lambda p: p.ttft_s.p99 <= self.ttft and p.tpot_s.p99 <= self.tpot,
              "prefill": lambda p: p.ttft_s.p99 <= self.ttft,
              "decode": lambda p: p.tpot_s.p99 <= self.tpot}[kind]
        point, runs, why = capacity(inst, ok, cut)
        self.runs += runs
        return inst, point, why

    def candidate(self, rate, pre: Point | None, dec: Point, **layout) -> ServeCandidate:
        """The deployment serving ``rate`` requests/s: ``pre`` and ``dec`` the runs of a
        prefill and a decode instance (aggregated: ``pre`` None, ``dec`` the replica's)."""
        tokens_s = rate * self.mean_gen
        j = [p.j / p.output_tokens for p in (pre, dec) if p is not None and p.j is not None]
        usd = gpu_hours_usd(self.gpus, 1.0, self.st.usd_per_gpu_hour)
        first = dec if pre is None else pre
        return ServeCandidate(
            **layout, requests_per_s=rate, ttft_s_p50=first.ttft_s.p50, ttft_s_p99=first.ttft_s.p99,
            tpot_s_p50=dec.tpot_s.p50, tpot_s_p99=dec.tpot_s.p99, output_tokens_per_s=tokens_s,
            output_tokens_per_s_per_gpu=tokens_s / self.gpus,
            j_per_output_token=sum(j) if dec.j is not None else None,
            usd_per_million_output_tokens=None if usd is None else usd / tokens_s * 1e6)


def _aggregated(s: _Search, seqs, rate, top, found, prune) -> list[ServeCandidate]:
    """The aggregated candidates; with ``prune``, a replica whose deployment provably cannot
    be shown (:func:`_cut`, beside the candidates ``found`` and those made here) is counted
    as dropped without its capacity searched."""
    out = []
    for tp, pp, ep in splits(s.m, s.topo, s.gpus):
        reps = s.gpus // (tp * pp * ep)
        for n in seqs:
            floor = _floor(found + out, rate, top) if prune else None
            cut = (lambda most: _cut(s, rate, floor, most * reps)) if prune else None
            inst, p, why = s.best("both", tp, pp, n, ep=ep, cut=cut)
            s.deployments += 1
            if p is None or why:
                s.drop(why or instance_reason(inst, p))
            else:
                out.append(s.candidate(p.rate * reps, None, p, mode="aggregated", tp=tp, pp=pp,
                                       ep=ep, replicas=reps, max_num_seqs=n, prefill_tp=None,
                                       prefill_pp=None, prefill_ep=None,
                                       prefill_replicas=None, prefill_gpus=None,
                                       decode_gpus=None, kv_transfer_s=None))
    return out


def serve_search(model, topology="dgx-h100", *, gpus: int = 8, ttft_p99_s: float,
                 tpot_p99_s: float, rate: float | None = None,
                 layout: ServingLayout | None = None, settings: ServeSettings | None = None,
                 max_num_seqs=SEQS, disaggregated: bool = True, top: int = TOP,
                 prune: bool = True, nccl: str | None = None) -> ServeSearchResult:
    """The layouts of ``gpus`` GPUs meeting TTFT p99 <= ``ttft_p99_s`` and TPOT p99 <=
    ``tpot_p99_s`` (seconds), best first by output tokens/s per GPU (module docstring).
    ``layout``: the dtypes, lengths and engine switches (its tp, pp, ep and batch are the
    search's); ``settings``: the requests of each run and the engine's knobs (its rate and
    max_num_seqs are the search's); ``rate``: the requests/s every candidate must serve;
    ``prune``: skip the capacity search of replicas that provably cannot be shown
    (:func:`_cut`; False: every one searched, the same answer in more engine runs); ``nccl``:
    the NCCL release priced, ``layout``'s field as a keyword
    (:func:`~tpsim.cluster.nccl.topology_of`; default: the file's own values)."""
    m = model if isinstance(model, ModelConfig) else load_model(model)
    lay = given_or_made(ServingLayout, layout, {} if nccl is None else {"nccl": nccl},
                        "serve_search", "layout")
    topo, st = topology_of(topology, lay.nccl), settings or ServeSettings(requests=200)
    _check_args(topo, gpus, ttft_p99_s, tpot_p99_s, rate, max_num_seqs, top)
    if st.users is not None:
        raise ConfigError("--users", "", "none: each run's arrivals are the search's (Poisson "
                          "at the rate it tries)", st.users)
    s = _Search(m, topo, gpus, ttft_p99_s, tpot_p99_s, lay, st)
    pooled = []           # disaggregated first: their candidates bound the aggregated ones
    if disaggregated and gpus > 1:
        from .disagg import disaggregated as disagg
        pooled = disagg(s, max_num_seqs, rate, top)
    found = _aggregated(s, max_num_seqs, rate, top, pooled, prune) + pooled
    if rate is not None:
        kept = [c for c in found if c.requests_per_s >= rate * (1 - 1e-12)]
        s.drop("rate", len(found) - len(kept))
        found = kept
    found.sort(key=lambda c: -c.output_tokens_per_s_per_gpu)
    rows = folded(found)
    s.drop("top", sum(len(c.max_num_seqs_alike) for c in rows[top:]))
    return ServeSearchResult(m.name, topo.name, topo.device.name, gpus, ttft_p99_s, tpot_p99_s,
                             rate, lay.prompt, lay.gen, st.requests, tuple(rows[:top]),
                             s.configurations, s.runs,
                             {k: s.dropped[k] for k in REASONS if s.dropped.get(k)},
                             s.deployments, release_of(lay.nccl))


def _floor(found, rate, top) -> float | None:
    """The output tokens/s per GPU of the ``top``-th best row of ``found`` (twins one row)
    that serve ``rate``, or None while fewer rows: the final ``top``-th row's is at least
    this (candidates are only added)."""
    kept = [c for c in found if rate is None or c.requests_per_s >= rate * (1 - 1e-12)]
    rows = sorted({result_key(c): c.output_tokens_per_s_per_gpu for c in kept}.values(),
                  reverse=True)
    return rows[top - 1] if len(rows) >= top else None


def _cut(s: _Search, rate, floor, most: float) -> str | None:
    """Why an aggregated deployment serving less than ``most`` requests/s (its replicas'
    offline rate: a capacity is below it) is dropped whatever it serves, or None: 'rate'
    where ``most`` falls short of the ``rate`` asked; 'top' where, no rate asked, its tokens/s
    per GPU fall below ``floor`` (:func:`_floor`: it ranks below the shown rows, and is no
    twin of one). With a rate asked and ``most`` above it, either could apply: None."""
    if rate is not None:
        return "rate" if most < rate * (1 - 1e-12) else None
    return "top" if floor is not None and most * s.mean_gen / s.gpus < floor else None


def _check_args(topo, gpus, ttft, tpot, rate, seqs, top) -> None:
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 1 <= gpus <= topo.max_ranks:
        raise ConfigError("--gpus", "", f"an integer from 1 to the {topo.max_ranks} GPUs of "
                          f"{topo.name}", gpus)
    for flag, v in (("--ttft-p99", ttft), ("--tpot-p99", tpot), ("--rate", rate)):
        if v is not None and not (isinstance(v, (int, float)) and 0 < v < float("inf")):
            raise ConfigError(flag, "", "a positive number of seconds" if flag != "--rate"
                              else "a positive number of requests/s", v)
    if not seqs or any(not isinstance(n, int) or n < 1 for n in seqs):
        raise ConfigError("--max-num-seqs", "", "positive integers", seqs)
    if not isinstance(top, int) or top < 1:
        raise ConfigError("--top", "", "a positive integer", top)


__all__ = ["serve_search", "ServeCandidate", "ServeSearchResult", "splits", "REASONS", "SEQS"]
