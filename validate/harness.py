"""The stages of validate/run.py on an initialised process group (torch).

Each rank beats a heartbeat into the rendezvous store at every step, and leaves its exception
there when it fails; when a collective times out or a peer's connection closes, or the launcher
ends a rank because a peer exited, that rank reads the store and names the rank that failed
first (with its exception), else the rank whose process is gone, else the rank(s) behind.
"""
from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import bench as B
import calibration as CAL
import kernels as K
import layer_bench as L
import machine as M
import moe_bench as MB
import report as R
import shapes as S
from atomic import write_text_atomic
from tpsim.tp.check import check_all, check_moe, failures
from tpsim.cluster.topology import load_topology


class Heartbeat:
    """``tpsim/hb/<rank>`` = "<beats>|<unix time>|<stage>" in the store, refreshed at every step.

    Every rank beats at the same steps in the same order, so when a collective times out the
    rank(s) with the fewest beats are the ones that stopped; the others wait for them.
    """

    def __init__(self, store, rank: int, world: int):
        self.store, self.rank, self.world, self.beats = store, rank, world, 0
        self.host = socket.gethostname()
        if store is not None:            # where this rank runs: a peer on its host can tell
            store.set(f"tpsim/pid/{rank}", f"{self.host}|{os.getpid()}")   # if it is gone

    def beat(self, stage: str) -> None:
        self.beats += 1
        if self.store is not None:
            self.store.set(f"tpsim/hb/{self.rank}", f"{self.beats}|{time.time():.3f}|{stage}")

    def fail(self, what: str) -> None:
        """Leave word that this rank failed on its own (the others then name it)."""
        if self.store is not None:
            try:
                self.store.set(f"tpsim/hb/{self.rank}",
                               f"{self.beats}|{time.time():.3f}|failed: {what}")
            except Exception:                               # noqa: BLE001 - best effort
                pass

    def read(self) -> list[tuple[int, float, int, str]]:
        """(beats, unix time, rank, stage) per rank; a rank that never reported has 0 beats."""
        seen = []
        for r in range(self.world):
            try:
                self.store.set_timeout(datetime.timedelta(seconds=2))
                n, stamp, stage = self.store.get(f"tpsim/hb/{r}").decode().split("|", 2)
                seen.append((int(n), float(stamp), r, stage))
            except Exception:                               # noqa: BLE001 - never reported
                seen.append((0, 0.0, r, "never started"))
        return seen

    def dead(self) -> list[int]:
        """Ranks on this host whose process is gone (killed, or crashed outside Python): the
        launcher reaps a rank that exits before it ends the others, so its pid no longer
        exists. Ranks on other hosts cannot be checked and are never listed."""
        gone = []
        for r in range(self.world):
            try:
                self.store.set_timeout(datetime.timedelta(seconds=2))
                host, pid = self.store.get(f"tpsim/pid/{r}").decode().split("|")
                if host == self.host and r != self.rank:
                    os.kill(int(pid), 0)
                    if _zombie(int(pid)):                    # exited, not yet reaped
                        raise ProcessLookupError
            except ProcessLookupError:
                gone.append(r)
            except Exception:                               # noqa: BLE001 - cannot tell
                pass
        return gone

    def stopped(self) -> str:
        """The rank(s) that stopped reporting, named, and where the others are."""
        if self.store is None:
            return "no heartbeat store to tell which rank stopped"
        try:
            seen, dead = self.read(), self.dead()
        except Exception:                                   # noqa: BLE001
            return "the rendezvous store (on rank 0's host) does not answer: rank 0 likely died"
        return stopped_ranks(seen, time.time(), dead)


def stopped_ranks(seen: list[tuple[int, float, int, str]], now: float,
                  dead: list[int] = ()) -> str:
    """Name the rank that failed first and its exception (the earliest 'failed: ' word), else
    the ranks whose process is gone (``dead``), else those behind the others (fewest beats;
    with equal beats, the stalest). Only the last is a guess: a rank that crashed in step
    with the others is found by the first two, not named beside the ranks still waiting."""
    failed = sorted((t, r, st[len("failed: "):], n) for n, t, r, st in seen
                    if st.startswith("failed: "))
    if failed:
        t, r, cause, n = failed[0]
        more = "".join(f"; then rank {r2} failed: {c2}" for _, r2, c2, _ in failed[1:4])
        return f"rank {r} failed first, in its step {n}: {cause}{more}"
    if dead:
        last = {r: (n, st) for n, _, r, st in seen}
        return "; ".join(f"rank {r} died (its process is gone without reporting an "
                         f"exception: killed, or crashed outside Python), last in "
                         f"'{last[r][1]}' (step {last[r][0]})" for r in dead[:8])
    least = min(n for n, _, _, _ in seen)
    behind = [x for x in seen if x[0] == least]
    if len(behind) == len(seen):                 # all at the same step: the stalest one(s)
        oldest = min(t for _, t, _, _ in seen)
        behind = [x for x in seen if x[1] - oldest < 1.0] if len(seen) > 1 else seen
    ahead = [x for x in seen if x not in behind]

    def say(x):
        n, t, r, st = x
        return f"rank {r} never reported" if not n else \
            f"rank {r} last reported {now - t:.0f} s ago in '{st}' (step {n})"
    text = "stopped: " + "; ".join(say(x) for x in behind[:8]) + \
        (f" and {len(behind) - 8} more" if len(behind) > 8 else "")
    if ahead:
        top = max(ahead)
        others = ", ".join(str(x[2]) for x in ahead[:8]) + (" ..." if len(ahead) > 8 else "")
        text += f"; waiting for it: rank(s) {others} (at step {top[0]}, '{top[3]}')"
    return text


class Harness:
    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.load_start = _load_average()
        self.cuda = torch.cuda.is_available()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if self.cuda:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            self.backend, self.dtype, self.dtype_name = "nccl", torch.bfloat16, "bf16"
        else:
            self.device = torch.device("cpu")
            self.backend, self.dtype, self.dtype_name = "gloo", torch.float32, "fp32"
            self.cores = M.pin_to_cores(self.local_rank, self.local)
            self.kept_memory = M.keep_freed_memory()
            torch.set_num_threads(args.threads or max(1, len(self.cores or ())
                                                      or (os.cpu_count() or 1) // self.local))
        self.attention = args.attention if args.attention != "auto" else (
            "fused" if self.cuda else "unfused")
        dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=args.timeout),
                                **({"device_id": self.device} if self.cuda else {}))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local = min(self.local, self.world)
        # one host, one clock: start timed regions on a shared deadline (bench.start_together)
        self.aligned = not self.cuda and self.local == self.world
        store = getattr(dist.distributed_c10d, "_get_default_store", lambda: None)()
        self.hb = Heartbeat(store, self.rank, self.world)
        self.stage = "start"
        self.hb.beat("start")
        self.out = Path(args.out)
        self.node_group = self._node_groups()
        signal.signal(signal.SIGTERM, self._terminated)

    def _terminated(self, signum, frame) -> None:
        """torchrun ends the other ranks when one exits: say which one stopped first."""
        sys.stderr.write(f"\nvalidate: rank {self.rank}: ended by the launcher in stage "
                         f"'{self.stage}' (a peer rank exited); {self.hb.stopped()}\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def _node_groups(self):
        """This rank's node-local process group (None: the whole world is one node)."""
        if self.local == self.world:
            return None
        groups = [dist.new_group(list(range(i, i + self.local)))
                  for i in range(0, self.world, self.local)]
        return groups[self.rank // self.local]

    # ------------------------------------------------------------------ driver
    def run(self) -> int:
        try:
            ok, checks = self.correctness()
            if not ok:
                return 1
            micro, measured = self.measure()
            cal = self.fit(micro)
            self.report(micro, cal, measured, checks)
            dist.barrier()
            return 0
        except Exception as e:                               # noqa: BLE001 - reported below
            self._fail(e)
            return 1
        finally:
            if dist.is_initialized():
                try:
                    dist.destroy_process_group()
                except Exception:                            # noqa: BLE001
                    pass

    def _fail(self, e: Exception) -> None:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(f"\nvalidate: rank {self.rank}: stage '{self.stage}' failed: "
                         f"{type(e).__name__}: {text}\n")
        low = str(e).lower()
        timeout = any(w in low for w in ("timed out", "timeout"))
        peer = timeout or isinstance(e, getattr(dist, "DistError", RuntimeError)) or any(
            w in low for w in ("connection", "peer", "broken pipe", "closed", "reset"))
        if peer:
            why = (f"a peer rank hangs or died (collective timeout {self.args.timeout:g} s)"
                   if timeout else "a peer rank's connection closed (it exited)")
            time.sleep(0.5)              # the launcher reaps the rank that exited meanwhile
            sys.stderr.write(f"validate: {why}; {self.hb.stopped()}\n")
        else:
            self.hb.fail(f"{self.stage}: {type(e).__name__}: {text}"[:200])
            import traceback
            traceback.print_exc()

    def _enter(self, stage: str) -> None:
        self._maybe_fault(stage, "hang")
        self.stage = stage
        self.hb.beat(stage)
        self._maybe_fault(stage, "die", "raise")
        if self.rank == 0:
            sys.stderr.write(f"validate: {stage} ({time.perf_counter() - self.t0:.0f} s)\n")

    def _maybe_fault(self, stage: str, *kinds: str) -> None:
        """Test hook (tests/distributed/test_validate_run.py): --fault RANK:hang stops before
        the first stage's heartbeat (the rank falls behind); RANK:die (exit at once, no word
        left) and RANK:raise (an exception) strike after it, in step with the other ranks."""
        if not self.args.fault or stage != "correctness":
            return
        who, what = self.args.fault.split(":")
        if int(who) == self.rank and what in kinds:
            if what == "die":
                os._exit(3)
            if what == "raise":
                raise ValueError(f"injected failure on rank {self.rank} (--fault)")
            time.sleep(10 * self.args.timeout)

    def _progress(self, total: int, label: str) -> B.Progress:
        bar = B.Progress(total, label, self.rank)
        step = bar.step
        bar.step = lambda note="": (self.hb.beat(f"{label}: {note}"), step(note))
        return bar

    # ------------------------------------------------------------------ stages
    def correctness(self):
        self._enter("correctness")
        p = self.world
        checks = check_all(dtype=self.dtype, device=self.device, seq=4 * p, batch=2,
                           hidden=16 * p, heads=2 * p, kv_heads=p, ffn=32 * p) + check_moe(
                               dtype=self.dtype, device=self.device)
        bad = failures(checks)
        flags = torch.tensor([len(bad)], device=self.device)
        dist.all_reduce(flags)
        if bad:
            sys.stderr.write(f"validate: rank {self.rank}: CORRECTNESS FAILED:\n  "
                             + "\n  ".join(bad) + "\n")
        if int(flags.item()) and self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            R.write_json(self.out / "report.json", {"correctness": self._checks(checks),
                                                    "environment": self.environment()})
            sys.stderr.write(f"validate: correctness failed; see {self.out / 'report.json'}\n")
        return int(flags.item()) == 0, checks

    def _checks(self, checks) -> dict:
        return {"checked": len(checks), "failures": failures(checks),
                "dtype": self.dtype_name, "tolerance": max(c.tol for c in checks),
                "metric": "max |parallel - reference| / max |reference|",
                "results": [c.as_dict() for c in checks]}

    def plan(self) -> list[tuple]:
        """(shape, block, phase) of every timed layer: EVAL shapes only."""
        return [(sh, blk, ph) for sh in S.EVAL[self.args.mode]
                for blk in ("mlp", "attention", "naive_mlp")
                for ph in ("forward", "forward_backward")
                if not (blk == "naive_mlp" and sh.activation != "gelu")]

    def _kernel_items(self) -> list:
        """Every compute op tpsim's graph prices for the FIT shapes' blocks, the grid, the
        attention-like batched GEMMs and the copies."""
        mode, items = self.args.mode, []
        for sh in S.FIT[mode]:
            for blk in ("mlp", "attention"):
                items += K.block_items(sh, blk, self.world, self.dtype_name, self.attention,
                                       self.dtype, self.device)
        dt = (self.dtype_name, self.dtype, self.device)
        return items + K.grid_items(S.GEMM_GRID[mode], *dt) + K.thin_items(S.THIN_GEMMS[mode], *dt) \
            + K.stream_items(S.FIT[mode], self.world, *dt)

    def measure(self) -> tuple[dict, list[dict]]:
        """Microbenchmarks and layers, interleaved round by round (see bench.measure)."""
        self._enter("microbenchmarks + layers")
        mode, rounds = self.args.mode, S.REPEATS[self.args.mode]
        dt, dev = self.dtype, self.device
        coll = B.collective_items(S.COLLECTIVE_SIZES[mode], dt, dev, self.node_group, "local")
        if self.node_group is not None:
            coll += B.collective_items(S.COLLECTIVE_SIZES[mode], dt, dev, None, "world")
        kern = self._kernel_items()
        layers = (L.layer_items(self.plan(), self.attention, dt, dev)
                  + MB.moe_items(mode, self.world, dt, dev))
        items = coll + kern + layers
        bar = self._progress(rounds + 1, f"rounds of {len(items)} timings")
        sec = B.measure(items, dev, rounds, bar, aligned=self.aligned)
        rows = B.collective_rows(coll, sec)
        micro = {"local": [r for r in rows if r["group"] == "local"],
                 "world": [r for r in rows if r["group"] == "world"],
                 "kernels": B.rows_of(kern, sec), "rounds": rounds}
        measured = [{**it.info, "measured_s": sec[it.key], "rounds_s": B.measure.raw[it.key]}
                    for it in layers]
        self._enter("breakdown")
        bar = self._progress(len(layers), "instrumented layers")
        for it, row in zip(layers, measured):
            row.update(L.breakdown(it.fn, it.setup, dev, aligned=self.aligned))
            bar.step(it.key)
        return micro, measured

    def fit(self, micro: dict) -> dict:
        self._enter("fit")
        name = M.device_name(self.device)
        threads = torch.get_num_threads()
        stated = (M.cpu_peak_flops(threads) if not self.cuda
                  else (M.shipped_peak(name, self.dtype_name) or (None,))[0])
        run = CAL.Run(self.dtype_name, name, M.memory_GiB(self.device), self.world, self.local,
                      micro["kernels"], micro["local"], micro["world"], stated,
                      cache_bytes=None if self.cuda else M.cpu_l2_bytes())
        header = [f"Calibrated by tpsim validate/run.py (tpsim.calibrate.fitting) on microbenchmarks only: "
                  f"{self.world} ranks ({self.world // self.local} node(s) of {self.local}) of "
                  f"{name}, {self.dtype_name}, backend {self.backend}, torch {torch.__version__}, "
                  f"{threads} thread(s) per rank.",
                  "Each fitted key's comment says what it was fitted on and its standard error "
                  "(1 s.e.).", "GB = 1e9 bytes."]
        cal = None if self.rank else CAL.calibrate(run, self.out / "calibrated.yaml",
                                                   self.args.topology, header)
        dist.barrier()
        return cal

    def report(self, micro, cal, measured, checks) -> None:
        self._enter("report")
        if self.rank != 0:
            return
        topo = load_topology(self.out / "calibrated.yaml")
        main = [r for r in measured if r["layer"] not in ("naive_mlp", "moe")]
        naive = [{**{k: v for k, v in r.items() if k != "shape_obj"},
                  "shape": r["shape_obj"].label()} for r in measured if r["layer"] == "naive_mlp"]
        cases = R.build_cases(main, topo, self.world, self.dtype_name, self.attention)
        env = self.environment()
        report = {"summary": R.summarize(cases), "cases": cases, "baseline": naive,
                  "environment": env, "correctness": self._checks(checks), "fit": cal,
                  "collectives": R.collective_rows(micro["local"] + micro["world"], topo),
                  "kernels": R.kernel_rows(micro["kernels"], topo),
                  "fit_shapes": [s.as_dict() for s in S.FIT[self.args.mode]],
                  "calibrated_topology": "calibrated.yaml",   # beside report.json
                  "moe": MB.moe_cases(measured, topo, self.world, self.dtype_name)}
        R.write_json(self.out / "report.json", report)
        write_text_atomic(self.out / "report.md", R.render_md(report) + MB.render_md(report["moe"]))
        s = report["summary"]
        sys.stderr.write(f"validate: median |error| {s['median_abs_error_pct']:.1f}%, max "
                         f"{s['max_abs_error_pct']:.1f}% over {s['cases']} cases; wrote "
                         f"{self.out / 'report.md'}, report.json, calibrated.yaml "
                         f"({env['wall_s']:.0f} s)\n")

    def environment(self) -> dict:
        return {"backend": self.backend, "device": M.device_name(self.device),
                "world_size": self.world, "dtype": self.dtype_name,
                "threads_per_rank": torch.get_num_threads(), "attention": self.attention,
                "pinned_cores": getattr(self, "cores", None),
                "freed_memory_kept": getattr(self, "kept_memory", False),
                "mode": self.args.mode, "rounds": S.REPEATS[self.args.mode],
                "aligned_starts": self.aligned, "wall_s": time.perf_counter() - self.t0,
                "nnodes": self.world // self.local, "local_world_size": self.local,
                "load_average_start": self.load_start, "load_average": _load_average(),
                **M.versions(self.device)}


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (a busy shared machine shows here)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (Linux /proc; elsewhere: no)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
