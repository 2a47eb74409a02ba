"""The requests of a ``tpsim serve`` run: when each arrives and how long it is.

Arrivals are a Poisson process of ``rate`` requests/s: the gaps are independent exponentials
of mean 1/rate, the first request at the first gap (``rate`` = inf: every request at t = 0,
the offline benchmark's batch, as vLLM's benchmark_throughput.py sends them). Lengths follow
:func:`tpsim.spec.serve.length_dist`. One ``numpy.random.default_rng(seed)`` draws the gaps,
then the prompts, then the generated lengths: a seed fixes the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..spec.serve import length_dist


@dataclass(frozen=True)
class Requests:
    """``arrival_s``, ``prompt`` and ``gen`` per request (numpy arrays, in arrival order)."""
    arrival_s: np.ndarray
    prompt: np.ndarray
    gen: np.ndarray


def lengths(rng, text: str, flag: str, mean: int, n: int) -> np.ndarray:
    """``n`` token counts of the distribution ``text`` with mean ``mean`` where it takes one
    (:func:`tpsim.spec.serve.length_dist`)."""
    kind = length_dist(text, flag)
    if kind[0] == "fixed":
        return np.full(n, mean, dtype=np.int64)
    if kind[0] == "uniform":
        return rng.integers(kind[1], kind[2] + 1, size=n, dtype=np.int64)
    return np.maximum(np.ceil(rng.exponential(mean, size=n)), 1).astype(np.int64)


def draw_requests(n: int, rate: float, seed: int, prompt: int, gen: int,
                  prompt_dist: str = "fixed", gen_dist: str = "fixed") -> Requests:
    """``n`` requests arriving at ``rate`` per second (module docstring)."""
    rng = np.random.default_rng(seed)
    if math.isinf(rate):
        arrival = np.zeros(n)
    else:
        arrival = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return Requests(arrival, lengths(rng, prompt_dist, "--prompt-dist", prompt, n),
                    lengths(rng, gen_dist, "--gen-dist", gen, n))


__all__ = ["Requests", "draw_requests", "lengths"]
