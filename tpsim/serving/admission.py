"""Which waiting request an engine admits: vLLM's greedy rule, or SGLang's reservation.

* ``vllm`` (the default): a waiting request is admitted while blocks are free for its first
  chunk; a running sequence short of a block preempts another (the engine loop's rule,
  :mod:`tpsim.serving.engine`). Nothing here changes it.
* ``sglang-0.3``, ``sglang-0.4``: SGLang's PrefillAdder (python/sglang/srt/managers/
  policy_scheduler.py in v0.3.0, schedule_policy.py in v0.4.1) admits a request only if the
  cache tokens it will need fit beside what the running requests are expected to still
  write. With F free cache tokens, each running request r having written d_r of its g_r
  tokens (prompt p_r), the ratio rho and C = CLIP_MAX_NEW_TOKENS 4096:

      rem_total = F - rho sum_r min(g_r - d_r, C) - sum_(admitted this step) min(g_a, C)

  v0.3.0 (``add_one_req``) admits the head h iff p_h + d_h + min(g_h, C) < rem_total.
  v0.4.1 with ``ignore_eos`` (bench_serving's default: the request writes exactly g_h
  tokens, as every tpsim request does) and no radix cache (``add_one_req_ignore_eos``) walks
  the requests, h included, sorted by tokens left l_i = g_i - d_i ascending, holding
  o_i = p_i + d_i tokens: it admits h iff for every i, F - p_h + sum_(k<i) o_k -
  l_(i+1) (n - i) > 0 (l_(i+1) the next one's, l_i for the last; n requests); a request
  after the step's first is admitted only while rem_total > 0.

  The ratio rho falls by ``decay`` each decode step to ``low``, goes back to ``init`` when the
  engine idles, and after a retraction (tpsim's preemption) is set to (sum_r d_r + 20 n) /
  sum_r g_r over the n requests left, at most 1 (ScheduleBatch.retract_decode,
  retract_decode_steps 20). Constants (global_config.py, scheduler.py), s the
  ``schedule_conservativeness`` (1.0): v0.3.0 init 0.7, low = min(0.1 s, 1), starting at
  low, decay 0.001; v0.4.1 init = min(0.7 s, 1), low = 0.14 init, starting at init, decay
  (init - low) / 600.

Not modelled: which request a retraction takes (SGLang the one with the fewest tokens
written, tpsim the last admitted) and ``max_prefill_tokens`` (16384, above the chunk).
"""
from __future__ import annotations

import numpy as np

CLIP_MAX_NEW_TOKENS = 4096          # SGLang's CLIP_MAX_NEW_TOKENS(_ESTIMATION)
RETRACT_DECODE_STEPS = 20           # SGLang's global_config.retract_decode_steps


class Greedy:
    """vLLM's admission: blocks for the first chunk suffice (the engine checks them)."""

    def fits(self, loop, head: int, new: int = 0) -> bool:
        return True

    def steps_to_fit(self, loop, k: int) -> int:
        """Decode steps until the head of the queue fits, at most k."""
        return 1

    def decoded(self, k: int) -> None:
        pass

    def idle(self) -> None:
        pass

    def retracted(self, loop) -> None:
        pass


class Reserving(Greedy):
    """SGLang's admission (module docstring): the ratio's state and the tests."""

    def __init__(self, version: str, conservativeness: float):
        self.version = version
        if version == "sglang-0.3":
            self.init, self.low = 0.7, min(0.1 * conservativeness, 1.0)
            self.decay, self.ratio = 0.001, self.low
        else:
            self.init = min(0.7 * conservativeness, 1.0)
            self.low = 0.14 * self.init
            self.decay, self.ratio = (self.init - self.low) / 600, self.init

    def decoded(self, k: int) -> None:
        self.ratio = max(self.ratio - k * self.decay, self.low)

    def idle(self) -> None:
        self.ratio = self.init

    def retracted(self, loop) -> None:
        run = loop.running
        done = sum(loop.done[r] for r in run)
        self.ratio = min(1.0, (done + RETRACT_DECODE_STEPS * len(run)) /
                         max(sum(int(loop.gen[r]) for r in run), 1))

    def fits(self, loop, head: int, new: int = 0) -> bool:
        return bool(self._fits(loop, head, new, np.zeros(1, dtype=np.int64))[0])

    def steps_to_fit(self, loop, k: int) -> int:
        ok = self._fits(loop, loop.waiting[0], 0, np.arange(1, k + 1))
        return int(np.argmax(ok)) + 1 if ok.any() else k

    def _fits(self, loop, h: int, new: int, j: np.ndarray) -> np.ndarray:
        """Whether head h fits after j more decode steps of the running requests, the last
        ``new`` of them admitted this step (module docstring)."""
        run = np.array(loop.running, dtype=np.int64)
        old, fresh = run[:len(run) - new], run[len(run) - new:]
        done = np.asarray(loop.done, dtype=np.int64)[run]
        kv = np.asarray(loop.computed, dtype=np.int64)[run]
        bs = loop.bs
        grown = ((kv[None, :] + j[:, None] + bs - 1) // bs).sum(1) - ((kv + bs - 1) // bs).sum()
        free = (loop.free - grown) * bs                                   # F after j steps
        left = loop.gen[run] - done                                       # l_r now
        ratio = np.maximum(self.ratio - j * self.decay, self.low)
        kept = left[:len(old)][None, :] - j[:, None]
        rem = free - ratio * np.minimum(kept, CLIP_MAX_NEW_TOKENS).sum(1) - np.minimum(
            loop.gen[fresh], CLIP_MAX_NEW_TOKENS).sum()
        held = int(loop.prompt[h]) + loop.done[h]
        if self.version == "sglang-0.3":
            return held + min(int(loop.gen[h]), CLIP_MAX_NEW_TOKENS) < rem
        ok = (rem > 0) | (new == 0)
        lefts = np.append(left, int(loop.gen[h]) - loop.done[h])
        occ = np.append(loop.prompt[run] + done, held)
        order = np.argsort(lefts, kind="stable")
        lefts, occ = lefts[order], occ[order]
        n = len(lefts)
        nxt = np.append(lefts[1:], lefts[-1])[None, :] - j[:, None]       # l_(i+1) after j
        freed = np.concatenate(([0], np.cumsum(occ)[:-1]))[None, :] + np.arange(n) * j[:, None]
        cur = (free - int(loop.prompt[h]))[:, None]
        return ok & (cur + freed - nxt * (n - np.arange(n))[None, :] > 0).all(1)


def admission(st) -> Greedy:
    """The policy of ``st.admission`` (module docstring; names: spec.serve.ADMISSIONS)."""
    if st.admission == "vllm":
        return Greedy()
    return Reserving(st.admission, st.schedule_conservativeness)
