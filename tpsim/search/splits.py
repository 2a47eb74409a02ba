"""The layer splits a search tries for a pipeline of pp stages of v model chunks: the even one,
and Megatron's uneven ones (``--decoder-first/last-pipeline-num-layers``: the first and last
stage hold their own counts, the middle stages split the rest evenly; every stage's layers a
multiple of v, as Megatron-core requires: :func:`tpsim.training.pipeline.split_layers`).

The end stages differ from the middle ones: the first keeps p micro-batches' activations in
flight, and the last runs the output layer and the loss, which cost about
``r = vocab x hidden / (a layer's parameters)`` layers (a GEMM of the same tokens over r
layers' worth of weights: 2.4 for Llama 3 8B's 128k vocabulary, 0.3 for GPT-3). So beside
middle stages of e layers (the even share, one or two chunks of layers more), each end stage
holds e, e - v or e - 2v layers (memory: the narrow window); and with one chunk per stage at
the even share, the last stage may shed up to K = max(2, ceil(r) + 1) layers to the first (it
sheds its output layer's time: the wide window, first up to e + K). At most 2K + 3 splits per
(pp, v), whatever the depth; with virtual stages (v > 1: many per pp, each shift coarse) only
the narrow window, so the search's time stays near where it was.
"""
from __future__ import annotations

import math

MIN_WINDOW = 2          # chunks of layers an end stage may hold fewer or more than e


def window(model) -> int:
    """K: the chunks of layers the last stage may shed (module docstring)."""
    ratio = model.vocab * model.hidden / max(model.layer_params(), 1)
    return max(MIN_WINDOW, math.ceil(ratio) + 1)


def splits(model, pp: int, v: int, uneven: bool = True):
    """(first, last) stage layers: (None, None) for the even split (when it divides), then the
    uneven ones of the module docstring, each once."""
    layers = model.layers
    if layers % (pp * v) == 0:
        yield None, None
    if not uneven or pp < 2:
        return
    even = layers // pp if layers % (pp * v) == 0 else None
    seen = {(even, even)}
    for e, wide in _middles(layers, pp, v):
        rest = layers - (pp - 2) * e
        k = window(model) if wide else MIN_WINDOW
        for first in range(max(v, e - MIN_WINDOW * v), e + (k * v if wide else 0) + 1, v):
            last = rest - first
            if max(v, e - k * v) <= last <= e and last % v == 0 and \
                    (first, last) not in seen and (pp > 2 or wide or abs(first - last) <= 2 * v):
                seen.add((first, last))
                yield first, last


def _middles(layers: int, pp: int, v: int):
    """(e, wide): the middle stages' counts (the even share, one or two chunks of layers
    more), each with whether its window is the wide one (one model chunk per stage, e the
    even share: module docstring)."""
    base = layers // pp // v * v
    for e in range(max(v, base), base + 3 * v, v):
        yield e, v == 1 and e == base
