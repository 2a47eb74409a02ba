"""Put a time on every op, from the cost models; each time names the function that priced it.

| op | priced by |
| --- | --- |
| :class:`~tpsim.layer.ops.Gemm` | :func:`tpsim.cost.compute.gemm_time`; with ``streams``, :func:`tpsim.cost.compute.grouped_gemm_time` |
| :class:`~tpsim.layer.ops.Attention` | :func:`tpsim.cost.compute.attention_time`, on the FLOPs the flash kernel executes (:func:`tpsim.cost.compute.attention_exec_flops`); on a device listing no attention kernel, every (query, key) pair, masked or not (its per-head GEMMs skip no tile); a sliding window W runs the kernel's loop over min(seq_kv, W) keys (:attr:`~tpsim.layer.ops.Attention.keys`) and its edge tiles, x (1 + causal_block / W) FLOPs at the efficiency of the W + causal_block keys a query tile streams, an op standing for banded and full layers costs their share-weighted mean; with attention dropout inside the kernel (``dropout``), :func:`tpsim.cost.attention_dropout.dropout_attention_time` |
| :class:`~tpsim.layer.ops.MemoryBound` | :func:`tpsim.cost.compute.elementwise_time` |
| :class:`~tpsim.layer.ops.CastTranspose` | :func:`tpsim.cost.compute.cast_transpose_time` |
| :class:`~tpsim.layer.ops.StochasticCast` | :func:`tpsim.cost.compute.stochastic_cast_time` |
| :class:`~tpsim.layer.ops.DecodeAttention` | :func:`tpsim.cost.compute.decode_attention_time` |
| :class:`~tpsim.layer.ops.Collective` | :func:`tpsim.cost.collectives.collective_time` on its group's placement: the algorithm it picks names its function (``ring_time``, ``tree_time``, ``hierarchical_time``, ``nvls_time``) |
| :class:`~tpsim.layer.ops.SendRecv` | :func:`tpsim.cost.collectives.send_recv_time` |
| :class:`~tpsim.layer.ops.Dispatch` | :func:`tpsim.cost.all_to_all.flex_dispatch_time` on its group's placement |

A :class:`Pricing` holds what prices need besides the op: the topology (device, levels) and the
job's :class:`~tpsim.spec.parallel.Parallelism`, which names the ranks of each op's process group.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..base.formula import qualname
from ..base.memo import Memo
from ..cost import collectives
from ..cost.all_to_all import flex_dispatch_time
from ..cost import compute
from ..cost.attention_dropout import dropout_attention_time
from ..cost.collectives import CollectiveCost
from ..layer.ops import (Attention, CastTranspose, Collective, DecodeAttention, Dispatch, Gemm,
                         MemoryBound, SendRecv, StochasticCast)
from ..spec.parallel import Group, Parallelism
from ..cluster.power import COMPUTE_ACTIVITY
from ..cluster.sustained import at_clock, kernel_draw, with_device
from ..cluster.topology import Topology


FORMULAS = {Gemm: qualname(compute.gemm_time), Attention: qualname(compute.attention_time),
            MemoryBound: qualname(compute.elementwise_time),
            CastTranspose: qualname(compute.cast_transpose_time),
            StochasticCast: qualname(compute.stochastic_cast_time),
            DecodeAttention: qualname(compute.decode_attention_time)}
GROUPED = qualname(compute.grouped_gemm_time)
DROPOUT = qualname(dropout_attention_time)


@dataclass(frozen=True, eq=False)
class Pricing:
    """The topology and parallelism every op of a prediction is priced on; ``subgroups``:
    groups by a name of their own, parts of a parallelism's group (context parallelism's
    all-to-all and ring of a2a+p2p: :func:`tpsim.layer.context_parallel.subgroups`)."""
    topology: Topology
    parallelism: Parallelism
    _groups: dict = field(default_factory=dict, repr=False)
    subgroups: dict = field(default_factory=dict)

    def group(self, name: str, first: int = 0) -> Group:
        key = (name, first)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = self.subgroups[name] if name in self.subgroups else \
                self.parallelism.group(name, first)
        return g


_COLLECTIVES = Memo("collective prices", 4096)


def group_collective(op: str, nbytes: float, group: Group, topo: Topology) -> CollectiveCost:
    """:func:`~tpsim.cost.collectives.collective_time` on ``group``, memoised by value.

    The collective model is the costliest call in a prediction and a sweep asks it the same
    (op, size, group) on the same topology again and again (topologies hash by value).
    """
    return _COLLECTIVES.get((topo, op, nbytes, group), collectives.collective_time, op, nbytes,
                            group, topo)


def kernel_time(op, device) -> float:
    """Seconds of one compute kernel (Gemm, Attention, MemoryBound) on ``device``."""
    kind = type(op)
    if kind is Gemm and op.streams:
        return compute.grouped_gemm_time(op.m, op.n, op.k, device, op.dtype, op.batch,
                                         op.streams, op.accumulate)
    if kind is Gemm:
        return compute.gemm_time(op.m, op.n, op.k, device, op.dtype, op.batch, op.accumulate)
    if kind is MemoryBound:
        return compute.elementwise_time(op.nbytes, device, op.arith, op.elements, op.kernels)
    if kind is CastTranspose:
        return compute.cast_transpose_time(op.nbytes, device, op.kernels)
    if kind is StochasticCast:
        return compute.stochastic_cast_time(op.nbytes, device, op.kernels)
    if kind is DecodeAttention:
        return compute.decode_attention_time(op.nbytes, device, op.cuda_core_group, op.l2_bytes,
                                             op.instructions)
    if op.window and op.windowed < 1:   # the layers it stands for: banded and full
        band, full = (kernel_time(replace(op, window=w, windowed=1.0), device)
                      for w in (op.window, 0))
        return op.windowed * band + (1 - op.windowed) * full
    kernel = _attention_kernel(op, device)
    flops = executed_flops(op, device)
    keys = op.keys
    if kernel is not None and op.causal and op.keys < op.seq_kv:
        # a band's query tile streams the keys it executes, its window's W and the edge
        # tiles' causal_block: the tile's fixed work is spread over W + causal_block keys
        keys = min(op.seq_kv, op.keys + kernel.causal(op.backward)[1])
    timer = dropout_attention_time if op.dropout else compute.attention_time
    return timer(flops, op.bytes, op.seq_q, keys, op.head_dim, device, op.dtype, op.backward,
                 op.kernel, op.causal)


def _attention_kernel(op, device):
    return device.attention_kernels[op.kernel or device.attention_kernel] \
        if device.attention_kernels else None


def executed_flops(op, device) -> float:
    """The FLOPs a Gemm or Attention kernel runs on its tensor cores: a GEMM's 2mnk a product;
    a fused attention kernel's :func:`tpsim.cost.compute.attention_exec_flops`, on a device
    listing none every (query, key) pair, masked or not (its per-head GEMMs skip no tile: the
    mask discards what they computed; the causal pairs over the square's efficiency made a
    one-token-longer prompt faster); an op standing for banded and full layers, their
    share-weighted mean."""
    if type(op) is Gemm:
        return op.executed_flops
    if op.window and op.windowed < 1:
        band, full = (executed_flops(replace(op, window=w, windowed=1.0), device)
                      for w in (op.window, 0))
        return op.windowed * band + (1 - op.windowed) * full
    kernel = _attention_kernel(op, device)
    if kernel is None:
        return compute.attention_exec_flops(op.full_flops, False, op.backward)
    return compute.attention_exec_flops(op.flops, op.causal, op.backward, op.keys,
                                        kernel.causal(op.backward)[1], op.full_flops)


_KERNELS = Memo("kernel prices", 8 * 4096)


def price(op, pricing: Pricing) -> tuple[float, str, CollectiveCost | None]:
    """(seconds, the pricing function's dotted name, the CollectiveCost of a comm op or None).

    Kernel times are memoised per (device, op), both by value: a sweep or a search prices the
    same GEMM shapes again and again."""
    kind = type(op)
    formula = GROUPED if kind is Gemm and op.streams else \
        DROPOUT if kind is Attention and op.dropout else FORMULAS.get(kind)
    if formula is not None:
        dev = pricing.topology.device
        return _KERNELS.get((dev, op), kernel_time, op, dev), formula, None
    if kind is Collective:
        cost = group_collective(op.op, op.nbytes, pricing.group(op.group), pricing.topology)
    elif kind is SendRecv:
        g = pricing.group(op.group)
        pair = Group(op.group, 2, g.stride, op.src * g.stride, g.world) if op.src >= 0 else \
            Group(op.group, 2, (g.size - 1) * g.stride, g.first, g.world)   # the ring's wrap
        cost = collectives.send_recv_time(op.nbytes, pricing.topology.place(pair),
                                          pricing.topology)
    elif kind is Dispatch:
        topo = pricing.topology
        cost = _COLLECTIVES.get((topo, op, op.group, pricing.group(op.group)), flex_dispatch_time,
                                op.tokens, op.token_bytes, op.experts, op.top_k,
                                topo.place(pricing.group(op.group)), topo, op.backend,
                                op.probs, op.routing)
    else:
        raise TypeError(f"no cost function for {op!r}")
    return cost.time_s, cost.formula, cost


def price_ops(ops, pricing: Pricing) -> tuple[list[float], list[str], list]:
    """Times, formula names and collective costs of ``ops``, in order."""
    times, formulas, costs = [], [], []
    for op in ops:
        t, f, c = price(op, pricing)
        times.append(t)
        formulas.append(f)
        costs.append(c)
    return times, formulas, costs


MIN_CLOCK = 0.3     # the window clock's search floor, a share of boost (below any fitted clock)
CLOCK_TOL = 1e-7    # the window clock's bisection stops within this share of boost
_WINDOW_CLOCKS = Memo("window clocks", 1024)


def window_pricing(template, dims, pricing: Pricing) -> Pricing:
    """``pricing`` on the device of :func:`window_clock` where its ``clock_window`` is
    ``step`` (:mod:`tpsim.cluster.sustained`: every tensor kernel of the layer at the clock
    of the layer's mean draw); else ``pricing`` itself."""
    dev = pricing.topology.device
    clock = layer_clock(template, dims, dev)
    if clock is None:
        return pricing
    return Pricing(with_device(pricing.topology, at_clock(dev, clock)), pricing.parallelism,
                   subgroups=pricing.subgroups)


def layer_clock(template, dims, device) -> float | None:
    """The one clock, a share of boost, every tensor kernel of ``template`` at ``dims`` runs
    at on ``device`` (a :func:`~tpsim.cluster.sustained.sustained` one) where its
    ``clock_window`` is ``step``: :func:`window_clock` of the layer's ops, memoised; None
    where each kernel keeps its own (:func:`~tpsim.cluster.sustained.kernel_clock`)."""
    if device.clock_window != "step" or device.sustained_utilisation is None \
            or device.sustained_clock != 1.0:
        return None
    ops = template.at(dims)[0]
    return _WINDOW_CLOCKS.get((template, dims, device), window_clock, ops, device)


def window_clock(ops, device) -> float:
    """The one clock c, a share of boost, at which the compute kernels among ``ops`` draw the
    power limit on average over their time (:mod:`tpsim.cluster.sustained`):
    sum t_i(c) d_i(c) / sum t_i(c) = 1, d_i :func:`~tpsim.cluster.sustained.kernel_draw` for
    a Gemm or Attention (u_i = executed FLOPs / (t_i peak at c)), ``COMPUTE_ACTIVITY`` for
    the others (the layer's elementwise kernels, as the energy model counts them), t_i(c) :func:`kernel_time` on :func:`~tpsim.cluster.sustained.at_clock`;
    1 where the mean at boost is below the limit, ``MIN_CLOCK`` where even there it is above.
    The mean grows with c (tensor kernels' t d ~ c^2, their time ~ 1 / c): bisection to
    ``CLOCK_TOL`` (numpy and the standard library only: predicting needs no scipy)."""
    kernels = [op for op in ops if type(op) in FORMULAS]

    def excess(clock: float) -> float:
        dev = at_clock(device, clock)
        busy = drawn = 0.0
        for op in kernels:
            t = _KERNELS.get((dev, op), kernel_time, op, dev)
            busy += t
            if type(op) in (Gemm, Attention):
                u = executed_flops(op, dev) / (t * dev.peak(op.dtype))
                drawn += t * kernel_draw(device, u, op.dtype, clock)
            else:
                drawn += t * COMPUTE_ACTIVITY
        return drawn / busy - 1.0 if busy else -1.0
    if excess(1.0) <= 0.0:
        return 1.0
    if excess(MIN_CLOCK) >= 0.0:
        return MIN_CLOCK
    lo, hi = MIN_CLOCK, 1.0
    while hi - lo > CLOCK_TOL:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if excess(mid) >= 0.0 else (mid, hi)
    return 0.5 * (lo + hi)
