"""PyTorch FSDP2's copies around its collectives, on the compute stream, in every micro-batch.

FSDP2 (``fully_shard``, as torchtitan applies it) keeps each parameter a tensor of its own, so
its collectives run on flat buffers the unit's parameters are copied out of and into
(torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py, PyTorch 2.4 on):

* after each all-gather of a unit's weights, ``FSDPParamGroup.wait_for_unshard`` runs
  ``foreach_all_gather_copy_out`` on the current (compute) stream: one
  ``split_with_sizes_copy`` of the gathered buffer into the unit's unsharded parameters,
  reading and writing the gathered bytes (16-bit, or 1 byte with the fp8 all-gather), before
  the unit's forward (and its backward, re-gathered with ``reshard_after_forward``);
* before each reduce-scatter, ``foreach_reduce`` runs ``foreach_reduce_scatter_copy_in`` on the
  current stream (the reduce-scatter stream waits for it): one ``chunk_cat`` of the unit's
  16-bit gradients into the reduce-scatter input in the reduce dtype (fp32: torchtitan's
  ``mixed_precision_reduce``), reading 2 and writing the main-gradient bytes:

    t_out = elementwise_time(COPY_PASSES x gathered bytes x unit parameters)
    t_in  = elementwise_time((GRAD_BYTES + main-gradient bytes) x unit parameters)

The copy-in of the all-gather (the cast of the fp32 shards into the 16-bit input) and the
post-reduce accumulation run on FSDP2's own streams over 1/s of the unit: not priced. Pipelined
(torch's pipeline schedules), only the backward's re-gathers are priced so, as their
collectives (:meth:`tpsim.training.sharded_dp.Sharding.per_micro_batch`); the step-level
gathers' and reduction's copies are not. Megatron-FSDP all-gathers into the buffer its
parameters are views of: no copy. FSDP1 copies the gradients instead (:mod:`.fsdp_flat`).
"""
from __future__ import annotations

from ..cost.compute import elementwise_time
from .fsdp_flat import COPY_PASSES, GRAD_BYTES, with_flat_grad_copies, with_unit_compute


def unit_copies_s(params: int, gathered: float, grads: float, sh, device) -> tuple[float, ...]:
    """A unit's (forward copy-out, backward copy-out, gradient copy-in) seconds per
    micro-batch with ``gathered`` and ``grads`` bytes a parameter (module docstring): the
    copy-outs where ZeRO-3 gathers on more than one rank, the copy-in where it reduces."""
    sharded = max(sh.shard, sh.expert_shard) > 1
    out = elementwise_time(COPY_PASSES * gathered * params, device) \
        if sh.stage == 3 and sharded else 0.0
    copy_in = elementwise_time((GRAD_BYTES + grads) * params, device) if sharded else 0.0
    return sh.per_micro_batch((out, out if sh.reshard_after_forward else 0.0, copy_in))


def with_unit_copies(chunk, sh, gathered: float, grads: float, device):
    """``chunk`` (a :class:`tpsim.training.step.Chunk`) with the copies its FSDP runs on the
    compute stream: FSDP1's flat-gradient copy (``sh.copies`` "flat",
    :func:`~.fsdp_flat.with_flat_grad_copies`), FSDP2's (``sh.copies`` "fsdp2",
    :func:`unit_copies_s`) each unit's forward and backward longer by its copies; else
    ``chunk``."""
    if sh.copies == "flat":
        return with_flat_grad_copies(chunk, device)
    if sh.copies != "fsdp2":
        return chunk
    copies = [unit_copies_s(params, gathered, grads, sh, device) for _, params, _ in chunk.units]
    return with_unit_compute(chunk, *zip(*copies))    # copy-outs; backward: copy-out, copy-in


__all__ = ["unit_copies_s", "with_unit_copies"]
