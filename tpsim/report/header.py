"""What the ``tpsim infer`` and ``tpsim serve`` reports' first lines share."""
from __future__ import annotations


def kernel_note(inputs) -> str:
    """The header's note of a decode attention kernel other than the default (``inputs``: an
    :class:`~tpsim.serving.result.InferInputs` or :class:`~tpsim.serving.serve_result.ServeInputs`)."""
    k = inputs.decode_attention
    return "" if k == "tensor-cores" else f"; decode attention {k}"
