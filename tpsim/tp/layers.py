"""Tensor-parallel layers built from scratch on torch.distributed (Megatron-LM's split).

Layout is Megatron's ``(seq, batch, hidden)``; with sequence parallelism the input and output of
a block are split along seq, ``(seq/p, batch, hidden)``. Linears are bias-free, as the blocks
tpsim prices. Every weight shard equals a slice of one full-size weight made from the same seed
(:func:`full_weight`), so a single-device reference built from the full weights must agree.

    ColumnParallelLinear  Y = X A,  A = [A_1 ... A_p] split by output columns; rank r: Y_r = X A_r
    RowParallelLinear     Y = X A,  A = [A_1; ...; A_p] split by input rows, X = [X_1 ... X_p];
                          Y = sum_r X_r A_r  (all-reduce, or reduce-scatter with SP)
    ParallelMLP           column (h -> ffn[x2 for SwiGLU]) -> act -> row (ffn -> h)
    ParallelAttention     column QKV (heads/p query heads, kv_heads/p kv heads) -> causal SDPA
                          -> row output projection
    NaiveParallelMLP      the chapter's baseline: column fc1, all-gather, fc2 unsplit on every rank
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..base.errors import TpsimError
from ..base.memo import Memo
from . import mappings as m


class ShardingError(TpsimError, ValueError):
    """A tensor-parallel layer was built or called with sizes that cannot be split as asked."""


def _world(group) -> tuple[int, int]:
    """(tp size, this rank's index) in ``group``; (1, 0) without torch.distributed."""
    if not dist.is_available() or not dist.is_initialized():
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _divide(n: int, p: int, what: str) -> int:
    if n % p:
        raise ShardingError(f"{what} ({n}) is not divisible by the tensor-parallel size ({p})")
    return n // p


def full_weight(out_features: int, in_features: int, seed: int, dtype=torch.float32,
                device="cpu") -> torch.Tensor:
    """The full (out, in) weight every shard is cut from: N(0, 1/in), from ``seed`` on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=gen) / math.sqrt(in_features)
    return w.to(device=device, dtype=dtype)


def column_shard(full: torch.Tensor, parts: tuple[int, ...], p: int, r: int) -> torch.Tensor:
    """Rank r's rows of a full (out, in) weight stacked from ``parts`` (e.g. q, k, v sizes).

    Each part is split over the p ranks on its own, so rank r holds [Q_r; K_r; V_r].
    """
    pieces, start = [], 0
    for size in parts:
        local = size // p
        pieces.append(full[start + r * local: start + (r + 1) * local])
        start += size
    return torch.cat(pieces, dim=0)


class ColumnParallelLinear(torch.nn.Module):
    """Y = X A with A (in, out) split by output columns: rank r computes Y_r = X A_r (no bias).

    Input: (s, b, in), or (s/p, b, in) with ``sequence_parallel`` (all-gathered first, and again
    in the backward for the weight gradient: :func:`~tpsim.tp.mappings.sequence_parallel_linear`).
    Output: (s, b, out/p), or (s, b, out) with ``gather_output`` (all-gather along the last dim).
    ``parts`` lists the sub-matrices stacked in the full weight (default one): each is split
    over the ranks separately, as for fused QKV or SwiGLU's [gate; up].
    """

    def __init__(self, in_features: int, out_features: int, group=None, seed: int = 0,
                 parts: tuple[int, ...] | None = None, gather_output: bool = False,
                 sequence_parallel: bool = False, dtype=torch.float32, device="cpu"):
        super().__init__()
        p, r = _world(group)
        parts = tuple(parts or (out_features,))
        if sum(parts) != out_features:
            raise ShardingError(f"column parts {parts} do not add up to {out_features} outputs")
        for size in parts:
            _divide(size, p, "column-parallel output features")
        if gather_output and sequence_parallel:
            raise ShardingError("gather_output and sequence_parallel cannot be combined")
        self.group, self.in_features, self.out_features = group, in_features, out_features
        self.gather_output, self.sequence_parallel = gather_output, sequence_parallel
        self.output_size_per_partition = out_features // p
        full = full_weight(out_features, in_features, seed)
        self.weight = torch.nn.Parameter(
            column_shard(full, parts, p, r).to(device=device, dtype=dtype).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ShardingError(f"ColumnParallelLinear expects {self.in_features} input "
                                f"features (the full hidden size), got {x.shape[-1]}")
        if self.sequence_parallel:   # gathered to (s, b, in); only the shard is kept
            y = m.sequence_parallel_linear(x, self.weight, self.group)  # (s, b, out/p)
        else:
            x = m.copy_to_tensor_parallel_region(x, self.group)
            y = torch.matmul(x, self.weight.t())                        # (s, b, out/p)
        if self.gather_output:
            y = m.gather_from_tensor_parallel_region(y, self.group)     # (s, b, out)
        return y


class RowParallelLinear(torch.nn.Module):
    """Y = X A with A (in, out) split by input rows; X arrives split: Y = sum_r X_r A_r (no bias).

    Input: (s, b, in/p), already split (the chapter's pitfall 1: a full input is an error).
    Output: (s, b, out) after all-reduce, or (s/p, b, out) after reduce-scatter with SP.
    """

    def __init__(self, in_features: int, out_features: int, group=None, seed: int = 0,
                 sequence_parallel: bool = False, dtype=torch.float32, device="cpu"):
        super().__init__()
        p, r = _world(group)
        self.input_size_per_partition = _divide(in_features, p, "row-parallel input features")
        self.group, self.in_features, self.out_features = group, in_features, out_features
        self.sequence_parallel = sequence_parallel
        full = full_weight(out_features, in_features, seed)             # (out, in)
        local = self.input_size_per_partition
        self.weight = torch.nn.Parameter(
            full[:, r * local:(r + 1) * local].to(device=device, dtype=dtype).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size_per_partition:
            full = " (the full, unsplit input?)" if x.shape[-1] == self.in_features else ""
            raise ShardingError(f"RowParallelLinear expects its input split to "
                                f"{self.input_size_per_partition} features per rank, got "
                                f"{x.shape[-1]}{full}")
        y = torch.matmul(x, self.weight.t())                            # (s, b, out) partial
        if self.sequence_parallel:
            return m.reduce_scatter_to_sequence_parallel_region(y, self.group)
        return m.reduce_from_tensor_parallel_region(y, self.group)


def _check_pair(col: ColumnParallelLinear, row: RowParallelLinear, what: str) -> None:
    """Pitfall 3: the column output shard must be the row input shard."""
    width = col.output_size_per_partition // (2 if getattr(col, "swiglu", False) else 1)
    if width != row.input_size_per_partition:
        raise ShardingError(f"{what}: column-parallel output per rank ({width}) != row-parallel "
                            f"input per rank ({row.input_size_per_partition})")


def _activation(name: str, y: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(y)
    gate, up = y.chunk(2, dim=-1)                                       # local [gate_r | up_r]
    return F.silu(gate) * up


class ParallelMLP(torch.nn.Module):
    """MLP(X) = act(X W1) W2: W1 column-parallel, W2 row-parallel; one all-reduce each way.

    SwiGLU: W1 = [W_gate; W_up] (2*ffn outputs, each split over ranks), act = silu(gate) * up.
    """

    def __init__(self, hidden: int, ffn_hidden: int, group=None, activation: str = "gelu",
                 seed: int = 0, sequence_parallel: bool = False, dtype=torch.float32,
                 device="cpu"):
        super().__init__()
        if activation not in ("gelu", "swiglu"):
            raise ShardingError(f"activation must be gelu or swiglu, got {activation!r}")
        self.activation = activation
        parts = (ffn_hidden, ffn_hidden) if activation == "swiglu" else (ffn_hidden,)
        kw = dict(group=group, sequence_parallel=sequence_parallel, dtype=dtype, device=device)
        self.fc1 = ColumnParallelLinear(hidden, sum(parts), seed=seed, parts=parts, **kw)
        self.fc1.swiglu = activation == "swiglu"
        self.fc2 = RowParallelLinear(ffn_hidden, hidden, seed=seed + 1, **kw)
        _check_pair(self.fc1, self.fc2, "ParallelMLP")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(_activation(self.activation, self.fc1(x)))      # (s, b, h)


class ParallelAttention(torch.nn.Module):
    """Causal self-attention with heads split over ranks: rank r owns heads/p query heads and
    kv_heads/p kv heads (grouped-query: query head i reads kv head i // (heads/kv_heads)).

    QKV = X [Wq | Wk | Wv] column-parallel; O = softmax(Q K^T / sqrt(d) + causal) V per head;
    Y = O Wo row-parallel (one all-reduce forward, one backward). As Megatron-core's
    SelfAttention, the rank's QKV rows are grouped by kv head, [q heads of group 0, k0, v0, q
    heads of group 1, k1, v1, ...] (:func:`qkv_shard`), and the output (s, b, ng (g + 2) d),
    viewed (s, b, ng, (g + 2) d), splits into query, key and value views
    (``get_query_key_value_tensors``); the query is reshaped to (s, b, heads/p, d).

    ``core``: "fused" runs torch's scaled_dot_product_attention (flash kernels); "unfused" runs
    Megatron's unfused core (:func:`unfused_causal_attention`): batched GEMM Q K^T (scale in
    its alpha), the mask and softmax (Megatron's FusedScaleMaskSoftmax), batched GEMM P V:
    tpsim's ``attention: unfused`` prices these three and the layout copies around them.
    """

    def __init__(self, hidden: int, heads: int, kv_heads: int | None = None, group=None,
                 seed: int = 0, sequence_parallel: bool = False, core: str = "fused",
                 dtype=torch.float32, device="cpu"):
        super().__init__()
        p, r = _world(group)
        if core not in ("fused", "unfused"):
            raise ShardingError(f"attention core must be fused or unfused, got {core!r}")
        self.core = core
        kv_heads = kv_heads or heads
        self.head_dim = _divide_heads(hidden, heads, "hidden size", "attention heads")
        if heads % kv_heads:
            raise ShardingError(f"attention heads ({heads}) not divisible by kv heads ({kv_heads})")
        self.heads_local = _divide(heads, p, "attention heads")
        self.kv_local = _divide(kv_heads, p, "kv heads")
        d = self.head_dim
        parts = (heads * d, kv_heads * d, kv_heads * d)
        kw = dict(group=group, sequence_parallel=sequence_parallel, dtype=dtype, device=device)
        self.qkv = ColumnParallelLinear(hidden, sum(parts), seed=seed, parts=parts, **kw)
        with torch.no_grad():
            self.qkv.weight.copy_(qkv_shard(full_weight(sum(parts), hidden, seed), heads,
                                            kv_heads, p, r))
        self.proj = RowParallelLinear(heads * d, hidden, seed=seed + 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.qkv(x)                                             # (s, b, ng (g+2) d)
        s, b, _ = mixed.shape
        d, ng = self.head_dim, self.kv_local
        g = self.heads_local // ng
        q, k, v = torch.split(mixed.view(s, b, ng, (g + 2) * d), [g * d, d, d], dim=3)
        q = q.reshape(s, b, -1, d)          # (s, b, np, d): a copy when g > 1 and ng > 1
        if self.core == "fused":
            q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))       # (b, h, s, d)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g > 1)
            o = o.permute(2, 0, 1, 3).reshape(s, b, -1)                 # (s, b, np d)
        else:
            o = unfused_causal_attention(q, k, v)
        return self.proj(o)


def qkv_shard(full: torch.Tensor, heads: int, kv_heads: int, p: int, r: int) -> torch.Tensor:
    """Rank r's rows of the full (out, in) QKV weight [Q; K; V], grouped by kv head as
    Megatron-core stores them: for each of the rank's kv heads j, its g = heads/kv_heads query
    heads' rows, then k_j's, then v_j's."""
    d = full.shape[0] // (heads + 2 * kv_heads)
    g, ng = heads // kv_heads, kv_heads // p
    q, k, v = column_shard(full, (heads * d, kv_heads * d, kv_heads * d), p, r).split(
        [ng * g * d, ng * d, ng * d])
    groups = [torch.cat([q[j * g * d:(j + 1) * g * d], k[j * d:(j + 1) * d],
                         v[j * d:(j + 1) * d]]) for j in range(ng)]
    return torch.cat(groups).contiguous()


def unfused_causal_attention(q, k, v):
    """softmax(mask(Q K^T / sqrt(d))) V as Megatron-LM's unfused core runs it
    (``DotProductAttention.forward`` in megatron/core/transformer/dot_product_attention.py, then
    FusedScaleMaskSoftmax's torch path in megatron/core/fusions/fused_softmax.py, the one fp32
    takes): grouped-query k and v repeated to every query head (``repeat_interleave``), q and
    k reshaped to (s, b*np, d) (views where the strides allow), ``torch.baddbmm`` on their
    transposes into an uninitialised buffer with beta=0 and the scale in alpha, the causal mask
    filled in place (``attention_mask_func``: ``masked_fill_(mask, -10000.0)``, mask =
    triu(ones(s, s), 1)), softmax, ``torch.bmm`` with v's transpose, then
    ``context.permute(2, 0, 1, 3).contiguous()``.

    q (s, b, np, d), k and v (s, b, ng, d), Megatron's layout; returns (s, b, np*d).
    """
    s, b, hq, d = q.shape
    g = hq // k.shape[2]
    if g > 1:
        k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    q = q.reshape(s, b * hq, d)
    k, v = k.reshape(s, b * hq, d), v.reshape(s, b * hq, d)
    buffer = torch.empty(b * hq, s, s, dtype=q.dtype, device=q.device)
    scores = torch.baddbmm(buffer, q.transpose(0, 1), k.transpose(0, 1).transpose(1, 2),
                           beta=0.0, alpha=1.0 / math.sqrt(d))
    # filled on the GEMM's output itself: the same in-place fill on a view of it would have
    # autograd copy the whole gradient around the fill's backward (CopySlices)
    scores.masked_fill_(causal_mask(s, q.device), MASKED_SCORE)
    context = torch.bmm(scores.softmax(dim=-1), v.transpose(0, 1))     # (b*np, s, d)
    context = context.view(b, hq, s, d).permute(2, 0, 1, 3).contiguous()
    return context.view(s, b, hq * d)


MASKED_SCORE = -10000.0      # Megatron-LM's attention_mask_func fill value
_MASKS = Memo("causal masks", 16)


def causal_mask(s: int, device) -> torch.Tensor:
    """(s, s) bool, True above the diagonal (the keys a query must not see); built once per
    size."""
    return _MASKS.get((s, str(device)), _new_causal_mask, s, device)


def _new_causal_mask(s: int, device) -> torch.Tensor:
    return torch.ones(s, s, dtype=torch.bool, device=device).triu(1)


def _divide_heads(hidden: int, heads: int, a: str, b: str) -> int:
    if hidden % heads:
        raise ShardingError(f"{a} ({hidden}) is not divisible by {b} ({heads})")
    return hidden // heads


class NaiveParallelMLP(torch.nn.Module):
    """The chapter's naive baseline: fc1 column-parallel, all-gather its output, fc2 unsplit
    (replicated on every rank). Same math, more communication and p times the fc2 FLOPs."""

    def __init__(self, hidden: int, ffn_hidden: int, group=None, activation: str = "gelu",
                 seed: int = 0, dtype=torch.float32, device="cpu"):
        super().__init__()
        if activation != "gelu":
            raise ShardingError("the naive baseline implements gelu only")
        self.activation = activation
        self.fc1 = ColumnParallelLinear(hidden, ffn_hidden, group=group, seed=seed,
                                        gather_output=True, dtype=dtype, device=device)
        w2 = full_weight(hidden, ffn_hidden, seed + 1)
        self.fc2_weight = torch.nn.Parameter(w2.to(device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.fc1(x))                                         # (s, b, ffn) everywhere
        return torch.matmul(y, self.fc2_weight.t())                     # (s, b, h)
