"""Time the real context-parallel (ring) attention and its K/V transfers, and set tpsim's price
of those transfers beside them.

    torchrun --nproc_per_node N validate/context_parallel.py [--seq S] [--heads H]
        [--kv-heads K] [--head-dim D] [--batch B] [--rounds R] [--topology YAML] [--out FILE]

gloo on CPU (fp32, one thread per rank), NCCL with one GPU per rank (bf16) where CUDA is there.
Every rank holds 2 of the sequence's 2N chunks (tpsim.tp.context_parallel). Stages:
  1. correctness  the ring's output and q/k/v gradients against causal attention of the whole
                  sequence on one rank (a mismatch fails);
  2. timing       forward and forward + backward, the median of --rounds of the slowest rank;
                  an instrumented pass times each K/V send-recv (synchronised, so not counted
                  in the timing above);
  3. price        with --topology (validate/run.py's calibrated.yaml, or a shipped one), tpsim's
                  send_recv_time of the same bytes on the CP group's placement
                  (tpsim.sim.price), beside the measured transfer.
Rank 0 prints one line per number and writes --out (JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from tpsim.tp.context_parallel import chunk_pair, reference_attention, ring_attention
from tpsim.tp.mappings import record_collectives


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("--seq", 1024), ("--heads", 8), ("--kv-heads", 2), ("--head-dim", 64),
                          ("--batch", 1), ("--rounds", 5)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--topology", default=None)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(a, dtype, device, p: int, r: int):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(a.batch, n, a.seq, a.head_dim, generator=gen).to(device, dtype)
               for n in (a.heads, a.kv_heads, a.kv_heads))
    dy = torch.randn(a.batch, a.heads, a.seq, a.head_dim, generator=gen).to(device, dtype)
    return (q, k, v), dy, [chunk_pair(t, p, r).detach().requires_grad_() for t in (q, k, v)]


def _correctness(full, dy, local, p: int, r: int) -> float:
    ref = [t.clone().requires_grad_() for t in full]
    want = reference_attention(*ref)
    want.backward(dy)
    out = ring_attention(*local)
    out.backward(chunk_pair(dy, p, r))
    errs = [(out - chunk_pair(want, p, r)).abs().max()]
    errs += [(a.grad - chunk_pair(b.grad, p, r)).abs().max() for a, b in zip(local, ref)]
    return float(max(errs))


def _median_s(fn, device, rounds: int) -> float:
    times = []
    for _ in range(rounds + 1):            # the first round warms up
        dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    slowest = torch.tensor(times[1:], dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return statistics.median(slowest.tolist())


def _predicted_transfer_s(topology: str, nbytes: float, p: int) -> float:
    """tpsim's price of one ring step: send_recv_time on the CP group's wrap (N ranks, stride
    1; tpsim.layer.context_parallel)."""
    from tpsim.cluster.topology import load_topology
    from tpsim.layer.ops import SendRecv
    from tpsim.sim.price import Pricing, price
    from tpsim.spec.parallel import Parallelism
    pricing = Pricing(load_topology(topology), Parallelism(cp=p))
    return price(SendRecv(nbytes, "cp", -1), pricing)[0]


def main(argv=None) -> dict:
    a = _args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    p, r = dist.get_world_size(), dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if cuda else torch.float32
    if a.seq % (2 * p):
        raise SystemExit(f"--seq: expected a multiple of 2 x ranks ({2 * p}), got {a.seq}")
    full, dy, local = _inputs(a, dtype, device, p, r)
    error = _correctness(full, dy, local, p, r)
    dy_local = chunk_pair(dy, p, r)
    fwd = _median_s(lambda: ring_attention(*local), device, a.rounds)
    both = _median_s(lambda: ring_attention(*local).backward(dy_local), device, a.rounds)
    with record_collectives(timed=True) as calls:
        ring_attention(*local).backward(dy_local)
    sends = [c for c in calls if c.op == "send-recv"]
    out = {"ranks": p, "seq": a.seq, "max_abs_error": error, "forward_s": fwd,
           "forward_backward_s": both, "transfers": len(sends),
           "transfer_bytes": sends[0].nbytes if sends else 0,
           "transfer_s": statistics.median(c.seconds for c in sends) if sends else 0.0}
    if a.topology and sends:
        out["predicted_transfer_s"] = _predicted_transfer_s(a.topology, sends[0].nbytes, p)
    if r == 0:
        for key, value in out.items():
            print(f"{key:24s} {value}")
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    dist.barrier()
    dist.destroy_process_group()
    if error > (1e-2 if cuda else 1e-4):
        sys.exit(f"ring attention differs from one rank's by {error:.3g}")
    return out


if __name__ == "__main__":
    main()
