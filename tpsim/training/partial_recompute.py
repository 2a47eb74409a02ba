"""Full recomputation of some layers, as Megatron-core's ``--recompute-method`` and
``--recompute-num-layers`` run it (``megatron/core/recompute.py``: each model chunk's
TransformerBlock, ``num_layers_per_pipeline_rank`` its own layers):

* ``block`` N: the first min(N, n) layers of each virtual stage of n layers are checkpointed
  one by one (each keeps only its input, its backward first re-runs its forward: the
  ``full`` layer of :mod:`tpsim.layer.recompute`), the other n - min(N, n) run without any
  recomputation. A virtual stage's forward, backward and saved bytes add up its layers of the
  two kinds, dense and MoE apart; its gradient units in order keep the recomputed layers'
  longer backward where they fall (the stage's first layers: its last units).
* ``uniform`` N: every layer re-runs its forward in the backward, and each group of N
  consecutive layers keeps only the group's input: ceil(n / N) layer inputs per virtual
  stage instead of n (N = 1 is ``--recompute full`` without a method). The group's layers'
  activations live together during its backward: like the one layer's of ``full``, not counted.
"""
from __future__ import annotations

import math

from ..base.record import record
from ..spec.model_params import moe_layers_in

LAYER_UNITS = ("layer", "moe")
RECOMPUTED = ".rc"            # suffix of a recomputed layer's unit name: "layer.rc", "moe.rc"


@record
class Partial:
    """``method`` (block or uniform) and ``layers`` (N) of a run with full recomputation;
    ``layer`` and ``moe``: the simulated recomputed layers (:class:`tpsim.training.step.Part`)
    where block recomputes some layers only (None: uniform, whose layers all are)."""
    method: str
    layers: int
    layer: object = None
    moe: object = None

    def recomputed(self, n: int) -> int:
        """Layers of a virtual stage of ``n`` that re-run their forward (block: the first N)."""
        return min(self.layers, n) if self.method == "block" else n

    def units(self, units: list) -> list:
        """A virtual stage's gradient units (runs, last layer first: output, layers,
        embedding) with its first :meth:`recomputed` layers renamed ``<name>.rc``."""
        if self.method != "block":
            return units
        left, out = self.recomputed(sum(n for name, _, n in units if name in LAYER_UNITS)), []
        for name, params, n in reversed(units):
            k = min(left, n) if name in LAYER_UNITS else 0
            left -= k
            out += [(name + RECOMPUTED, params, k)] * bool(k) + [(name, params, n - k)] * (n > k)
        return _merged(out[::-1])

    def saved_bytes(self, layers: int, layer_saved: float) -> float:
        """What uniform's groups keep fewer than one input per layer (``layer_saved``: one
        fully recomputed layer's, its input): (n - ceil(n / N)) inputs; 0 for block."""
        if self.method != "uniform" or not layers:
            return 0.0
        return (layers - math.ceil(layers / self.layers)) * layer_saved

    def model_layers(self, model, stage_layers: list[int]) -> tuple[int, int]:
        """(dense, MoE) layers of the model that block recomputes: each virtual stage's first."""
        starts = [sum(stage_layers[:g]) for g in range(len(stage_layers))]
        k = [self.recomputed(n) for n in stage_layers]
        sparse = sum(moe_layers_in(model, s, n) for s, n in zip(starts, k))
        return sum(k) - sparse, sparse


    def model_kinds(self, kinds: list, model, stage_layers: list[int], recomputed) -> list:
        """The model's layer kinds, ``(times, count)`` pairs (dense, then MoE), with block's
        recomputed layers moved to their ``recomputed`` times (dense, MoE)."""
        if self.method != "block":
            return kinds
        counts = self.model_layers(model, stage_layers)
        out = [(t, n - k) for (t, n), k in zip(kinds, counts)]
        return out + [(t, k) for t, k in zip(recomputed, counts) if k]


def _merged(units: list) -> list:
    """Neighbouring runs of the same unit joined."""
    out: list = []
    for u in units:
        if out and out[-1][:2] == u[:2]:
            out[-1] = (u[0], u[1], out[-1][2] + u[2])
        else:
            out.append(u)
    return out


def partial_of(lay) -> Partial | None:
    """The run's :class:`Partial` (no simulated layers yet); None without a method."""
    if lay.recompute != "full" or lay.recompute_method is None:
        return None
    return Partial(lay.recompute_method, lay.recompute_num_layers)


def base_layout(lay):
    """The layout the layers that block does not recompute run with: no recomputation."""
    if lay.recompute_method != "block":
        return lay
    return lay.replace(recompute="none", recompute_method=None, recompute_num_layers=None)


__all__ = ["Partial", "partial_of", "base_layout", "RECOMPUTED"]
