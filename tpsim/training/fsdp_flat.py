"""PyTorch FSDP1's flat parameter: the gradient copy in every unit's backward.

FSDP1 (``FullyShardedDataParallel``, as Composer 0.16 runs it for llm-foundry) keeps each
unit's parameters as one flat tensor and, before each forward, gives the module views of it:
``torch.split(flat_param, numels)``, each piece viewed to its parameter's shape
(``FlatParamHandle._get_unflat_views_unaligned``, torch/distributed/fsdp/flat_param.py,
PyTorch 2.1), under autograd, so that the gradients reach the flat parameter whose
post-backward hook reduce-scatters them. The backward of that split
(``split_with_sizes_backward``, torch/csrc/autograd/FunctionsManual.cpp) is one ``at::cat``
of the parameters' gradients into the flat gradient: each unit's 16-bit gradients read and
written once more, on the compute stream, in every micro-batch's backward (activation
checkpointing recomputes the forward with the same views: one copy still):

    t_copy = elementwise_time(COPY_PASSES x GRAD_BYTES x unit parameters)

FSDP2 (``fully_shard``, torchtitan) keeps each parameter a tensor of its own: no such copy
(its copies around the collectives instead: :mod:`tpsim.training.fsdp_copies`).
"""
from __future__ import annotations

import dataclasses

from ..cluster.topology import BYTES_PER_ELEMENT
from ..cost.compute import elementwise_time

GRAD_BYTES = BYTES_PER_ELEMENT["bf16"]  # autograd's gradients of the gathered 16-bit parameters
COPY_PASSES = 2                         # at::cat reads each gradient and writes the flat one


def flat_grad_copy_s(params: int, device) -> float:
    """One unit's flat-gradient copy on ``device``:
    elementwise_time(COPY_PASSES x GRAD_BYTES x ``params``) (module docstring)."""
    return elementwise_time(COPY_PASSES * GRAD_BYTES * params, device)


def with_flat_grad_copies(chunk, device):
    """``chunk`` (a :class:`tpsim.training.step.Chunk`) with each unit's backward longer by its
    :func:`flat_grad_copy_s` (:func:`with_unit_compute`)."""
    copies = [flat_grad_copy_s(params, device) for _, params, _ in chunk.units]
    return with_unit_compute(chunk, [0.0] * len(copies), copies)


def with_unit_compute(chunk, forward, *backward):
    """``chunk`` (a :class:`tpsim.training.step.Chunk`) with each run of units' forward and
    backward longer by ``forward[i]`` and the ``backward`` lists' ``[i]`` seconds of compute
    on the compute stream (one unit's, FSDP's copies): its units' backward seconds, its
    forwards, and its part's forward_s, backward_s and compute_s by the sums over its units."""
    per_unit = list(zip(*backward))          # per run of units: its backward's extra terms
    fwd = sum(f * n for f, (_, _, n) in zip(forward, chunk.units))
    bwd = sum(sum(b) * n for b, (_, _, n) in zip(per_unit, chunk.units))
    p = chunk.part
    return dataclasses.replace(
        chunk, units=tuple((sum(b, t), params, n) for b, (t, params, n) in zip(per_unit,
                                                                               chunk.units)),
        forwards=tuple(f + x for x, f in zip(forward, chunk.forwards)),
        part=dataclasses.replace(p, forward_s=p.forward_s + fwd, backward_s=p.backward_s + bwd,
                                 compute_s=p.compute_s + fwd + bwd))


__all__ = ["flat_grad_copy_s", "with_flat_grad_copies", "with_unit_compute"]
