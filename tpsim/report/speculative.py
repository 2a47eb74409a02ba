"""The speculative decode of ``tpsim infer`` in words and in JSON
(:class:`~tpsim.serving.result.Speculative`)."""
from __future__ import annotations

from dataclasses import asdict

from ..base.formula import qualname
from ..serving.speculative import speculative_steps
from .formulas import formula_lines

SPECULATIVE = qualname(speculative_steps)


def speculative_lines(s) -> list[str]:
    """Two lines: the draft, the step's parts and the draft's share, the speed-up (none
    without speculation)."""
    if s is None:
        return []
    draft = s.method if s.draft_model is None else f"draft model {s.draft_model}"
    return [
        f"  speculative: {draft}, k = {s.num_speculative_tokens}, acceptance "
        f"{s.acceptance_rate:.3g}: {s.tokens_per_step:.3f} tokens per step of "
        f"{s.step_s * 1e3:.3f} ms (mean)",
        f"    draft {s.draft_s * 1e3:.3f} ms ({s.draft_share:.1%} of the step), verify "
        f"{s.verify_s * 1e3:.3f} ms; {s.speedup:.2f}x the time per token without it",
        *formula_lines(SPECULATIVE),
    ]


def speculative_json(p) -> dict:
    """The ``speculative`` object (null without speculation)."""
    s = p.speculative
    return {"speculative": None if s is None else {**asdict(s), "formula": SPECULATIVE}}


__all__ = ["speculative_lines", "speculative_json", "SPECULATIVE"]
