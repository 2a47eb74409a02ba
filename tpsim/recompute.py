"""Activation recomputation, the Megatron-LM way (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", sections 4 and 5).

Works on the op lists of a :class:`tpsim.graph.OpBuilder` once forward and backward are built:

- ``none``: nothing changes; every forward op keeps what its backward needs (``saved_bytes``).
- ``full``: the layer checkpoints only its input; its backward first re-runs the whole forward,
  forward TP collectives included, then differentiates. Saved per layer:
  bytes_per_element * s * b * h (/ t with sequence parallelism, whose layer input is sharded),
  Korthikanti's 2sbh in 16-bit. The recomputed layer's activations live only during its own
  backward (one layer's worth, not counted here, as Korthikanti's 2sbhL does not).
- ``selective``: only the attention core of the unfused path is recomputed (QK^T, scale + mask +
  softmax, attention dropout, AV), the ops whose outputs make the 5 a s^2 b / t term; q, k and v
  (the core's input) stay saved. Per layer in 16-bit, with dropout: s b h (10 + 24/t) without
  sequence parallelism (Korthikanti eq. 6; with SP tpsim keeps the gathered input of each
  column-parallel GEMM, s b h (4 + 30/t), where Korthikanti re-gathers it for 34/t). Fused
  (flash) attention already recomputes the scores in its backward and saves no s^2 term, so
  ``selective`` with fused attention is the same as ``none``.

Each recomputed op is a copy of its forward op named ``rcp.<name>`` (``rcp.qkv``,
``rcp.proj.all-reduce``) in phase "backward", with the forward's data edges between the copies.
Backward ops read the copies instead of the forward ops (their ``forward_of`` still names the
forward op, which they reach through the copies); the copies start once the gradient reaches
the checkpoint: after the forward's last op (full) or the ops feeding the core's backward
(selective). Copies carry ``recomputes`` (the forward op's name): their FLOPs are hardware
FLOPs, not model FLOPs.
"""
from __future__ import annotations

RECOMPUTE = ("none", "selective", "full")
SELECTIVE_OPS = ("fwd.attn.scores", "fwd.attn.softmax", "fwd.attn.dropout", "fwd.attn.av")
PREFIX = "rcp."


def recomputed_name(name: str) -> str:
    """``fwd.qkv`` -> ``rcp.qkv``."""
    return PREFIX + name.split(".", 1)[1]


def apply_recompute(B, mode: str) -> None:
    """Rewrite the builder ``B``'s nodes and edges for ``mode`` (see the module docstring)."""
    if mode not in RECOMPUTE:
        raise ValueError(f"recompute must be one of {RECOMPUTE}, not {mode!r}")
    forward = [n for n, a in B.nodes if a["phase"] == "forward"]
    if mode == "none" or not forward:
        return
    if mode == "full":
        attrs = dict(B.nodes)
        for n in forward:        # only the layer input stays: the first op reads it
            attrs[n]["saved_bytes"] = 0.0
        attrs[forward[0]]["saved_bytes"] = float(B.d.Tn * B.d.h * B.d.bpe)
        _recompute(B, forward, start_after=(forward[-1],))
        return
    region = [n for n in forward if n in SELECTIVE_OPS]
    if not region:               # fused attention, or no attention block: nothing to recompute
        return
    attrs = dict(B.nodes)
    for n in region:             # the s^2 tensors (probabilities, dropout mask and output) go
        if n in ("fwd.attn.softmax", "fwd.attn.dropout"):
            attrs[n]["saved_bytes"] = 0.0
    entry = "bwd.attn.av.dprobs"  # the core's backward begins here, once its gradient exists
    start = tuple(u for u, v, _ in B.edges if v == entry and attrs[u]["phase"] == "backward")
    _recompute(B, region, start_after=start)


def _recompute(B, region: list[str], start_after: tuple[str, ...]) -> None:
    """Copy the ``region`` ops as ``rcp.`` ops before the first backward op that needs them;
    backward edges out of the region come from the copies instead."""
    inside = set(region)
    attrs = dict(B.nodes)
    copies = []
    for n in region:
        a = {**attrs[n], "name": recomputed_name(n), "phase": "backward", "saved_bytes": 0.0,
             "time_s": None, "recomputes": n}
        copies.append((a["name"], a))
    edges, first_user = [], None
    index = {n: i for i, (n, _) in enumerate(B.nodes)}
    for u, v, e in B.edges:
        if u in inside and v in inside:
            edges.append((u, v, e))
            edges.append((recomputed_name(u), recomputed_name(v), e))
        elif v in inside:        # a saved input of the region (selective: q, k, v) feeds the copy too
            edges.append((u, v, e))
            edges.append((u, recomputed_name(v), e))
        elif u in inside and attrs[v]["phase"] == "backward":
            edges.append((recomputed_name(u), v, e))
            first_user = v if first_user is None or index[v] < index[first_user] else first_user
        else:
            edges.append((u, v, e))
    fed = {v for u, v, _ in B.edges if u in inside and v in inside}
    edges += [(s, recomputed_name(n), {"dep": "data"}) for n in region if n not in fed
              for s in start_after]
    at = index[first_user] if first_user is not None else len(B.nodes)
    B.nodes[at:at] = copies
    B.edges = edges
