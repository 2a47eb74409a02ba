"""The attention mask Megatron-LM's data loader builds (``--create-attention-mask-in-dataloader``,
its default: megatron/training/arguments.py): a (b, 1, s, s) boolean causal mask a micro-batch,
copied to the GPU and broadcast over TP before the forward of each micro-batch's first and last
virtual stage (``pretrain_gpt.get_batch``: TP rank 0 ``.cuda(non_blocking=True)`` on the
compute stream, then ``get_batch_on_this_tp_rank``'s ``torch.distributed.broadcast`` on the TP
group; middle stages build no batch). With one stage the copy and broadcast run once a
micro-batch. Transformer Engine's causal kernel never reads the mask; NeMo 2, Megatron-Bridge
and Megatron-LM's example scripts turn it off (the default here).
"""
from __future__ import annotations

import dataclasses

from ..base.errors import ConfigError
from ..sim.price import group_collective

MASK_BYTES_PER_ELEMENT = 1      # torch.bool


def mask_bytes(micro_batch: int, seq_len: int) -> float:
    """One micro-batch's mask: b s^2 bytes (s: the whole sequence; context parallelism
    slices it after the copy, ``get_batch_on_this_cp_rank``)."""
    return float(micro_batch * seq_len * seq_len * MASK_BYTES_PER_ELEMENT)


def mask_copy_s(micro_batch: int, seq_len: int, tp_group, topo) -> tuple[float, float]:
    """(host-to-device, TP broadcast) seconds of one micro-batch's mask:

        t_h2d = b s^2 / B_host             (B_host: ``host_link_bandwidth_GBps``, per direction)
        t_bc  = broadcast(b s^2) on the TP group   (:func:`tpsim.cost.collectives.collective_time`;
                                                    0 with tp = 1)

    The host link's line rate makes t_h2d a lower bound of the copy."""
    host = topo.device.host_link_Bps
    if host is None:
        raise ConfigError("--create-attention-mask", "device.host_link_bandwidth_GBps",
                          "a topology whose device states its host link", None)
    nbytes = mask_bytes(micro_batch, seq_len)
    bcast = group_collective("broadcast", nbytes, tp_group, topo).time_s \
        if tp_group.size > 1 else 0.0
    return nbytes / host, bcast


def with_mask(embedding, output, copy: tuple[float, float], pp: int) -> tuple:
    """The first virtual stage's ``embedding`` and last virtual stage's ``output`` Parts with the
    mask's ``copy`` (:func:`mask_copy_s`) ahead of their forward: the copy as host wait, the
    broadcast as exposed TP; the output's only with pp > 1 (one stage copies once)."""
    if not any(copy):
        return embedding, output
    h2d, bcast = copy

    def add(part):
        return dataclasses.replace(part, forward_s=part.forward_s + h2d + bcast,
                                   host_wait_s=part.host_wait_s + h2d,
                                   tp_exposed_s=part.tp_exposed_s + bcast)
    return add(embedding), add(output) if pp > 1 else output
