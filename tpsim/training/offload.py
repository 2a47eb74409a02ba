"""Activation offloading: the saved activations of the first N layers go to host memory after
their forward and come back before their backward, as Megatron-core runs it
(``--cpu-offloading --cpu-offloading-num-layers N``: ``TransformerBlock`` wraps each layer's
forward in Transformer Engine's ``get_cpu_offload_context(num_layers=N, model_layers=L)``).

Transformer Engine's default schedule (transformer_engine/pytorch/cpu_offload.py,
``DefaultOffloadSynchronizer``; docs/features/other_optimizations/cpu_offloading): layers
0 .. N-1 are offloaded; layer i's copy to the host starts on a side stream when layer i + 1's
forward starts and must end before layer L - N + i's forward starts (the compute waits for it
there); its copy back starts before layer L - 1 - N + i's backward and must end before its own.
So at most L - N layers' activations are on the GPU at once: the saved activations of a layer,
A bytes per micro-batch (the op graph's ``saved_bytes``), are held (L - N) A on the GPU and
N A on the host (:func:`offloaded_bytes`).

Time: each copy takes c = A / B on the device's host link (``host_link_Bps``, per direction:
PCIe or NVLink-C2C), one copy at a time per direction. With w = L - N >= 2 layers on the GPU a
copy hides behind the next w - 1 layers' compute; once c exceeds a layer's forward f the copies
run back to back from the end of layer 0 and the last layer waits for the last copy:

    exposed forward = max(0, N c - (L - 2) f)        (w >= 2; 0 when N c <= (L - 2) f)
    exposed forward = N c                            (w = 1: no copy overlaps any compute)

and the same for the copies back with the layer's backward b (:func:`exposed_s`). The exposure
is spread evenly over the layers (its total is exact, where in the step it falls is not), and
the copies' own HBM traffic beside the compute is not modelled. A model with MoE layers prices
each kind of layer as if all were of that kind.

Megatron-core refuses offloading with pipeline parallelism, with activation recomputation and
for all L layers (``TransformerConfig.__post_init__``): so does tpsim (:func:`check`; the first
two in :class:`~tpsim.spec.layout.Layout`).
"""
from __future__ import annotations

import dataclasses
import math

from ..base.errors import ConfigError
from .step import Part

FLAG = "--cpu-offload-layers"


def check(offloaded: int, layers: int, device) -> None:
    """A ConfigError naming --cpu-offload-layers unless ``offloaded`` is below the model's
    ``layers`` (Megatron-core's check) and the device gives its host link bandwidth."""
    if offloaded >= layers:
        raise ConfigError(FLAG, "", f"fewer than the model's {layers} layers", offloaded)
    if device.host_link_Bps is None:
        raise ConfigError(FLAG, "", "a device with host_link_bandwidth_GBps in its topology",
                          offloaded, f"{device.name} gives none")


def offloaded_bytes(layer_saved: float, offloaded: int) -> float:
    """Bytes on the host per GPU: N x A, the offloaded layers' saved activations of one
    micro-batch."""
    return offloaded * layer_saved


def copy_s(layer_saved: float, bandwidth_Bps: float) -> float:
    """One layer's copy over the host link, one direction: c = A / B."""
    return layer_saved / bandwidth_Bps


def exposed_s(offloaded: int, layers: int, copy: float, compute: float) -> float:
    """Seconds the compute waits for N copies of ``copy`` s each beside L layers of ``compute``
    s each (module docstring): N c with one layer left on the GPU, else max(0, N c - (L - 2) f);
    0 without offloading."""
    if offloaded == 0:
        return 0.0
    if layers - offloaded == 1:
        return offloaded * copy
    return max(0.0, offloaded * copy - (layers - 2) * compute)


def offload_part(part: Part, offloaded: int, layers: int, bandwidth_Bps: float) -> Part:
    """One layer's :class:`~tpsim.training.step.Part` with N of the L layers offloaded, per
    layer: saved_bytes less N A / L (the L layers hold (L - N) A), and the exposed copies of
    both directions / L added to its forward_s and backward_s (and to offload_exposed_s); the
    same values for N = 0."""
    c = copy_s(part.saved_bytes, bandwidth_Bps)
    fwd = exposed_s(offloaded, layers, c, part.forward_s) / layers
    bwd = exposed_s(offloaded, layers, c, part.backward_s) / layers
    return dataclasses.replace(
        part, saved_bytes=part.saved_bytes - offloaded_bytes(part.saved_bytes, offloaded) / layers,
        forward_s=part.forward_s + fwd, backward_s=part.backward_s + bwd,
        offload_exposed_s=part.offload_exposed_s + fwd + bwd)


def offloaded_parts(parts: tuple, offloaded: int, layers: int, device) -> tuple[tuple, float]:
    """(layer, embedding, output, moe) parts with the layers' offloaded (:func:`offload_part`;
    the model's ends stay), and the bytes on the host per GPU (0 for N = 0)."""
    if offloaded:
        check(offloaded, layers, device)
    bw = device.host_link_Bps if offloaded else math.inf
    layer, emb, out, moe = parts
    host = offloaded_bytes(max(p.saved_bytes for p in (layer, moe) if p is not None), offloaded)
    return (offload_part(layer, offloaded, layers, bw), emb, out,
            moe and offload_part(moe, offloaded, layers, bw)), host


__all__ = ["check", "offloaded_bytes", "copy_s", "exposed_s",
           "offload_part", "offloaded_parts"]
