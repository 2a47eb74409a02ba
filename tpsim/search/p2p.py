"""The pipeline's point-to-point transfers in the search's bound: the step-bound variables c
and cin (:mod:`tpsim.training.step_bound`), priced once per placement of a stage pair."""
from __future__ import annotations

import numpy as np

from ..base.memo import memoised
from ..spec.parallel import Parallelism
from ..training import terms
from .run import Run
from .step import _TIMES, _span_key


@memoised(4096)
def _pairs(run: Run, tp: int, pp: int, dp: int) -> tuple[tuple, np.ndarray]:
    """The distinct placements among the stage pairs (j, j + 1) and the wrap (p - 1, 0), as
    (span key, placement), and each pair's index among them."""
    par, topo = Parallelism(tp=tp, pp=pp, dp=dp), run.topo
    places: dict = {}
    at = []
    for a, b in [(j, j + 1) for j in range(pp - 1)] + [(pp - 1, 0)]:
        place = terms.pair_place(par, topo, a, b)
        at.append(places.setdefault(_span_key(place), (len(places), place))[0])
    return tuple((key, place) for key, (_, place) in places.items()), np.array(at)


@memoised(65536)
def p2p_times(run: Run, tp: int, pp: int, dp: int, nbytes: float, v: int) -> np.ndarray:
    """The step-bound variables c (c[j]: one transfer of ``nbytes`` between stages j and
    j + 1; c[p - 1]: the last stage to the first) and cin (:func:`inner_transfer`); each
    :func:`tpsim.cost.collectives.send_recv_time`, memoised per size and the pair's placement
    (every pair of stages on the same levels costs the same)."""
    if pp == 1:
        return np.zeros(2)
    places, at = _pairs(run, tp, pp, dp)
    c = np.array([_TIMES.get((run, "send-recv", nbytes, key), terms.p2p_s, nbytes, place,
                             run.topo) for key, place in places])[at]
    return np.concatenate([c, inner_transfer(c, pp, v)])


def p2p_bytes(run: Run, tp: int, micro_batch: int, sp: bool, cp: int = 1) -> float:
    """One stage boundary's activation (:func:`tpsim.training.terms.p2p_bytes`) of the rank's
    seq_len / cp tokens; with --scatter-gather-p2p 1/tp of it (the receiving stage's TP
    all-gather, which the step adds to its chunks, left out: the bound stays below)."""
    return terms.p2p_bytes(run.model, tp, micro_batch, run.seq_len // cp, run.dtype,
                           sp or run.setting("scatter_gather_p2p"))


def inner_transfer(c: np.ndarray, p: int, v: int) -> np.ndarray:
    """cin[k]: the shorter transfer on the pairs stage k's p2p batches use."""
    if p == 1:
        return np.zeros(1)
    inner = c[:p - 1]
    out = np.minimum(np.concatenate([[np.inf], inner]), np.concatenate([inner, [np.inf]]))
    if v > 1:                     # the first and last stage also use the wrap
        out[[0, -1]] = np.minimum(out[[0, -1]], c[p - 1])
    return out
