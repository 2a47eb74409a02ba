"""Disaggregated serving for :func:`tpsim.serving.serve_search.serve_search`: P GPUs of
prefill instances beside D = gpus - P GPUs of decode instances (DistServe, Zhong et al., OSDI
2024; Splitwise, Patel et al., ISCA 2024; vLLM's and SGLang's prefill/decode disaggregation).

A prefill instance of tp_p x pp_p x ep_p GPUs runs each prompt to its first token and sends
its KV cache (:func:`tpsim.serving.pools.kv_transfer_s`) to a decode instance of tp_d x pp_d x
ep_d GPUs, which admits it with the prompt cached and generates the rest; each pool's
instances take any shape of :func:`pool_shapes` (pipeline stages, or expert-parallel
attention replicas for a mixture-of-experts model, as in the engine). Each pool is searched alone for its capacity
(:func:`tpsim.serving.pools.capacity`): the prefill instance against the TTFT target (its TTFT
+ the transfer), the decode instance against the TPOT target (from the cache's arrival: its
queue and its steps). A split (shape_p, P, shape_d, D, max_num_seqs) serves
min(P/|shape_p| x the prefill rate, D/|shape_d| x the decode rate) requests/s; the best splits are rerun
at that rate, each pool at its share, and kept where both meet their targets there.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from .pools import kv_pair, kv_transfer_s
from .serve_tally import instance_reason, result_key


def pool_tps(s) -> list[int]:
    """TP degrees of one pool's instances: within a node and fewer than the GPUs, taken by the
    model (ModelConfig.check_tp)."""
    out = []
    for tp in range(1, min(s.gpus - 1, s.topo.devices_per_node) + 1):
        try:
            s.m.check_tp(tp, serving=True)
        except ConfigError:
            continue
        out.append(tp)
    return out


def pool_shapes(s) -> list[tuple[int, int, int]]:
    """(tp, pp, ep) of one pool's instances, fewer GPUs than the deployment's: tp from
    :func:`pool_tps`; pp a power of two at most the model's layers, at ep 1; a mixture-of-
    experts model also ep > 1 dividing its experts, at pp 1 (as the aggregated replicas)."""
    out = []
    for tp in pool_tps(s):
        pp = 1
        while tp * pp < s.gpus and pp <= s.m.layers:
            out.append((tp, pp, 1))
            pp *= 2
        out += [(tp, 1, ep) for ep in range(2, (s.gpus - 1) // tp + 1)
                if s.m.moe and s.m.experts % ep == 0]
    return out


def _pools(s, seqs) -> tuple[dict, dict]:
    """(prefill runs at capacity by (shape, P), decode runs by (shape, max_num_seqs)): a
    prefill instance is searched once per shape and set of levels its KV cache crosses."""
    pre, dec, by_levels = {}, {}, {}
    for tp, pp, ep in pool_shapes(s):
        size = tp * pp * ep
        for p_gpus in range(size, s.gpus, size):
            pair = kv_pair(p_gpus, s.gpus)
            levels = tuple(sp.level.name for sp in s.topo.place(pair).spans)
            if (tp, pp, ep, levels) not in by_levels:
                by_levels[tp, pp, ep, levels] = s.best("prefill", tp, pp, s.st.max_num_seqs,
                                                       pair, ep=ep)[:2]
            pre[(tp, pp, ep), p_gpus] = by_levels[tp, pp, ep, levels]
        for n in seqs:
            dec[(tp, pp, ep), n] = s.best("decode", tp, pp, n, ep=ep)[:2]
    return pre, dec


def _plans(s, seqs) -> list[tuple]:
    """(its rate, prefill instance, decode instance, P / |shape_p|, D / |shape_d|,
    max_num_seqs) of each split whose pools both meet their targets; every split whose decode
    GPUs hold whole instances counted as a deployment, the rest dropped for their pool's
    reason (the prefill pool's first)."""
    pre, dec = _pools(s, seqs)
    plans = []
    for (shape_p, p_gpus), (pi, pp_) in pre.items():
        for (shape_d, n), (di, dp_) in dec.items():
            d_gpus, size_d = s.gpus - p_gpus, shape_d[0] * shape_d[1] * shape_d[2]
            if d_gpus % size_d:
                continue
            s.deployments += 1
            why = instance_reason(pi, pp_) or instance_reason(di, dp_)
            if why:
                s.drop(why)
                continue
            n_p, n_d = p_gpus // pi.gpus, d_gpus // size_d
            plans.append((min(n_p * pp_.rate, n_d * dp_.rate), pi, di, n_p, n_d, n))
    return plans


def disaggregated(s, seqs, rate: float | None, top: int) -> list:
    """The verified disaggregated candidates, at most ``top`` (module docstring)."""
    plans = sorted(_plans(s, seqs), key=lambda x: -x[0])
    out = []
    for i, (lam, pi, di, n_p, n_d, n) in enumerate(plans):
        if len({result_key(c) for c in out}) == top or (rate is not None and lam < rate):
            left = [x[0] for x in plans[i:]]       # each its own row or a twin: not priced
            s.drop("rate", sum(rate is not None and x < rate for x in left))
            s.drop("top", sum(rate is None or x >= rate for x in left))
            break
        a, b = pi.run(lam / n_p), di.run(lam / n_d)
        s.runs += 2
        if a.ttft_s.p99 > s.ttft or b.tpot_s.p99 > s.tpot:
            s.drop("rerun")
            continue
        moved = kv_transfer_s(s.m, s.topo, pi.lay, pi.requests(lam / n_p).prompt, pi.pair)
        out.append(s.candidate(
            lam, a, b, mode="disaggregated", tp=di.lay.tp, pp=di.lay.pp, ep=di.lay.ep,
            replicas=n_d, max_num_seqs=n, prefill_tp=pi.lay.tp, prefill_pp=pi.lay.pp,
            prefill_ep=pi.lay.ep, prefill_replicas=n_p, prefill_gpus=n_p * pi.gpus,
            decode_gpus=n_d * di.gpus, kv_transfer_s=float(moved.mean())))
    return out


__all__ = ["disaggregated", "pool_tps", "pool_shapes"]
