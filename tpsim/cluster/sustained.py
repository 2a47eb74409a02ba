"""The tensor-core rate a training step sustains, against the one a kernel benchmark measures.

The GEMM and attention efficiencies of a device (:mod:`tpsim.cost.compute`) are fitted on short
kernel benchmarks, which run at the boost clock before the board reaches its power limit. A
training step keeps the tensor cores busy for seconds: the board sits at its power limit
(``tdp_W``) and the driver lowers the SM clock until the draw fits under it (``nvidia-smi -q``
reports the SW Power Cap as the clock's throttle reason; NVIDIA's datasheet peaks are at the
boost clock). Dynamic power grows with the clock and the square of the voltage, which falls
with it, so the clock falls until f V(f)^2 fits; a compute-bound kernel's rate falls with the
clock. tpsim states that sustained clock as a share of the benchmark's:

    peak_step[dtype] = peak[dtype] * sustained_clock

for every GEMM and attention kernel of a training step (memory-bound kernels are priced on the
memory bandwidth, which the HBM clock keeps). ``sustained_clock`` is a device parameter,
fitted on whole training steps (its YAML comment names them), 1 where no step was fitted.
Serving and the single-layer harness (``predict_block``) keep the benchmark's rate: their
kernels run in bursts shorter than the board's power-limit controller reacts to.
"""
from __future__ import annotations

import dataclasses

from ..base.memo import Memo
from .topology import Topology

_SUSTAINED = Memo("sustained topologies", 256)


def sustained(topo: Topology) -> Topology:
    """``topo`` with its device's peaks at the sustained clock (module docstring), its
    ``sustained_clock`` then 1: the topology a training step's kernels are priced on.
    Memoised by value: the same object for the same topology."""
    if topo.device.sustained_clock == 1.0:
        return topo
    return _SUSTAINED.get((topo, topo.path), _at_sustained_clock, topo)


def _at_sustained_clock(topo: Topology) -> Topology:
    dev = topo.device
    peaks = {dtype: rate * dev.sustained_clock for dtype, rate in dev.peak_flops.items()}
    device = dataclasses.replace(dev, peak_flops=peaks, sustained_clock=1.0)
    new = dataclasses.replace(topo, device=device)
    object.__setattr__(new, "path", topo.path)
    return new
