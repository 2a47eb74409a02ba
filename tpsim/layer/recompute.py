"""Activation recomputation, the Megatron-LM way (Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models", sections 4 and 5).

Works on the node and edge lists of a :class:`tpsim.layer.template.Builder` once forward and backward
are built:

- ``none``: nothing changes; every forward op keeps what its backward needs (``saved_bytes``).
- ``full``: the layer checkpoints only its input; its backward first re-runs the whole forward,
  forward TP collectives included, then differentiates. Saved per layer:
  bytes_per_element * s * b * h (/ t with sequence parallelism, whose layer input is sharded),
  Korthikanti's 2sbh in 16-bit. The recomputed layer's activations live only during its own
  backward (one layer's worth, not counted here, as Korthikanti's 2sbhL does not).
- ``selective``: only the attention core of the unfused path is recomputed (QK^T, scale + mask +
  softmax, attention dropout, AV; with Megatron's K/V repeat and context copy around them), the ops whose outputs make the 5 a s^2 b / t term; q, k and v
  (the core's input, k and v before the grouped-query repeat: T (q + 2 kv)) stay saved. Per layer in 16-bit, with dropout: s b h (10 + 24/t) without
  sequence parallelism (Korthikanti eq. 6; with SP tpsim keeps the gathered input of each
  column-parallel GEMM, s b h (4 + 30/t), where Korthikanti re-gathers it for 34/t). Fused
  (flash) attention already recomputes the scores in its backward and saves no s^2 term, so
  ``selective`` with fused attention is the same as ``none``. That is Megatron-core's default
  module, ``core_attn``; ``selective`` with other modules (``--recompute-modules``: mlp, moe,
  moe_act, layernorm, mla_up_proj, shared_experts) re-runs those
  (:mod:`tpsim.layer.recompute_modules`). Which layers recompute in full (Megatron's
  ``--recompute-method``) is the step's: :mod:`tpsim.training.partial_recompute`.
- ``op``: torchtitan's selective checkpointing by operation (``selective_ac_option = 'op'``,
  ``torchtitan/parallelisms/parallelize_llama.py`` at 9dec370: ``_save_list`` and
  ``_custom_policy``): the outputs of matmuls, SDPA and reduce-scatters are saved except every
  second matmul of the layer; everything else is recomputed when the backward reaches the
  layer. In a Llama layer the matmuls run wq, wk, wv, wo, w1, w3, w2, so wk, wo and w3 are
  recomputed: tpsim's fused qkv and fc1 GEMMs are recomputed in part (T x kv x h, T x f x h),
  the projection whole, and every elementwise kernel of the layer (norms, residual adds, the
  activation, and with ``--eager-kernels`` rope, the K/V copies and the output copy); the
  attention and the collectives are not. What stays between the forward and the backward is
  the checkpoint's input and the saved ops' outputs (:func:`op_saved_bytes`): the layer input,
  the outputs of wq, wv, w1 and w2, SDPA's output and log-sum-exp, and with sequence
  parallelism the two reduce-scatters'. The ops run on float8 tensors under torchao's Float8
  linears dispatch as ``aten.mm`` to the policy all the same (its save list keeps their
  ``abs``/``max`` for that reason), so the count is the same for both dtypes.

Each recomputed op is a copy of its forward op named ``rcp.<name>`` (``rcp.qkv``,
``rcp.proj.all-reduce``) in phase "backward", with the forward's data edges between the copies.
Backward ops read the copies instead of the forward ops (their ``forward_of`` still names the
forward op, which they reach through the copies); the copies start once the gradient reaches
the checkpoint: after the forward's last op (full) or the ops feeding the core's backward
(selective); a module that discards its output (``CheckpointWithoutOutput``) names the
backward ops that read it, which read the copies. Copies carry ``recomputes`` (the forward op's
name): their FLOPs are hardware FLOPs, not model FLOPs. A copy keeps its op's process group, so a recomputed collective on a
one-rank group disappears with the original.
"""
from __future__ import annotations

from dataclasses import replace

from ..spec.layout import RECOMPUTE, RECOMPUTE_MODES  # noqa: F401 - the modes, declared with the Layout
from .recompute_modules import apply_modules
from .unfused import core_inputs

DEFAULT_MODULES = ("core_attn",)     # Megatron-core's default for selective
# Megatron checkpoints DotProductAttention.forward: the K/V repeat, the core, the context copy
SELECTIVE_OPS = ("fwd.attn.repeat_kv.k", "fwd.attn.repeat_kv.v", "fwd.attn.scores",
                 "fwd.attn.softmax", "fwd.attn.dropout", "fwd.attn.av", "fwd.attn.contiguous")
# op: the elementwise kernels recomputed (by name prefix), and what each GEMM copy re-runs
OP_ELEMENTWISE = ("fwd.norm", "fwd.bias_dropout_add", "fwd.act", "fwd.rope", "fwd.repeat_kv",
                  "fwd.attn.contiguous")
OP_GEMMS = {"fwd.qkv": lambda d: (d.T, d.kv, d.h), "fwd.proj": lambda d: (d.T, d.h, d.q),
            "fwd.mlp_in": lambda d: (d.T, d.f, d.h)}
PREFIX = "rcp."
LSE_BYTES = 4       # SDPA's log-sum-exp: one fp32 per query row and head


def recomputed_name(name: str) -> str:
    """``fwd.qkv`` -> ``rcp.qkv``."""
    return PREFIX + name.split(".", 1)[1]


def _layer_input(d) -> float:
    """The checkpoint of full recomputation: the layer input, b*s*h (SP: b*s/tp*h) elements."""
    return d.Tn * d.h * d.bpe


def apply_recompute(B, mode: str, modules: tuple[str, ...] = DEFAULT_MODULES) -> None:
    """Rewrite the builder ``B``'s nodes and edges for ``mode`` (see the module docstring);
    ``selective`` re-runs ``modules`` (:mod:`tpsim.layer.recompute_modules`)."""
    if mode not in RECOMPUTE_MODES:
        raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, not {mode!r}")
    forward = [n.name for n in B.nodes if n.phase == "forward"]
    if mode == "none" or not forward:
        return
    if mode == "op":
        _recompute_ops(B, forward)
        return
    if mode == "full":       # only the layer input stays: the first op reads it
        B.nodes = [replace(n, saved=_layer_input if n.name == forward[0] else None)
                   if n.phase == "forward" else n for n in B.nodes]
        copy_region(B, forward, start_after=(forward[-1],))
        return
    if "core_attn" in modules:
        _core_attention(B, forward)
    apply_modules(B, tuple(m for m in modules if m != "core_attn"), copy_region)


def _core_attention(B, forward: list[str]) -> None:
    """The unfused attention core (module docstring's ``selective``)."""
    region = [n for n in forward if n in SELECTIVE_OPS]
    if "fwd.attn.scores" not in region:  # fused attention, or no attention block: nothing
        return
    # the s^2 tensors (probabilities, dropout mask and output) are no longer kept; the
    # checkpoint keeps q, k and v as they enter the core, before the grouped-query repeat
    B.nodes = [replace(n, saved=None) if n.name in ("fwd.attn.softmax", "fwd.attn.dropout")
               else replace(n, saved=lambda d, k=n.name: core_inputs(d)[k])
               if n.name in ("fwd.attn.scores", "fwd.attn.av") else n for n in B.nodes]
    entry = "bwd.attn.av.dprobs"   # the core's backward begins here, once its gradient exists
    phase = {n.name: n.phase for n in B.nodes}
    start = tuple(u for u, v, _ in B.edges if v == entry and phase[u] == "backward")
    copy_region(B, region, start_after=start)


def op_saved_bytes(d) -> float:
    """What ``op`` keeps of a layer (module docstring), bytes:

        bpe (Tn h + T (q + kv + f + h) + T q + [SP] 2 Tn h) + 4 b heads s

    the layer input, the outputs of the saved matmuls (wq, wv, w1, w2: the first, third, fifth
    and seventh ``aten.mm`` of the layer), SDPA's output and its fp32 log-sum-exp, the
    reduce-scatters' outputs (torchtitan's ``_save_list``, parallelize_llama.py at 9dec370)."""
    rs = 2 * d.Tn * d.h if d.sp else 0
    return (d.Tn * d.h + d.T * (d.q + d.kv + d.f + d.h) + d.T * d.q + rs) * d.bpe \
        + d.b * d.heads * d.s * LSE_BYTES


def _recompute_ops(B, forward: list[str]) -> None:
    """``op``: the elementwise kernels and the GEMMs of OP_GEMMS re-run from the layer's
    backward start, each GEMM copy at its recomputed share; the layer keeps
    :func:`op_saved_bytes` (module docstring)."""
    region = [n for n in forward if n in OP_GEMMS or n.startswith(OP_ELEMENTWISE)]
    if not region:
        return
    B.nodes = [replace(n, saved=op_saved_bytes if n.name == forward[0] else None)
               if n.phase == "forward" else n for n in B.nodes]
    copy_region(B, region, start_after=(forward[-1],))
    B.nodes = [replace(n, make=_gemm_share(n.make, OP_GEMMS[n.recomputes]))
               if n.recomputes in OP_GEMMS else n for n in B.nodes]


def _gemm_share(make, size):
    """A GEMM maker re-sized to ``size(d)`` -> (m, n, k), its dtype the original's."""
    def remake(d):
        m, n, k = size(d)
        return replace(make(d), m=m, n=n, k=k)
    return remake


def _copied_sync(sync: str | None, inside: set) -> str | None:
    """A recomputed op's sync: on the copy of the op it waits for (None: that op is not
    re-run, its end long past)."""
    return recomputed_name(sync) if sync in inside else None


def copy_region(B, region: list[str], start_after: tuple[str, ...] | None = None,
                readers: tuple[str, ...] = ()) -> None:
    """Copy the ``region`` ops as ``rcp.`` ops before the first backward op that needs them;
    backward edges out of the region come from the copies instead, and the backward
    ``readers`` of its output (what a discarded output's holders fed) read the copies of its
    last ops. The copies start after ``start_after`` (None: the backward inputs of their
    first user, or the forward's last op)."""
    inside = set(region)
    nodes = {n.name: n for n in B.nodes}
    copies = [replace(nodes[n], name=recomputed_name(n), phase="backward", saved=None,
                      recomputes=n, sync=_copied_sync(nodes[n].sync, inside)) for n in region]
    index = {n.name: i for i, n in enumerate(B.nodes)}
    feeds = {u for u, v, _ in B.edges if u in inside and v in inside}
    extra = [(recomputed_name(n), r, "data") for n in region if n not in feeds for r in readers]
    edges, first_user = [], min(readers, key=index.get, default=None)
    for u, v, kind in B.edges:
        if u in inside and v in inside:
            edges += [(u, v, kind), (recomputed_name(u), recomputed_name(v), kind)]
        elif v in inside:        # a saved input of the region (selective: q, k, v) feeds the copy too
            edges += [(u, v, kind), (u, recomputed_name(v), kind)]
        elif u in inside and nodes[v].phase == "backward":
            edges.append((recomputed_name(u), v, kind))
            first_user = v if first_user is None or index[v] < index[first_user] else first_user
        else:
            edges.append((u, v, kind))
    if start_after is None:
        start_after = _inputs_of(B, first_user, inside)
    fed = {v for u, v, _ in B.edges if u in inside and v in inside}
    edges += [(s, recomputed_name(n), "data") for n in region if n not in fed
              for s in start_after] + extra
    at = index[first_user] if first_user is not None else len(B.nodes)
    B.nodes[at:at] = copies
    B.edges = edges


def _inputs_of(B, user: str | None, inside: set) -> tuple[str, ...]:
    """The backward inputs of ``user`` outside the region (none: the forward's last op)."""
    phase = {n.name: n.phase for n in B.nodes}
    start = tuple(dict.fromkeys(u for u, v, _ in B.edges if v == user and u not in inside
                                and phase[u] == "backward"))
    return start or ([n.name for n in B.nodes if n.phase == "forward"][-1],)
