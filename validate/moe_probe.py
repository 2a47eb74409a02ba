"""The expert-parallel MoE layer's parts against tpsim's, and all-to-all against all-gather (torch).

    torchrun --nproc_per_node 2 validate/moe_probe.py [--rounds 11] [--topology calibrated.yaml]

Times, interleaved round by round as validate/run.py times everything (bench.measure: started
together, slowest rank, median over rounds), for each quick shape of validate/moe_bench.py:

  layer       the whole forward of :class:`tpsim.tp.moe.ExpertParallelMoE`
  router      logits, softmax, top-k, renormalisation (:func:`tpsim.tp.moe.route`)
  permute     the argsort of the (token, expert) pairs and the gather of their rows
  counts      the all-to-all of the row counts (after the GEMM pad, pad subtracted)
  dispatch    the all-to-all of the rows at the layer's own splits (pad subtracted)
  experts     the local experts on the rows received
  combine     the all-to-all back (pad subtracted)
  unpermute   the weighted index_add into the output

and, for all-to-all against all-gather, each at 64 KiB .. 16 MiB after the pad: what the
calibration's collectives microbenchmark times. With ``--topology`` it prints tpsim's price of
each part on it beside the measurement.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
import bench as B             # noqa: E402
import machine as M           # noqa: E402
import moe_bench as MB        # noqa: E402


def _parts(sh, world: int) -> tuple[dict, dict]:
    """(items by name, what the layer's forward needs) for one shape."""
    from tpsim.tp.moe import ExpertParallelMoE, route
    layer = ExpertParallelMoE(sh.hidden, sh.ffn, sh.experts_per_rank * world, sh.top_k,
                              activation=sh.activation, seed=7)
    x2d = torch.randn(sh.seq * sh.batch, sh.hidden, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        weights, ids = route(x2d, layer.router, sh.top_k)
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        token = order // sh.top_k
        got = layer._exchange_counts(flat)
        sent = torch.bincount(flat // layer.local, minlength=world).tolist()
        received = got.sum(1).tolist()
        send = x2d[token]
        rows = send.new_empty((sum(received), sh.hidden))
        dist.all_to_all_single(rows, send, received, sent)
        out = layer._experts(rows, got)
        back = out.new_empty((sum(sent), sh.hidden))
    counts = torch.bincount(flat, minlength=layer.experts).reshape(world, layer.local)
    a, w = torch.randn(256, 1024), torch.randn(512, 1024)
    pad = lambda: torch.matmul(a, w.t())    # noqa: E731
    cnt = torch.empty_like(counts)
    fns = {"layer": lambda: layer(x2d.view(sh.seq, sh.batch, sh.hidden)),
           "router": lambda: route(x2d, layer.router, sh.top_k),
           "permute": lambda: x2d[torch.argsort(flat, stable=True) // sh.top_k],
           "pad": pad,
           "pad + counts": lambda: (pad(), dist.all_to_all_single(cnt, counts)),
           "pad + dispatch": lambda: (pad(), dist.all_to_all_single(rows, send, received, sent)),
           "experts": lambda: layer._experts(rows, got),
           "pad + combine": lambda: (pad(), dist.all_to_all_single(back, out, sent, received)),
           "unpermute": lambda: torch.zeros_like(x2d).index_add(
               0, token, back * weights.flatten()[order].unsqueeze(1))}
    return fns, {"sent_bytes": send.numel() * 4}


def _sweep(world: int) -> dict:
    """pad + all-to-all and pad + all-gather of S bytes per rank, 64 KiB .. 16 MiB."""
    a, w = torch.randn(256, 1024), torch.randn(512, 1024)
    fns = {}
    for size in (4 ** i * 1024 for i in range(3, 8)):
        n = size // 4 // world * world
        src, dst, part = torch.ones(n), torch.empty(n), torch.ones(n // world)
        fns[f"pad + a2a {n * 4}"] = lambda s=src, d=dst: (torch.matmul(a, w.t()),
                                                          dist.all_to_all_single(d, s))
        fns[f"pad + ag {n * 4}"] = lambda d=dst, p=part: (torch.matmul(a, w.t()),
                                                          dist.all_gather_into_tensor(d, p))
    return fns


def _priced(topology: str, sh, world: int) -> dict:
    """tpsim's seconds for each op of the MoE slot at ``sh`` on ``topology``."""
    from tpsim.cluster.topology import load_topology
    tpl, sim, counts = MB.simulate_moe_forward(load_topology(topology), sh, world, "fp32")
    return {**dict(zip(tpl.names, sim.times)), "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--topology", default=None)
    args = ap.parse_args()
    rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    M.pin_to_cores(rank, world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    items, info = [], {}
    for sh in MB.SHAPES["quick"]:
        fns, info[sh.label()] = _parts(sh, world)
        items += [B.Item(f"{sh.label()}|{k}", f, {}) for k, f in fns.items()]
    items += [B.Item(f"sweep|{k}", f, {}) for k, f in _sweep(world).items()]
    dev = torch.device("cpu")
    sec = B.measure(items, dev, args.rounds, B.Progress(args.rounds + 1, "probe", rank),
                    aligned=True)
    if rank == 0:
        _print(sec, info, args.topology, world)
    dist.destroy_process_group()


def _print(sec: dict, info: dict, topology: str | None, world: int) -> None:
    ms = {k: v * 1e3 for k, v in sec.items()}
    print(f"\nload {open('/proc/loadavg').read().split()[:3]}")
    for sh in MB.SHAPES["quick"]:
        lab = sh.label()
        g = {k.split("|")[1]: v for k, v in ms.items() if k.startswith(lab + "|")}
        for c in ("counts", "dispatch", "combine"):
            g[c] = g.pop(f"pad + {c}") - g["pad"]
        g.pop("pad")
        price = _priced(topology, sh, world) if topology else {}
        names = {"router": ("fwd.router", "fwd.router.topk"), "permute": ("fwd.moe.permute",),
                 "dispatch": ("fwd.moe.dispatch",), "combine": ("fwd.moe.combine",),
                 "experts": ("fwd.experts.fc1", "fwd.experts.act", "fwd.experts.fc2"),
                 "unpermute": ("fwd.moe.unpermute",), "counts": ("counts",),
                 "layer": tuple(price)}
        print(f"{lab}: {info[lab]['sent_bytes']} bytes sent a rank")
        for k, v in g.items():
            p = sum(price.get(n, 0.0) for n in names.get(k, ())) * 1e3
            print(f"  {k:10s} {v:8.3f} ms" + (f"   tpsim {p:8.3f} ms" if price else ""))
        parts = sum(v for k, v in g.items() if k != "layer")
        print(f"  {'sum':10s} {parts:8.3f} ms")
    sw = {k.split("|")[1]: v for k, v in ms.items() if k.startswith("sweep|")}
    pad = ms[f"{MB.SHAPES['quick'][0].label()}|pad"]
    for k in sorted((k for k in sw if "a2a" in k), key=lambda k: int(k.split()[-1])):
        n = k.split()[-1]
        print(f"  all-to-all {n:>9s} B  {sw[k] - pad:8.3f} ms   all-gather "
              f"{sw[f'pad + ag {n}'] - pad:8.3f} ms")


if __name__ == "__main__":
    main()
