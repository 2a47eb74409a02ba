"""Run a function on N gloo ranks on localhost (torch.multiprocessing spawn) and collect results."""
from __future__ import annotations

import datetime
import pickle
import socket
import traceback
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, outdir, fn, args):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        result = ("ok", fn(*args))
    except BaseException as e:                       # noqa: BLE001 - sent to the parent
        result = ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    Path(outdir, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    dist.barrier()                                   # no rank tears down while a peer works
    dist.destroy_process_group()


def run_ranks(world: int, fn, *args, tmpdir) -> list:
    """``fn(*args)`` on ``world`` ranks; its per-rank return values, rank order. ``fn`` must be
    importable (module level)."""
    import torch.multiprocessing as mp
    try:
        mp.spawn(_entry, args=(world, free_port(), str(tmpdir), fn, args), nprocs=world,
                 join=True)
    except mp.ProcessExitedException:
        # gloo can abort a process while tearing down its group on a loaded machine, after the
        # work under test is done; only a rank without its result is a failure
        if not all(Path(tmpdir, f"rank{r}.pkl").exists() for r in range(world)):
            raise
    out = []
    for r in range(world):
        status, value = pickle.loads(Path(tmpdir, f"rank{r}.pkl").read_bytes())
        if status != "ok":
            raise AssertionError(f"rank {r} failed: {value}")
        out.append(value)
    return out
