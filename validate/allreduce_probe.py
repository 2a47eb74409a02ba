"""What an all-reduce costs inside a tensor-parallel layer, against the microbenchmark's (torch).

    torchrun --nproc_per_node 2 validate/allreduce_probe.py [--rounds 15]

Times, interleaved round by round as validate/run.py times everything (bench.measure: started
together, slowest rank, median over rounds), for one EVAL shape's MLP (1 MiB all-reduces):

  pad                  the microbenchmark's GEMM pad alone (bench.collective_items)
  pad + ar(ones)       the microbenchmark: pad, then all-reduce of a ones buffer of n elements
  pad + ar(output)     pad, then all-reduce of the (s, b, h) output of fc2's GEMM (the layer's
                       tensor: its size, layout and freshly written data)
  mlp fwd / fwd+bwd    the real ParallelMLP
  ... no all-reduce    the same with the layers' all-reduces taken out (fc1, fc2 plain GEMMs)

and prints each difference: what the all-reduce adds to the wall time where it runs.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import bench as B             # noqa: E402
import layer_bench as L       # noqa: E402
import machine as M           # noqa: E402
import shapes as S            # noqa: E402


def _plain(mlp) -> None:
    """fc1 and fc2 as bare GEMMs: the MLP with no collective, forward or backward."""
    for lin in (mlp.fc1, mlp.fc2):
        lin.forward = lambda x, w=lin.weight: torch.matmul(x, w.t())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    M.pin_to_cores(rank, world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    dev = torch.device("cpu")
    sh = S.EVAL["quick"][0]
    n = sh.seq * sh.batch * sh.hidden
    a, w = torch.randn(256, 1024), torch.randn(512, 1024)
    ones = torch.ones(n)
    f = sh.ffn // world
    x2, w2 = torch.randn(sh.seq * sh.batch, f), torch.randn(sh.hidden, f)
    items = [B.Item("pad", lambda: torch.matmul(a, w.t()), {}),
             B.Item("pad + ar(ones)", lambda: (torch.matmul(a, w.t()), dist.all_reduce(ones)), {}),
             B.Item("pad + ar(output)", lambda: (torch.matmul(a, w.t()), dist.all_reduce(
                 torch.matmul(x2, w2.t()).view(sh.seq, sh.batch, sh.hidden))), {}),
             B.Item("output GEMM", lambda: torch.matmul(x2, w2.t()), {})]
    for phase in ("forward", "forward_backward"):
        for plain in (False, True):
            mlp = L.build_block("mlp", sh, "unfused", torch.float32, dev)
            if plain:
                _plain(mlp)
            run, setup = L._runner(mlp, sh, phase, torch.float32, dev)
            items.append(B.Item(f"mlp {phase}" + (" no all-reduce" if plain else ""), run, {},
                                setup))
    sec = B.measure(items, dev, args.rounds, B.Progress(args.rounds + 1, "probe", rank),
                    aligned=True)
    if rank == 0:
        ms = {k: v * 1e3 for k, v in sec.items()}
        load = open("/proc/loadavg").read().split()[:3]
        print(f"\nshape {sh.label()}, all-reduce of {n * 4} bytes; load {load}")
        for k, v in ms.items():
            print(f"  {k:36s} {v:8.3f} ms")
        print(f"  microbenchmark all-reduce (ones)     {ms['pad + ar(ones)'] - ms['pad']:8.3f} ms")
        print(f"  all-reduce of the GEMM output        "
              f"{ms['pad + ar(output)'] - ms['pad'] - ms['output GEMM']:8.3f} ms")
        for phase, calls in (("forward", 1), ("forward_backward", 2)):
            d = ms[f"mlp {phase}"] - ms[f"mlp {phase} no all-reduce"]
            print(f"  in the layer, {phase}: {d:8.3f} ms over {calls} all-reduce(s)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
