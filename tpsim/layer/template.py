"""An op graph as a template: its structure built once per set of switches, its ops re-made for
each size.

A transformer layer's *structure* (which ops, in which order, on which stream, depending on
which) is fixed by a few switches: sequence parallelism, the attention kernel, the activation,
dropout, recomputation, which process groups have more than one rank. Its *sizes* (micro-batch,
sequence, widths per rank, dtype) only change each op's dimensions. A :class:`Builder` records
each op as a function of the sizes (:class:`~tpsim.layer.graph.Dims`); :meth:`Builder.compile` fixes the
structure once into a :class:`Template` of index arrays, and :meth:`Template.ops` makes the typed
ops (:mod:`tpsim.layer.ops`) for any sizes. The ``networkx.DiGraph`` of a layer (the public graph:
critical paths, traces, tests) is exported from a template on demand (:meth:`Template.digraph`),
so predicting never pays for networkx.

A collective on a process group of one rank is no op: :meth:`Builder.compile` removes it and
wires its inputs to its consumers, so a TP degree of 1 has no collectives without any special
case in the layer's construction.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from ..base.record import record
from ..base.memo import Memo
from .ops import Collective, Gemm, MemoryBound, Op

DATA = "data"


@record
class Node:
    """One op of a template: its name and place in the layer, and how to make it for given sizes.

    ``make(dims)`` returns the op; ``saved(dims)`` the bytes of activations a forward op keeps
    for the backward (None: nothing); ``forward_of``: the forward op a backward op
    differentiates; ``recomputes``: the forward op a ``rcp.`` copy re-runs; ``group``: the
    process group of a collective; ``host_ops``: 1 for an op the framework dispatches, 0 for a
    kernel another op's call launches (Transformer Engine's GEMM chunks and their transfers);
    ``sync``: the op whose end the host waits for before it issues this one (a device-to-host
    synchronisation, :func:`tpsim.sim.schedule.run`; None: none); ``launches(dims)``: the
    kernels its host call launches from a C++ loop beside its one dispatched op (Transformer
    Engine's one cuBLAS call and one quantize call per expert, the softmax's PyTorch fallback:
    :mod:`tpsim.sim.launches`; None: none counted); ``loop_ops(dims)``: the bare torch calls a Python loop over the
    local experts makes beside it, each priced as a launch (Transformer Engine's and
    Megatron-core's per-expert Python: :mod:`tpsim.layer.moe_loops`, :mod:`tpsim.sim.launches`;
    None: none).
    """
    name: str
    phase: str
    block: str
    stream: str
    make: Callable
    saved: Callable | None = None
    forward_of: str | None = None
    recomputes: str | None = None
    group: str | None = None
    host_ops: int = 1       # ops the host dispatches for it (0: launched inside another op's call)
    sync: str | None = None  # the op the host waits for before issuing this one
    launches: Callable | None = None   # dims -> kernels launched from C++ inside its call
    loop_ops: Callable | None = None   # dims -> Python-level calls of a per-expert loop


def _flat(deps):
    """Dependency names with nested tuples spread and None dropped."""
    for dep in deps:
        if isinstance(dep, tuple):
            yield from _flat(dep)
        elif dep is not None:
            yield dep


def _one_call(dims) -> int:
    return 1


# an op that is one bare torch call, no module's dispatch: no host op, one call priced as a
# launch (:mod:`tpsim.sim.launches`); Builder.eltwise(..., **BARE_CALL)
BARE_CALL = {"host_ops": 0, "loop_ops": _one_call}


class Builder:
    """Collects nodes (in program order: the order each stream runs them) and the data edges
    from each node's ``deps`` (names)."""

    def __init__(self, sp: bool = False, fp8: str = "", tp_overlap: int = 0):
        """``sp``: sequence parallelism; ``fp8``: the quantized linears' quantizer
        (:func:`tpsim.spec.precision.quantizer`; "": none); ``tp_overlap``: the TP degree
        when TP communication overlaps the GEMMs (0: it does not)."""
        self.sp, self.fp8 = sp, fp8
        self.eager = False     # PyTorch eager's elementwise kernels (tpsim.layer.eager)
        self.rope = False      # Megatron-core's unfused RoPE (tpsim.layer.rope)
        self.clamp = False     # the experts' clamped GLU inputs (tpsim.layer.moe_clamp)
        self.expert_bias = False   # the MoE slot's experts have biases (tpsim.layer.moe_bias)
        self.load_balancing = "none"   # the MoE router's auxiliary loss (tpsim.layer.moe_host)
        self.permute_fusion = True     # TE's fused MoE permutation (tpsim.layer.moe_permute)
        self.permute_into = False      # HybridEP's, inside its kernels (tpsim.layer.moe_flex)
        self.router_fusion = True      # the router's fused top-k (tpsim.layer.moe_router)
        self.router_dtype = None       # the router's own dtype (tpsim.layer.router_dtype)
        self.async_dgrad = True    # TP all-reduce of dX beside wgrad (tpsim.layer.linears)
        self.grad_fusion = True    # wgrad accumulates into the main gradient (the same)
        self.qk_norm = False   # an RMSNorm on each head's query and key (tpsim.layer.qk_norm)
        self.mla_eager = False     # MLA's rope and concatenations eager (tpsim.layer.mla_eager)
        self.tp_overlap = self.tp = tp_overlap
        self.phase = "forward"
        self.block = ""
        self.nodes: list[Node] = []
        self.edges: list[tuple[str, str, str]] = []

    def add(self, name, make, stream="compute", deps=(), saved=None, forward_of=None,
            group=None, host_ops=1, sync=None, launches=None, loop_ops=None) -> str:
        self.nodes.append(Node(name, self.phase, self.block, stream, make, saved, forward_of,
                               None, group, host_ops, sync, launches, loop_ops))
        self.edges += [(dep, name, DATA) for dep in _flat(deps)]
        if forward_of is not None:
            self.edges.append((forward_of, name, DATA))
        return name

    def gemm(self, name, size, deps=(), saved=None, forward_of=None, linear=False,
             host_ops=1, launches=None, loop_ops=None, dtype=None) -> str:
        """``size(d)`` -> (m, n, k[, batch[, accumulate[, causal]]]): (m x k) @ (k x n) (see
        :class:`~tpsim.layer.ops.Gemm`), in the activations' dtype, or for a ``linear`` layer's GEMM
        in ``d.gemm_dtype``, or in ``dtype`` where given (the router's: tpsim.layer.router_dtype)."""
        def make(d):
            m, n, k, *rest = size(d)
            return Gemm(m, n, k, dtype or (d.gemm_dtype if linear else d.dtype), *rest)
        return self.add(name, make, "compute", deps, saved, forward_of, host_ops=host_ops,
                        launches=launches, loop_ops=loop_ops)

    def eltwise(self, name, size, deps=(), saved=None, forward_of=None,
                kind=lambda d: MemoryBound, arith=lambda d: "", sync=None,
                launches=None, host_ops=1, loop_ops=None, kernels=None) -> str:
        """``size(d)`` -> (rows, cols, nbytes): a memory-bound kernel over a rows x cols tensor;
        ``kind(d)``: its op class (:class:`~tpsim.layer.ops.MemoryBound` or a subclass);
        ``arith(d)``: its per-element arithmetic (:attr:`~tpsim.layer.ops.MemoryBound.arith`);
        ``kernels(d)``: the kernels it runs (:attr:`~tpsim.layer.ops.MemoryBound.kernels`;
        None: one)."""
        def make(d):
            rows, cols, nbytes = size(d)
            return kind(d)(nbytes, (rows, cols), arith(d), kernels(d) if kernels else 1)
        return self.add(name, make, "compute", deps, saved, forward_of, host_ops=host_ops,
                        sync=sync, launches=launches, loop_ops=loop_ops)

    def collective(self, name, op, deps=(), forward_of=None, size=None, group="tp",
                   host_ops=1, sync=None, launches=None, sms=0) -> str:
        """``op`` on ``group``; by default of the (b*s, h) activation, b*s*h*bytes_per_element.
        ``size(d)`` -> (nbytes, dims, dtype) for anything else; ``launches``: as
        :class:`Node`'s (a collective another op's C++ call issues); ``sms``: as
        :class:`~tpsim.layer.ops.Collective`'s."""
        def make(d):
            if size is None:
                return Collective(op, d.T * d.h * d.bpe, group, (d.T, d.h), d.dtype, sms)
            nbytes, dims, dtype = size(d)
            return Collective(op, nbytes, group, dims, dtype, sms)
        return self.add(name, make, "comm", deps, None, forward_of, group, host_ops, sync,
                        launches)

    def compile(self, group_sizes: dict[str, int], **attrs) -> Template:
        """Fix the structure: drop collectives on one-rank groups, index every node and edge."""
        nodes, edges = list(self.nodes), list(self.edges)
        for name in [n.name for n in nodes if n.group and group_sizes.get(n.group, 1) == 1]:
            node = next(n for n in nodes if n.name == name)
            ins = [(u, k) for u, v, k in edges if v == node.name]
            outs = [(v, k) for u, v, k in edges if u == node.name]
            edges = [e for e in edges if node.name not in e[:2]]
            edges += [(u, v, k) for u, _ in ins for v, k in outs]
            nodes = _moved_syncs(nodes, node, ins)
        return Template.from_nodes(tuple(nodes), edges, attrs)


def _moved_syncs(nodes: list, node: Node, ins) -> list:
    """``nodes`` without ``node`` (a collective on a one-rank group): a sync it carried moves
    to the op issued after it, a sync on it to its first input (the host still waits there)."""
    i = nodes.index(node)
    out = [replace(n, sync=ins[0][0] if ins else None) if n.sync == node.name else n
           for n in nodes[:i] + nodes[i + 1:]]
    if node.sync is not None and i < len(out) and out[i].sync is None:
        out[i] = replace(out[i], sync=node.sync)
    return out


@dataclass(frozen=True, eq=False)
class Template:
    """The fixed structure of an op graph: nodes in issue order, edges as index tuples.

    Nodes are in program (issue) order, every node after its inputs; ``preds[i]``/``succs[i]``:
    distinct predecessors/successors of node i; ``streams``: the stream names in sorted order,
    ``stream_of[i]`` an index into them.
    """
    nodes: tuple[Node, ...]
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    edge_kinds: dict
    streams: tuple[str, ...]
    stream_of: tuple[int, ...]
    attrs: dict
    names: tuple[str, ...] = ()
    node_streams: tuple[str, ...] = ()    # stream name of each node
    forward: tuple[int, ...] = ()         # nodes of the forward phase
    host_ops: tuple[int, int] = (0, 0)    # ops the host dispatches: forward, backward
    syncs: tuple[tuple[int, int], ...] = ()   # (op the host waits for, op it then issues)
    _memo: Memo = field(default_factory=lambda: Memo("template ops", 256), repr=False)

    @classmethod
    def from_nodes(cls, nodes, edges, attrs) -> Template:
        index = {n.name: i for i, n in enumerate(nodes)}
        preds = [dict() for _ in nodes]       # dicts: distinct, in insertion order
        succs = [dict() for _ in nodes]
        kinds = {}
        for u, v, kind in edges:
            i, j = index[u], index[v]
            if i >= j:
                raise ValueError(f"the op graph has a cycle or an op issued before its input: "
                                 f"{v} needs {u}")
            preds[j][i] = succs[i][j] = None
            kinds[(i, j)] = kind
        streams = tuple(sorted({n.stream for n in nodes}))
        return cls(nodes, tuple(map(tuple, preds)), tuple(map(tuple, succs)), kinds, streams,
                   tuple(streams.index(n.stream) for n in nodes), dict(attrs),
                   tuple(n.name for n in nodes), tuple(n.stream for n in nodes),
                   tuple(i for i, n in enumerate(nodes) if n.phase == "forward"),
                   (sum(n.host_ops for n in nodes if n.phase == "forward"),
                    sum(n.host_ops for n in nodes if n.phase != "forward")),
                   tuple((index[n.sync], j) for j, n in enumerate(nodes)
                         if n.sync is not None and index.get(n.sync, j) < j))

    def ops(self, dims) -> tuple[Op, ...]:
        """Every node's op at ``dims``, memoised per sizes (a sweep asks for the same ones)."""
        return self.at(dims)[0]

    def at(self, dims) -> tuple[tuple[Op, ...], float, float]:
        """(ops, model FLOPs, hardware FLOPs) at ``dims``: the ops' conventional FLOPs summed
        without and with the recomputed (``rcp.``) copies. Memoised per sizes."""
        return self._memo.get(dims, self._at, dims)

    def _at(self, dims) -> tuple[tuple[Op, ...], float, float]:
        ops = tuple(n.make(dims) for n in self.nodes)
        model = sum(op.flops for n, op in zip(self.nodes, ops) if n.recomputes is None)
        return ops, model, sum(op.flops for op in ops)

    def saved_bytes(self, dims) -> float:
        """Activations the forward ops keep for the backward, bytes."""
        return sum(n.saved(dims) for n in self.nodes if n.saved is not None)

    def digraph(self, dims, **graph_attrs):
        """The structure at ``dims`` as a ``networkx.DiGraph``: one node per op (attribute
        ``op``, the typed op, plus name, kind, phase, stream, block, forward_of, recomputes,
        saved_bytes), edges with ``dep`` = data."""
        import networkx as nx
        g = nx.DiGraph(dims=dims, **self.attrs, **graph_attrs)
        for node, op in zip(self.nodes, self.ops(dims)):
            g.add_node(node.name, op=op, name=node.name, kind=op.kind, phase=node.phase,
                       stream=node.stream, block=node.block, forward_of=node.forward_of,
                       recomputes=node.recomputes,
                       saved_bytes=float(node.saved(dims)) if node.saved else 0.0)
        names = self.names
        g.add_edges_from((names[i], names[j], {"dep": k}) for (i, j), k in self.edge_kinds.items())
        return g
