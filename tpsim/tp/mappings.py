"""The communication operators of tensor parallelism, as autograd functions (torch only).

Megatron-core's ``tensor_parallel/mappings.py`` in miniature. A column-parallel linear needs the
full input on every rank and produces a slice of the output; a row-parallel linear takes a slice
of its input and produces partial sums. Two conjugate operators join them (Shoeybi et al. 2019):

    f: identity forward, all-reduce backward      (enters a tensor-parallel region)
    g: all-reduce forward, identity backward      (leaves it)

With sequence parallelism (Korthikanti et al. 2022) the activations outside the region are split
along the sequence (dim 0 of the Megatron layout ``(seq, batch, hidden)``), and f and g become

    f_sp: all-gather (seq) forward, reduce-scatter (seq) backward
    g_sp: reduce-scatter (seq) forward, all-gather (seq) backward

Every collective issued here, forward or backward, is reported to the recorders opened with
:func:`record_collectives` as ``(phase, op, nbytes)`` where ``nbytes`` is nccl-tests' size: the
all-reduce buffer, the full all-gather output, the full reduce-scatter input. The validate
harness times collectives with it (the chapter's exercise 3). The tests do not trust this list:
they observe the c10d ops torch itself runs (tests/comm_observer.py) and compare those with the
collectives of tpsim's op graph.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class CollectiveCall:
    """One collective a layer issued: forward or backward, op, nccl-tests bytes, wall seconds."""
    phase: str
    op: str
    nbytes: int
    seconds: float = 0.0


_recorders: list[tuple[list, bool]] = []


@contextlib.contextmanager
def record_collectives(timed: bool = False):
    """Collect every :class:`CollectiveCall` made inside the block into the yielded list.

    ``timed=True`` synchronises the device before and after each collective so that its wall
    time is its own (the chapter's exercise 3: time in collectives); leave it off when timing
    whole layers, since the extra synchronisation changes what it measures.
    """
    calls: list[CollectiveCall] = []
    _recorders.append((calls, timed))
    try:
        yield calls
    finally:
        _recorders.remove((calls, timed))


def _sync(t: torch.Tensor) -> None:
    if t.is_cuda:
        torch.cuda.synchronize(t.device)


def _issue(phase: str, op: str, nbytes: int, run, like: torch.Tensor):
    """Run collective ``run()``; report it (and, if a recorder asks, its wall time)."""
    timed = any(t for _, t in _recorders)
    if timed:
        _sync(like)
        t0 = time.perf_counter()
    out = run()
    seconds = 0.0
    if timed:
        _sync(like)
        seconds = time.perf_counter() - t0
    for calls, _ in _recorders:
        calls.append(CollectiveCall(phase, op, int(nbytes), seconds))
    return out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _all_reduce(x: torch.Tensor, group, phase: str) -> torch.Tensor:
    """Sum ``x`` over the group: every rank gets sum_r x_r (ring: 2(p-1) steps)."""
    if dist.get_world_size(group) == 1:
        return x
    x = x.contiguous()
    _issue(phase, "all-reduce", _nbytes(x), lambda: dist.all_reduce(x, group=group), x)
    return x


_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _all_gather_dim0(x: torch.Tensor, group, phase: str) -> torch.Tensor:
    """Concatenate the ranks' ``x`` along dim 0: (n, ...) -> (p*n, ...)."""
    p = dist.get_world_size(group)
    if p == 1:
        return x
    x = x.contiguous()
    out = torch.empty((p * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    _issue(phase, "all-gather", _nbytes(out), lambda: _gather_single(out, x, group=group), x)
    return out


def _reduce_scatter_dim0(x: torch.Tensor, group, phase: str) -> torch.Tensor:
    """Sum over ranks, rank r keeping rows [r*n/p, (r+1)*n/p) of dim 0: (n, ...) -> (n/p, ...)."""
    p = dist.get_world_size(group)
    if p == 1:
        return x
    if x.shape[0] % p:
        raise ValueError(f"reduce-scatter: dim 0 ({x.shape[0]}) not divisible by {p} ranks")
    x = x.contiguous()
    out = torch.empty((x.shape[0] // p,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    _issue(phase, "reduce-scatter", _nbytes(x), lambda: _scatter_single(out, x, group=group), x)
    return out


def _all_gather_last(x: torch.Tensor, group, phase: str) -> torch.Tensor:
    """Concatenate the ranks' ``x`` along the last dim: (..., n) -> (..., p*n)."""
    p = dist.get_world_size(group)
    if p == 1:
        return x
    stacked = _all_gather_dim0(x.unsqueeze(0), group, phase)          # (p, ..., n)
    return torch.cat(stacked.unbind(0), dim=-1)


def _split_last(x: torch.Tensor, group) -> torch.Tensor:
    p, r = dist.get_world_size(group), dist.get_rank(group)
    return x.chunk(p, dim=-1)[r].contiguous()


def _split_dim0(x: torch.Tensor, group) -> torch.Tensor:
    p, r = dist.get_world_size(group), dist.get_rank(group)
    if x.shape[0] % p:
        raise ValueError(f"sequence split: dim 0 ({x.shape[0]}) not divisible by {p} ranks")
    return x.chunk(p, dim=0)[r].contiguous()


class _CopyToRegion(torch.autograd.Function):
    """f: Y = X forward; dL/dX = sum_r dL/dY_r backward (all-reduce)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, dy):
        return _all_reduce(dy, ctx.group, "backward"), None


class _ReduceFromRegion(torch.autograd.Function):
    """g: Y = sum_r X_r forward (all-reduce); dL/dX_r = dL/dY backward."""

    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group, "forward")  # in place, as Megatron: x is a fresh GEMM output

    @staticmethod
    def backward(ctx, dy):
        return dy, None


class _GatherFromRegion(torch.autograd.Function):
    """Y = [X_0 | ... | X_{p-1}] (all-gather, last dim) forward; dL/dX_r = slice r backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather_last(x, group, "forward")

    @staticmethod
    def backward(ctx, dy):
        return _split_last(dy, ctx.group), None


class _ScatterToRegion(torch.autograd.Function):
    """Y_r = slice r of X (last dim) forward; dL/dX = [dY_0 | ... ] backward (all-gather)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split_last(x, group)

    @staticmethod
    def backward(ctx, dy):
        return _all_gather_last(dy, ctx.group, "backward"), None


class _GatherFromSequenceRegion(torch.autograd.Function):
    """f_sp: Y = [X_0; ...; X_{p-1}] along seq (all-gather) forward; reduce-scatter backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather_dim0(x, group, "forward")

    @staticmethod
    def backward(ctx, dy):
        return _reduce_scatter_dim0(dy, ctx.group, "backward"), None


class _ReduceScatterToSequenceRegion(torch.autograd.Function):
    """g_sp: Y_r = rows r of sum_s X_s (reduce-scatter, seq) forward; all-gather backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter_dim0(x, group, "forward")

    @staticmethod
    def backward(ctx, dy):
        return _all_gather_dim0(dy, ctx.group, "backward"), None


class _ScatterToSequenceRegion(torch.autograd.Function):
    """Y_r = rows r of X along seq forward (no communication); all-gather backward."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _split_dim0(x, group)

    @staticmethod
    def backward(ctx, dy):
        return _all_gather_dim0(dy, ctx.group, "backward"), None


class _SequenceParallelLinear(torch.autograd.Function):
    """Y = all_gather_seq(X) W^T, keeping only the local X shard for the backward.

    Megatron-core's LinearWithGradAccumulationAndAsyncCommunication with sequence parallelism:
    forward all-gathers the (s/p, b, in) input and multiplies; backward all-gathers the input
    again (for the weight gradient; Megatron issues it async so it overlaps the dgrad GEMM),
    computes dX_total = dY W, reduce-scatters it along seq (async there, overlapping the wgrad
    GEMM) and dW = dY^T X_total. Here the collectives run synchronously: the same collectives,
    in the same order.
    """

    @staticmethod
    def forward(ctx, x, weight, group):
        ctx.group = group
        ctx.save_for_backward(x, weight)
        return torch.matmul(_all_gather_dim0(x, group, "forward"), weight.t())

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        total = _all_gather_dim0(x, ctx.group, "backward")             # (s, b, in) re-gathered
        dx = _reduce_scatter_dim0(torch.matmul(dy, weight), ctx.group, "backward")
        dw = torch.matmul(dy.reshape(-1, dy.shape[-1]).t(), total.reshape(-1, total.shape[-1]))
        return dx, dw, None


def sequence_parallel_linear(x, weight, group=None):
    """A column-parallel linear on a sequence-parallel input, as Megatron-core runs it: all-gather
    forward; re-gather of the input and reduce-scatter of its gradient backward."""
    return _SequenceParallelLinear.apply(x, weight, group)


def copy_to_tensor_parallel_region(x, group=None):
    """f: identity forward, all-reduce backward."""
    return _CopyToRegion.apply(x, group)


def reduce_from_tensor_parallel_region(x, group=None):
    """g: all-reduce forward, identity backward."""
    return _ReduceFromRegion.apply(x, group)


def gather_from_tensor_parallel_region(x, group=None):
    """All-gather along the last dim forward, take this rank's slice backward."""
    return _GatherFromRegion.apply(x, group)


def scatter_to_tensor_parallel_region(x, group=None):
    """Take this rank's slice of the last dim forward, all-gather backward."""
    return _ScatterToRegion.apply(x, group)


def gather_from_sequence_parallel_region(x, group=None):
    """f_sp: all-gather along seq forward, reduce-scatter backward."""
    return _GatherFromSequenceRegion.apply(x, group)


def reduce_scatter_to_sequence_parallel_region(x, group=None):
    """g_sp: reduce-scatter along seq forward, all-gather backward."""
    return _ReduceScatterToSequenceRegion.apply(x, group)


def scatter_to_sequence_parallel_region(x, group=None):
    """This rank's rows of the sequence forward, all-gather backward (builds SP inputs)."""
    return _ScatterToSequenceRegion.apply(x, group)


def _all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group,
                phase: str) -> torch.Tensor:
    """Rank r sends rows in_splits[j] of ``x`` to rank j and receives out_splits[j] rows from
    it (``all_to_all_single``); nccl-tests' size: all of ``x``, its own slice included."""
    if dist.get_world_size(group) == 1:
        return x
    x = x.contiguous()
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    _issue(phase, "all-to-all", _nbytes(x),
           lambda: dist.all_to_all_single(out, x, out_splits, in_splits, group=group), x)
    return out


class _AllToAll(torch.autograd.Function):
    """Y = all-to-all(X) forward; backward the same exchange the other way (splits swapped):
    what rank r sent to j returns from j as the gradient of what j received."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _all_to_all(x, out_splits, in_splits, group, "forward")

    @staticmethod
    def backward(ctx, dy):
        out_splits, in_splits = ctx.splits
        return _all_to_all(dy, in_splits, out_splits, ctx.group, "backward"), None, None, None


def all_to_all(x, out_splits: list[int], in_splits: list[int], group=None):
    """The expert-parallel dispatch and combine: rows of ``x`` exchanged by ``in_splits`` (sent
    to each rank) and ``out_splits`` (received from each), all-to-all again in backward."""
    return _AllToAll.apply(x, out_splits, in_splits, group)
