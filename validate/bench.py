"""Timing on every rank at once: warm-up, barrier, device sync, median of repeats (torch).

On CUDA a region is timed with CUDA events between ``torch.cuda.synchronize`` calls; on CPU
with ``time.perf_counter``. Every rank times the same region after a barrier and the slowest
rank's time counts (a collective ends when its last rank does), then the median over repeats.

Measurements are *interleaved*: every round runs each item (microbenchmark or layer) once, and
the median is over rounds. A shared machine's speed drifts (on a 2-vCPU VM two busy ranks
sometimes share one physical core and halve each other's GEMM rate); interleaving makes the
calibration and the layers it predicts see the same mixture of conditions.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


class Progress:
    """A text progress bar on rank 0 (stderr): ``[#####.....] 12/40 collectives``."""

    def __init__(self, total: int, label: str, rank: int, width: int = 30):
        self.total, self.label, self.rank, self.width, self.done = max(total, 1), label, rank, width, 0

    def step(self, note: str = "") -> None:
        self.done += 1
        if self.rank != 0:
            return
        fill = self.width * self.done // self.total
        bar = "#" * fill + "." * (self.width - fill)
        end = "\n" if self.done >= self.total else ""
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} {self.label} {note[:40]:40s}{end}")
        sys.stderr.flush()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn, device: torch.device) -> float:
    """Seconds for ``fn()`` on this rank, between device synchronisations."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class Item:
    """One thing to time: ``fn`` after ``setup`` (untimed) and a barrier; ``info`` is reported."""
    key: str
    fn: Callable
    info: dict
    setup: Callable | None = None


def start_together(device: torch.device, aligned: bool, margin_s: float = 0.01) -> None:
    """Start every rank at the same instant.

    A barrier releases ranks up to milliseconds apart on a CPU host (an idle rank must be woken),
    and the first rank then runs alone, at a speed it will not have when every rank computes.
    With ``aligned`` (all ranks on one host, one clock) rank 0 broadcasts a start time
    ``margin_s`` ahead and every rank spins until it; otherwise a barrier (NCCL's is tight).
    """
    if not aligned:
        dist.barrier()
        return
    t = torch.tensor([time.time() + margin_s], dtype=torch.float64)
    dist.broadcast(t, 0)
    deadline = float(t.item())
    while time.time() < deadline:
        pass


def _max_over_ranks(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Elementwise max over ranks of a CPU tensor (NCCL needs it on the GPU and back)."""
    t = t.to(device) if device.type == "cuda" else t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu()


def _repeat(fn, k: int):
    def run():
        for _ in range(k):
            fn()
    return run


def measure(items: list[Item], device: torch.device, rounds: int, progress: Progress,
            warmup: int = 1, seed: int = 0, aligned: bool = False,
            burst_s: float = 0.015) -> dict[str, float]:
    """Median over ``rounds`` of the slowest rank's seconds per call of each item, interleaved.

    Each round runs every item once, in an order shuffled the same way on every rank, each
    started on all ranks at once (:func:`start_together`). A short item runs back to back
    ``k`` times, k set by the warm-up so that a burst lasts about ``burst_s``, and counts as
    burst / k: kernels inside a layer run back to back for many milliseconds, and a lone
    sub-millisecond kernel on a shared host sees neither the same contention nor the same caches.
    """
    order = list(range(len(items)))
    rng = random.Random(seed)
    reps = torch.ones(len(items), dtype=torch.float64)
    times = torch.zeros(rounds, len(items), dtype=torch.float64)
    for r in range(warmup + rounds):
        rng.shuffle(order)
        if r == warmup:                     # burst sizes from the warm-up, same on every rank
            reps = (burst_s / _max_over_ranks(reps, device)).round().clamp(1, 1000)
        for i in order:
            it = items[i]
            k = int(reps[i]) if r >= warmup else 1
            if it.setup is not None:
                it.setup()
            _sync(device)
            start_together(device, aligned)
            t = _once(_repeat(it.fn, k) if k > 1 else it.fn, device) / k
            if r >= warmup:
                times[r - warmup, i] = t
            elif r == warmup - 1:
                reps[i] = t
        progress.step(f"round {r + 1 - warmup}" if r >= warmup else "warm-up")
    times = _max_over_ranks(times, device)
    med = times.quantile(0.5, dim=0).tolist()
    measure.raw = {it.key: col for it, col in zip(items, times.cpu().t().tolist())}
    measure.reps = {it.key: int(k) for it, k in zip(items, reps.tolist())}
    return {it.key: m for it, m in zip(items, med)}


# --------------------------------------------------------------------------- microbenchmarks

def collective_items(sizes, dtype, device, group=None, tag: str = "local") -> list[Item]:
    """all-reduce, all-gather, reduce-scatter, all-to-all at nccl-tests sizes (buffer, full
    output, full input, all one rank sends; rounded down to a multiple of the group size in
    elements) on ``group`` (None: every rank), each after a GEMM "pad". The all-to-all is
    ``all_to_all_single`` with even splits, what an MoE layer's dispatch and combine call.

    A collective that follows compute costs more than one that follows a barrier (ranks arrive
    apart, an idle rank must be woken), and layers run only the first kind. So each size is
    timed as pad + collective and as pad alone; the collective is the difference of medians.
    """
    p = dist.get_world_size(group)
    elem = torch.tensor([], dtype=dtype).element_size()
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    a = torch.randn(256, 1024, dtype=dtype, device=device)
    w = torch.randn(512, 1024, dtype=dtype, device=device)
    items = []
    for size in sizes:
        n = max(p, size // elem // p * p)
        full = torch.ones(n, dtype=dtype, device=device)
        part = torch.ones(n // p, dtype=dtype, device=device)
        ops = {"all-reduce": lambda f=full: dist.all_reduce(f, group=group),
               "all-gather": lambda f=full, q=part: gather(f, q, group=group),
               "reduce-scatter": lambda f=full, q=part: scatter(q, f, group=group),
               "all-to-all": lambda f=full, o=torch.empty_like(full): dist.all_to_all_single(
                   o, f, group=group)}
        for op, fn in ops.items():
            info = {"op": op, "size_bytes": n * elem, "ranks": p, "group": tag}
            key = f"coll/{tag}/{op}/{n}"
            items.append(Item(key + "/pad", lambda: torch.matmul(a, w.t()), info))
            items.append(Item(key, lambda fn=fn: (torch.matmul(a, w.t()), fn()), info))
    return items


def collective_rows(items: list[Item], seconds: dict) -> list[dict]:
    return [{**it.info, "time_s": seconds[it.key] - seconds[it.key + "/pad"]}
            for it in items if it.key.startswith("coll/") and not it.key.endswith("/pad")]


def rows_of(items: list[Item], seconds: dict) -> list[dict]:
    """Each item's median and, as measured, its rounds (the same rounds as the layers')."""
    raw = getattr(measure, "raw", {})
    return [{**it.info, "time_s": seconds[it.key], "rounds_s": raw.get(it.key)} for it in items]
