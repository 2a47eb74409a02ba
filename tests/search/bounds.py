"""What every search test asserts of the layouts it prices (`search.driver.bound_layouts`): each
bound at most predict's step time (so the branch and bound drops no layout predict would rank
above its best), the fullest stage's bytes predict's to 1e-12 and the fit predict's."""
from __future__ import annotations

import math

from tpsim.training.predict import predict


def simulate(run, layouts, batch: int, seq_len: int | None = None) -> list:
    """predict() of each layout with the run's model, topology, sequence and dtype."""
    return [predict(run.model, run.topo, seq_len=seq_len or run.seq_len, dtype=run.dtype,
                    global_batch=batch, **lay.predict_kwargs()) for lay in layouts]


def check_bounds(run, layouts, priced, batch: int, sims=None, memory: bool = True) -> list:
    """Assert each (bound, bytes, fits) of `priced` against its layout's prediction (`sims`,
    simulated here when not given); `memory` False checks the bound alone. Returns the
    predictions."""
    sims = sims if sims is not None else simulate(run, layouts, batch)
    for lay, (bound, nbytes, fits), p in zip(layouts, priced, sims, strict=True):
        assert bound <= p.step.time_s * (1 + 1e-9), lay
        if memory:
            assert math.isclose(nbytes, p.memory.total_bytes, rel_tol=1e-12), lay
            assert fits == p.memory.fits, lay
    return sims
