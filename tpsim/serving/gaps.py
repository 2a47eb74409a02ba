"""The gaps between a request's streamed tokens as its client receives them, pooled over every
request: the inter-token latency (ITL) that ``sglang.bench_serving`` and vLLM's
``benchmark_serving.py`` report, where each streamed chunk after the first appends the time
since the one before (their ``itl`` lists), and the median is over all requests' gaps together.

A token reaches the client at the end of the engine step that made it (the step's wall time,
front end included, as the TTFT and e2e count it). With multi-step scheduling
(``num_scheduler_steps`` S > 1, vLLM's V0 engine) a run's S decode steps stream their tokens
together at the run's end, one chunk and one gap per run: SGLang's comparison with vLLM v0.6.0
at ``--num-scheduler-steps 10`` measures vLLM's median ITL at about ten of SGLang's
(sgl-project/sglang, benchmark/benchmark_vllm_060/README.md); a gap that spans a run then
holds whatever ran between the runs (a prefill step). A sequence that finishes inside a run
gets its last tokens at the run's end, where its e2e ends (:mod:`tpsim.serving.engine`). A
request's first token (its TTFT) opens its gaps and is not one.
"""
from __future__ import annotations

import numpy as np

from .serve_result import Percentiles


def run_end_steps(since: int, k: int, multi: int):
    """The steps j in 1..k after which tokens stream: all of them at ``multi`` = 1 (a range),
    else those that end a run of ``multi`` steps, ``since`` steps of it done before step 1
    (an array)."""
    if multi == 1:
        return range(1, k + 1)
    j = np.arange(1, k + 1)
    return j[(since + j) % multi == 0]


class TokenGaps:
    """Each request's last streamed time and the gaps so far, as (gaps, how many times each
    of them occurred) pairs (module docstring)."""

    def __init__(self, requests: int):
        self.last = np.full(requests, np.nan)
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def deliver(self, reqs, times) -> None:
        """``reqs`` (request ids) each receive a chunk at every time of ``times`` (ascending,
        s): gaps times[0] - their last (none for a first token), then the differences of
        ``times``, once per request; ``times`` a float: one chunk each."""
        if isinstance(times, float):                        # one time: no differences
            reqs = np.asarray(reqs, dtype=np.int64)
            if reqs.size:                                   # NaN: a first token, no gap
                self.parts.append((times - self.last[reqs], 1))   # (dropped in pooled)
                self.last[reqs] = times
            return
        reqs, times = np.asarray(reqs, dtype=np.int64), np.asarray(times, float).reshape(-1)
        if reqs.size == 0 or times.size == 0:
            return
        self.parts.append((times[0] - self.last[reqs], 1))  # NaN: a first token, no gap
        if times.size > 1:
            self.parts.append((times[1:] - times[:-1], reqs.size))
        self.last[reqs] = times[-1]

    def flush(self, reqs, t: float) -> None:
        """Requests ``reqs`` (ids) finished at ``t``: the tokens of each not yet streamed go
        now, as one chunk each."""
        reqs = np.asarray(reqs, dtype=np.int64)
        late = reqs[~(self.last[reqs] >= t)]
        if late.size:
            self.deliver(late, t)

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """(each gap, how many times it occurred), every request's together; a first token's
        NaN (no time before it) is no gap."""
        if not self.parts:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        gaps, counts = zip(*self.parts)
        v = np.concatenate(gaps)
        w = np.repeat(np.array(counts, dtype=np.int64), [g.size for g in gaps])
        real = v == v
        return v[real], w[real]

    def percentiles(self) -> Percentiles:
        """mean, p50, p90, p99 over all gaps, each pair counted as many times as it occurred:
        :meth:`Percentiles.of` of the gaps written out, numpy's linear percentiles at position
        q (n - 1) of the n gaps sorted."""
        v, w = self.pooled()
        if len(v) == 0:
            return Percentiles.of([])
        order = np.argsort(v, kind="stable")
        v, ends = v[order], np.cumsum(w[order])
        n = ends[-1]

        def nth(i: int) -> float:                  # the i-th of the sorted gaps, from 0
            return v[np.searchsorted(ends, min(i, n - 1), side="right")]

        def at(q: float) -> float:
            pos = q * (n - 1)
            i = int(pos)
            return float(nth(i) + (nth(i + 1) - nth(i)) * (pos - i))
        return Percentiles(float(v @ w[order] / n), at(0.5), at(0.9), at(0.99))


def latencies(loop, reqs, first=None) -> tuple[np.ndarray, ...]:
    """Per request, s: TTFT = first token - arrival; e2e = last token - arrival; TPOT =
    (e2e - TTFT) / (gen - 1) over the requests with gen > 1 (:class:`Latency`). ``first``:
    the first tokens' times where another engine made them (a disaggregated prefill)."""
    first = loop.first if first is None else first
    ttft, e2e = first - reqs.arrival_s, loop.last - reqs.arrival_s
    multi = reqs.gen > 1
    return ttft, (e2e[multi] - ttft[multi]) / (reqs.gen[multi] - 1), e2e


__all__ = ["latencies", "TokenGaps", "run_end_steps"]
