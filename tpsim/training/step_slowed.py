"""A tighter step bound beside the path weights of :mod:`tpsim.training.step_bound`: the
interleaved cool-down as it runs, with the compute slowed beside the gradient reductions
(:mod:`tpsim.training.step_timing`: a compute op runs at 1 - I of its speed while its stage's DP
stream runs; I the device's ``comm_compute_interference``), still a lower bound of the
simulated step (a test).

The last p micro-batches' backwards run each
chunk down every virtual stage, chunk by chunk (v - 1 first), and on each stage below the top
chunk the first of them, micro-batch m - p's, follows the last backward of the chunk above,
beside that backward's last bucket reduction R (Megatron-core's interleaved schedule,
:func:`tpsim.training.pipeline.interleaved`). Its end E_{j,g} (micro-batch m - p + j on virtual
stage g = c p + k, b_g its backward) is bounded by the recurrence

    E_{j,g} = max(E_{j,g+1} + c, E_{j-1,g} + f_{j,g}) + b_g            (j > 0)
    E_{0,g} = F(E_{0,g+1} + c, E_{p-1,g+p} + s_{g+p})                   (below the top chunk)
    F(A, S) = t + b_g + I min(max(R_{g+p} - (t - S), 0), b_g / (1 - I)),
              t = max(A, S + f_{0,g})

(c the pair's transfer, f the forward a steady stage runs between two backwards, 0 in the
cool-down, s the pre-scale kernels after a chunk's last backward; the DP stream is busy from S
for R, so the compute from t loses I of the overlap). F is nondecreasing in A and S, so bounds
of both bound it; on the top chunk E_{0,g} = E_{0,g+1} + c + b_g, and E_{j,V-1} runs the last
stage's stream from E_{0,V-1}, bounded by its path rows
(:meth:`tpsim.training.step_bound.Forms.chain_rows`). A target (stage r, chunk c) ends no
earlier than E_{p-1,cp+r} + s_{cp+r}. Vectorised over the layouts, one step per virtual stage:
the search asks it only of the layouts it is about to simulate.
"""
from __future__ import annotations

import numpy as np

from .step_bound import FIXED, ChainForms, ShapeForms, bound_ends


def slowed_ends(shape: ShapeForms, chains: ChainForms | None, x: np.ndarray,
                reduce: np.ndarray, loss: float) -> np.ndarray:
    """Lower bounds of each target's end for layouts ``x`` (layouts x variables): the path
    rows' (:func:`tpsim.training.step_bound.bound_ends`) and, interleaved (``chains``), the
    cool-down's; ``reduce``: R per layout and virtual stage (its last bucket's reduction),
    ``loss`` the device's I."""
    ends = bound_ends(shape, x)
    if chains is None:
        return ends
    start = (x @ chains.start.T).max(axis=1)
    return np.maximum(ends, chain(shape, chains, x, start, reduce, loss))


def chain(shape: ShapeForms, chains: ChainForms, x: np.ndarray, start: np.ndarray,
          reduce: np.ndarray, loss: float) -> np.ndarray:
    """The cool-down's bound of each target's end (module docstring), from ``start``: the
    last stage's backward of micro-batch m - p on chunk v - 1, per layout."""
    V = len(chains.back)
    p = (x.shape[1] - len(FIXED) - V) // 2
    t6 = x[:, :len(FIXED)]
    b = (t6 @ chains.back.T).T                                # b_g, (V, layouts)
    s, c = x[:, len(FIXED):len(FIXED) + V].T, x[:, len(FIXED) + V + np.arange(V) % p].T
    f = np.einsum("jgk,nk->gjn", chains.steady, t6)           # the steady forward before
    cap = b / (1.0 - loss) if loss < 1 else np.full_like(b, np.inf)     # b_g / (1 - I)
    run = np.cumsum(f + b[:, None, :], axis=1) - f[:, :1] - b[:, None, :]   # P_j per g
    e = start + run[V - 1]                        # E_{j, V-1}: the last stage's stream
    last = np.empty_like(b)                       # E_{p-1, g}
    last[V - 1] = e[-1]
    for g in range(V - 2, -1, -1):
        a = e + c[g]                              # each micro-batch's input arrives
        if g < V - p:                             # its head after the chunk above's S
            t = last[g + p] + s[g + p]
            late = np.maximum(a[0], t + f[g, 0]) - t
            head = t + late + b[g] + loss * np.minimum(
                np.maximum(reduce[:, g + p] - late, 0.0), cap[g])
        else:
            head = a[0] + b[g]
        u = a - run[g]
        u[0] = head - b[g]
        e = np.maximum.accumulate(u, axis=0) + run[g] + b[g]
        last[g] = e[-1]
    at = np.array([cc * p + r for r, cc in shape.targets])
    return (last[at] + s[at]).T
