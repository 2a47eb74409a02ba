"""Disaggregated serving for :func:`tpsim.serving.serve_search.serve_search`: P GPUs of
prefill instances beside D = gpus - P GPUs of decode instances (DistServe, Zhong et al., OSDI
2024; Splitwise, Patel et al., ISCA 2024; vLLM's and SGLang's prefill/decode disaggregation).

A prefill instance of tp_p GPUs runs each prompt to its first token and sends its KV cache
(:func:`tpsim.serving.pools.kv_transfer_s`) to a decode instance of tp_d GPUs, which admits it
with the prompt cached and generates the rest. Each pool is searched alone for its capacity
(:func:`tpsim.serving.pools.capacity`): the prefill instance against the TTFT target (its TTFT
+ the transfer), the decode instance against the TPOT target (from the cache's arrival: its
queue and its steps). A split (tp_p, P, tp_d, D, max_num_seqs) serves
min(P/tp_p x the prefill rate, D/tp_d x the decode rate) requests/s; the best splits are rerun
at that rate, each pool at its share, and kept where both meet their targets there.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from .pools import kv_pair, kv_transfer_s


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


def _pools(s, seqs) -> tuple[dict, dict]:
    """(prefill runs at capacity by (tp_p, P), decode runs by (tp_d, max_num_seqs)): a
    prefill instance is searched once per tp_p and set of levels its KV cache crosses."""
    tps, pre, dec, by_levels = pool_tps(s), {}, {}, {}
    for tp in tps:
        for p_gpus in range(tp, s.gpus, tp):
            pair = kv_pair(p_gpus, s.gpus)
            levels = tuple(sp.level.name for sp in s.topo.place(pair).spans)
            if (tp, levels) not in by_levels:
                by_levels[tp, levels] = s.best("prefill", tp, 1, s.st.max_num_seqs, pair)
            pre[tp, p_gpus] = by_levels[tp, levels]
        for n in seqs:
            dec[tp, n] = s.best("decode", tp, 1, n)
    return pre, dec


def disaggregated(s, seqs, rate: float | None, top: int) -> list:
    """The verified disaggregated candidates, at most ``top`` (module docstring)."""
    pre, dec = _pools(s, seqs)
    plans = []
    for (tp_p, p_gpus), (pi, pp_) in pre.items():
        for (tp_d, n), (di, dp_) in dec.items():
            d_gpus = s.gpus - p_gpus
            if pp_ is None or dp_ is None or d_gpus % tp_d:
                continue
            n_p, n_d = p_gpus // tp_p, d_gpus // tp_d
            plans.append((min(n_p * pp_.rate, n_d * dp_.rate), pi, di, n_p, n_d, n))
    plans.sort(key=lambda x: -x[0])
    out = []
    for lam, pi, di, n_p, n_d, n in plans:
        if len(out) == top or (rate is not None and lam < rate):
            break
        a, b = pi.run(lam / n_p), di.run(lam / n_d)
        s.runs += 2
        if a.ttft_s.p99 > s.ttft or b.tpot_s.p99 > s.tpot:
            s.drop("rerun")
            continue
        moved = kv_transfer_s(s.m, s.topo, pi.lay, pi.requests(lam / n_p).prompt, pi.pair)
        out.append(s.candidate(
            lam, a, b, mode="disaggregated", tp=di.lay.tp, pp=1, ep=1, replicas=n_d, max_num_seqs=n,
            prefill_tp=pi.lay.tp, prefill_replicas=n_p, prefill_gpus=n_p * pi.lay.tp,
            decode_gpus=n_d * di.lay.tp, kv_transfer_s=float(moved.mean())))
    return out


__all__ = ["disaggregated", "pool_tps"]
