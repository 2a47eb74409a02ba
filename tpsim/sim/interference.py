"""Each comm op's slowdown on the compute beside it, by the comm kernel's kind and the compute
kernel's (:mod:`tpsim.cost.interference` holds the formula).

A comm op holds SMs (:func:`held_sms`): an NCCL collective or point-to-point transfer the
device's ``collective_sms`` (its channels' CTAs); a flex dispatch its backend's kernels'
(DeepEP :data:`~tpsim.cost.all_to_all.DEEPEP_SMS`, HybridEP
:data:`~tpsim.cost.interference.HYBRIDEP_SMS`); a collective that names its ``sms``
(Transformer Engine's pipelined reduce-scatter) that many, beside a GEMM launched with that
SM margin. Copies on the copy engines (stream ``copy``) hold none and slow nothing. A device
that lists no ``collective_sms`` keeps one figure for every compute kernel: the DeepEP
kernels' SM share, else its ``comm_compute_interference``.
"""
from __future__ import annotations

from typing import NamedTuple

from ..cost.all_to_all import DEEPEP_SMS, flex_sm_share
from ..cost.interference import HYBRIDEP_SMS, compute_loss, is_persistent
from ..layer.ops import Collective, Dispatch


class Losses(NamedTuple):
    """Per op in issue order: what comm op i costs a persistent compute kernel beside it, what
    it costs any other, and whether compute op i is persistent (0 and False where they do not
    apply)."""
    persistent: tuple[float, ...]
    other: tuple[float, ...]
    kernel: tuple[bool, ...]


def held_sms(op, device) -> tuple[int, bool]:
    """(SMs comm ``op``'s kernel holds, whether the GEMM beside it leaves them as a margin)."""
    if type(op) is Dispatch:
        return (DEEPEP_SMS if op.backend == "deepep" else HYBRIDEP_SMS), False
    if type(op) is Collective and op.sms:
        return op.sms, True
    return device.collective_sms, False


def op_interference(op, device, persistent: bool = True) -> float:
    """The slowdown comm ``op`` puts on a compute kernel beside it (``persistent`` or not):
    :func:`tpsim.cost.interference.compute_loss` of :func:`held_sms` where the device lists
    its ``collective_sms``; else the flex kernels' SM share where known
    (:func:`tpsim.cost.all_to_all.flex_sm_share`), else ``comm_compute_interference``."""
    if device.collective_sms and device.sm_count:
        held, margin = held_sms(op, device)
        return compute_loss(held, device.sm_count, persistent, margin)
    if type(op) is Dispatch:
        share = flex_sm_share(op.backend, device)
        if share is not None:
            return share
    return device.comm_compute_interference


def interferences(ops, device) -> Losses | None:
    """Each op's :class:`Losses`, or None where every comm op's is the device's
    ``comm_compute_interference`` on every compute kernel."""
    kinds = bool(device.collective_sms and device.sm_count)
    if not ops or not kinds and not any(type(op) is Dispatch for op in ops):
        return None
    rows = [(op_interference(op, device, True), op_interference(op, device, False), False)
            if op.stream == "comm" else (0.0, 0.0, kinds and is_persistent(op, device))
            for op in ops]
    return Losses(*(tuple(col) for col in zip(*rows)))
