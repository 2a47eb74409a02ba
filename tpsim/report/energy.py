"""The energy and cost line of ``tpsim serve`` and ``tpsim infer`` (one wording for both)."""
from __future__ import annotations

from dataclasses import asdict

from ..base.formula import qualname
from ..serving.energy import run_energy
from .formulas import formula_lines

ENERGY = qualname(run_energy)


def energy_lines(e, c) -> list[str]:
    """One line of energy and cost per output token (none where neither is known)."""
    parts = [] if e.j is None else [
        f"energy {e.j_per_output_token:.3f} J per output token, the data centre's PUE "
        f"({e.pue:g}) included"]
    if c.usd is not None:
        parts.append(f"${c.usd_per_million_output_tokens:,.2f} per million output tokens")
    return ["; ".join(parts), *formula_lines(ENERGY)] if parts else []


def energy_json(p) -> dict:
    """The ``energy`` and ``cost`` objects of a result that has them."""
    return {"energy": {**asdict(p.energy), "formula": ENERGY},
            "cost": {**asdict(p.cost), "formula": ENERGY}}


__all__ = ["energy_lines", "energy_json", "ENERGY"]
