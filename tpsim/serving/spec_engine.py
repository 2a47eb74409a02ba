"""Speculative decoding in the engine loop (``tpsim serve`` with ``--speculative`` or
``--draft-model``): the step prices and the tokens each decode emits.

* **Price**: a decode-only step of B sequences is one speculative step
  (:func:`tpsim.serving.speculative.spec_step_s`: the draft's k forwards + the target's
  verification of k + 1 tokens per sequence), tabulated over B as
  :class:`~tpsim.serving.step_model.StepModel` tabulates plain decode: S(B) + s sum_i L_i,
  s its time per cached token per sequence (the step is affine in the cache length; measured
  at B = max_num_seqs between L = 1024 and 5120), B padded to its CUDA graph
  (:func:`~tpsim.serving.step_model.graph_batch`) and split over the ep replicas. In a step
  with prefill chunks the decodes verify k + 1 tokens each (the step's tokens and logits
  count k + 1 per decode) and their draft forwards are added (tabulated the same way).
* **Tokens**: each decoding sequence accepts j of its k drafts, j drawn per sequence per step
  from the truncated geometric distribution P(j) = a^j (1 - a) for j < k, P(k) = a^k (each
  draft accepted with probability a independently until the first rejection: Leviathan et
  al. 2023), j = min(k, floor(ln(1 - u) / ln a)) for u uniform on [0, 1) from the run's seed;
  it emits j + 1 tokens (the accepted drafts and the target's own next one), at most the
  tokens it has left. The accepted tokens' cache takes blocks from the free ones (as many as
  fit: vLLM reserves k lookahead slots per decode before the step).
* **Latency**: the j + 1 tokens leave in one streamed chunk at the step's end (vLLM's and
  SGLang's streams send the accepted tokens together, and their benchmarks count one
  inter-token gap per chunk): one ITL gap per step; TPOT = (e2e - TTFT) / (gen - 1) as ever.
"""
from __future__ import annotations

import numpy as np

from .infer import draft_server
from .speculative import draft_memory, drafting, spec_step_s
from .step_model import CACHE_LO, cache_slope
from .step_table import Table


def _affine(f, top: int) -> tuple[Table, float]:
    """f(b, L), affine in L: the table over b of f(b, CACHE_LO) - s b CACHE_LO
    (:class:`~tpsim.serving.step_table.Table`, priced as lookups read it), and s the time per
    cached token per sequence at ``top`` (:func:`~tpsim.serving.step_model.cache_slope`)."""
    slope = cache_slope(f, top)
    return Table(lambda b: f(int(b), CACHE_LO) - slope * b * CACHE_LO, top), slope


class SpecDecode:
    """The draft ``draft`` (a server, or None for a head ``method``) drafting k tokens with
    acceptance ``a`` beside the step model ``sm`` (module docstring)."""

    def __init__(self, sm, draft, method: str, k: int, a: float, seed: int):
        srv, top = sm.srv, sm.max_seqs
        self.k, self.a, self.sm = k, a, sm
        self.rng = np.random.default_rng([seed, 1])    # apart from the arrivals' stream
        self.step = _affine(lambda b, n: spec_step_s(srv, draft, method, k, b, n), top)
        self.draft = _affine(lambda b, n: drafting(srv, draft, method, k, b, n).time_s, top)

    def _at(self, table, b: int, sum_kv: float) -> float:
        g, rows, eager = self.sm.graph_rows(b)
        lin, slope = table
        return float(self.sm.eager_decode_s(eager, lin(rows) + slope * sum_kv / g))

    def step_s(self, b: int, sum_kv: float) -> float:
        """A decode-only step of b sequences holding sum_kv cached tokens in all."""
        return self._at(self.step, b, sum_kv)

    def draft_s(self, b: int, sum_kv: float) -> float:
        """The draft forwards of the b decodes of a step with prefill (0 for none)."""
        return self._at(self.draft, b, sum_kv) if b else 0.0

    def accepted(self, n: int) -> np.ndarray:
        """j accepted drafts for each of n decoding sequences (module docstring)."""
        u = self.rng.random(n)
        if self.a <= 0 or self.a >= 1:
            return np.full(n, self.k if self.a >= 1 else 0)
        return np.minimum(self.k, np.floor(np.log1p(-u) / np.log(self.a))).astype(int)

    def emit(self, loop, seqs: list) -> None:
        """The accepted drafts of the decoding ``seqs`` of the step just run (their one token
        each already counted): the cache, the tokens and the free blocks of ``loop``."""
        c, tk, done = loop.computed, loop.tokens, loop.done
        for r, j in zip(seqs, self.accepted(len(seqs))):
            extra = min(int(j), int(loop.gen[r]) - done[r])
            while extra and loop.blocks(c[r] + extra) - loop.blocks(c[r]) > loop.free:
                extra -= 1
            loop.free -= loop.blocks(c[r] + extra) - loop.blocks(c[r])
            c[r], tk[r], done[r] = c[r] + extra, tk[r] + extra, done[r] + extra
            loop.past[r] += extra


def speculation(sm, topo, lay, seed: int) -> SpecDecode | None:
    """The layout's draft in the engine loop (None without one)."""
    if not lay.num_speculative_tokens:
        return None
    return SpecDecode(sm, draft_server(topo, lay), lay.speculative or "draft",
                      lay.num_speculative_tokens, lay.acceptance, seed)


def draft_bytes(m, topo, lay) -> tuple[float, float]:
    """(weights, KV bytes per token) the layout's draft adds on each GPU
    (:func:`tpsim.serving.speculative.draft_memory`; (0, 0) without one)."""
    if not lay.num_speculative_tokens:
        return 0.0, 0.0
    draft = draft_server(topo, lay)
    return draft_memory(m, draft and draft.m, lay.speculative or "draft", lay.tp, lay.dtype,
                        lay.activation_dtype, lay.cache_dtype, lay.ep)


def spec_inputs(lay) -> dict:
    """The draft's inputs of a serve run's :class:`~tpsim.serving.serve_result.ServeInputs`."""
    if not lay.num_speculative_tokens:
        return {}
    return dict(speculative=lay.speculative, draft_model=lay.draft_model,
                num_speculative_tokens=lay.num_speculative_tokens,
                acceptance_rate=lay.acceptance)


__all__ = ["SpecDecode", "speculation", "draft_bytes", "spec_inputs"]
