"""Time the real tensor-parallel blocks, forward and forward+backward (torch).

:func:`layer_items` gives the wall-time items (timed by :func:`bench.measure`, interleaved with
the microbenchmarks); besides that number, which tpsim predicts, instrumented passes split it
the chapter's way (exercise 3): time in matmuls (each GEMM and attention kernel timed), time
in collectives (each synchronised and timed by :func:`tpsim.tp.record_collectives`), and the
communication share = collectives / total.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tpsim.tp import NaiveParallelMLP, ParallelAttention, ParallelMLP, record_collectives

from bench import Item, _sync, start_together

MATMUL_OPS = ("mm", "bmm", "baddbmm", "addmm", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_flash_attention_for_cpu",
              "_scaled_dot_product_flash_attention_backward",
              "_scaled_dot_product_flash_attention_for_cpu_backward",
              "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_efficient_attention_backward",
              "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward")


# Layout copies: the unfused attention's context copy (and query copy with grouped queries),
# the concatenation of the q/k/v and gate/up gradients. Their time is reported beside the
# matmuls; tpsim's graph prices the attention's (tpsim.layer.unfused).
COPY_OPS = ("clone", "copy_", "cat", "_to_copy", "contiguous")


class KernelTimer(TorchDispatchMode):
    """Wall time of every GEMM / attention kernel (``seconds``) and every layout copy
    (``copy_seconds``) run inside it, forward and backward (each synchronised on CUDA, so only
    for an instrumented pass)."""

    def __init__(self, device):
        super().__init__()
        self.device, self.seconds, self.copy_seconds, self.count = device, 0.0, 0.0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in MATMUL_OPS and name not in COPY_OPS:
            return func(*args, **(kwargs or {}))
        _sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        _sync(self.device)
        if name in MATMUL_OPS:
            self.seconds += time.perf_counter() - t0
            self.count += 1
        else:
            self.copy_seconds += time.perf_counter() - t0
        return out


def build_block(block: str, shape, core: str, dtype, device, seed: int = 7):
    """mlp, attention or naive_mlp (the chapter's baseline) for ``shape`` on the default group."""
    kw = dict(seed=seed, dtype=dtype, device=device)
    if block == "mlp":
        return ParallelMLP(shape.hidden, shape.ffn, activation=shape.activation, **kw)
    if block == "attention":
        return ParallelAttention(shape.hidden, shape.heads, shape.kv_heads, core=core, **kw)
    if block == "naive_mlp":
        return NaiveParallelMLP(shape.hidden, shape.ffn, activation="gelu", **kw)
    raise ValueError(f"unknown block {block!r}")


def _runner(module, shape, phase: str, dtype, device):
    """(run, setup): one forward (with autograd, as in training) or forward + backward."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(shape.seq, shape.batch, shape.hidden, generator=gen).to(device, dtype)
    dy = torch.randn(shape.seq, shape.batch, shape.hidden, generator=gen).to(device, dtype)
    x.requires_grad_()
    params = list(module.parameters())

    def setup():
        x.grad = None
        for p in params:
            p.grad = None

    if phase == "forward":
        return (lambda: module(x)), setup
    # gradients cleared inside the run: a repeated run must not accumulate (an extra add)
    return (lambda: (setup(), module(x).backward(dy))), setup


def breakdown(run, setup, device, repeats: int = 3, aligned: bool = False) -> dict:
    """Median over ``repeats`` instrumented passes: matmul, collective, layout-copy and total
    seconds."""
    rows = []
    for _ in range(repeats):
        setup()
        _sync(device)
        start_together(device, aligned)
        with record_collectives(timed=True) as calls, KernelTimer(device) as k:
            t0 = time.perf_counter()
            run()
            _sync(device)
            total = time.perf_counter() - t0
        rows.append((k.seconds, sum(c.seconds for c in calls), total, len(calls), k.copy_seconds))
    matmul_s, comm_s, total_s = (statistics.median(r[i] for r in rows) for i in range(3))
    return {"matmul_s": matmul_s, "collective_s": comm_s, "instrumented_total_s": total_s,
            "comm_share": comm_s / total_s if total_s > 0 else 0.0, "collectives": rows[0][3],
            "copy_s": statistics.median(r[4] for r in rows)}


def layer_items(plan, core: str, dtype, device) -> list:
    """One timing :class:`bench.Item` per (shape, block, phase) of ``plan``."""
    items = []
    for shape, block, phase in plan:
        module = build_block(block, shape, core, dtype, device)
        run, setup = _runner(module, shape, phase, dtype, device)
        items.append(Item(f"layer/{block}/{phase}/{shape.label()}", run,
                          {"layer": block, "phase": phase, "shape_obj": shape}, setup))
    return items
