"""The stages of validate/run.py on an initialised process group (torch).

Each rank beats a heartbeat into the rendezvous store at every step; when a collective times out,
the rank that noticed reads the heartbeats and names the rank(s) that stopped reporting.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import bench as B
import layer_bench as L
import report as R
import shapes as S
from tpsim import calibrate
from tpsim.tp.check import check_all, failures
from tpsim.topology import load_topology


class Heartbeat:
    """``tpsim/hb/<rank>`` = "<unix time>|<stage>" in the store, refreshed at every step."""

    def __init__(self, store, rank: int, world: int):
        self.store, self.rank, self.world = store, rank, world

    def beat(self, stage: str) -> None:
        if self.store is not None:
            self.store.set(f"tpsim/hb/{self.rank}", f"{time.time():.3f}|{stage}")

    def laggards(self) -> str:
        """Ranks ordered by how long ago they last reported, stalest first."""
        if self.store is None:
            return "no heartbeat store"
        seen = []
        for r in range(self.world):
            try:
                self.store.set_timeout(datetime.timedelta(seconds=2))
                stamp, stage = self.store.get(f"tpsim/hb/{r}").decode().split("|", 1)
                seen.append((float(stamp), r, stage))
            except Exception:                               # noqa: BLE001 - never reported
                seen.append((0.0, r, "never started"))
        now = time.time()
        seen.sort()
        return "; ".join(f"rank {r} last reported {now - t:.0f} s ago in '{st}'"
                         if t else f"rank {r} never reported" for t, r, st in seen[:3])


class Harness:
    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.cuda = torch.cuda.is_available()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.cuda:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            self.backend, self.dtype, self.dtype_name = "nccl", torch.bfloat16, "bf16"
        else:
            self.device = torch.device("cpu")
            self.backend, self.dtype, self.dtype_name = "gloo", torch.float32, "fp32"
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            threads = args.threads or max(1, (os.cpu_count() or 1) // local)
            torch.set_num_threads(threads)
        self.attention = args.attention if args.attention != "auto" else (
            "fused" if self.cuda else "unfused")
        dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=args.timeout),
                                **({"device_id": self.device} if self.cuda else {}))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # one host, one clock: start timed regions on a shared deadline (bench.start_together)
        self.aligned = not self.cuda and \
            int(os.environ.get("LOCAL_WORLD_SIZE", self.world)) == self.world
        store = getattr(dist.distributed_c10d, "_get_default_store", lambda: None)()
        self.hb = Heartbeat(store, self.rank, self.world)
        self.hb.beat("start")
        self.stage = "start"
        self.out = Path(args.out)

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
        peer = isinstance(e, getattr(dist, "DistError", RuntimeError)) or any(
            w in str(e).lower() for w in ("timed out", "timeout", "connection", "peer"))
        if peer:
            sys.stderr.write(f"validate: a peer rank likely died or hangs (collective timeout "
                             f"{self.args.timeout:.0f} s): {self.hb.laggards()}\n")
        else:
            import traceback
            traceback.print_exc()

    def _enter(self, stage: str) -> None:
        self._maybe_fault(stage)
        self.stage = stage
        self.hb.beat(stage)
        if self.rank == 0:
            sys.stderr.write(f"validate: {stage} ({time.perf_counter() - self.t0:.0f} s)\n")

    def _maybe_fault(self, stage: str) -> None:
        """Test hook: --fault RANK:die or RANK:hang on the way into the first stage."""
        if not self.args.fault or stage != "correctness":
            return
        who, what = self.args.fault.split(":")
        if int(who) == self.rank:
            if what == "die":
                os._exit(3)
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
                           hidden=16 * p, heads=2 * p, kv_heads=p, ffn=32 * p)
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

    def measure(self) -> tuple[dict, list[dict]]:
        """Microbenchmarks and layers, interleaved round by round (see bench.measure)."""
        self._enter("microbenchmarks + layers")
        mode, rounds = self.args.mode, S.REPEATS[self.args.mode]
        dt, dev = self.dtype, self.device
        coll = B.collective_items(S.COLLECTIVE_SIZES[mode], dt, dev)
        gemm = B.gemm_items(S.fit_gemms(mode, self.world), dt, dev)
        elem = B.elementwise_items(S.ELEMENTWISE_SIZES[mode], dt, dev)
        layers = L.layer_items(self.plan(), self.attention, dt, dev)
        items = coll + gemm + elem + layers
        bar = self._progress(rounds + 1, f"rounds of {len(items)} timings")
        sec = B.measure(items, dev, rounds, bar, aligned=self.aligned)
        micro = {"collectives": B.collective_rows(coll, sec), "gemms": B.rows_of(gemm, sec, "gemm/"),
                 "elementwise": B.rows_of(elem, sec, "elem/"), "rounds": rounds}
        measured = [{**it.info, "measured_s": sec[it.key], "rounds_s": B.measure.raw[it.key]}
                    for it in layers]
        self._enter("breakdown")
        bar = self._progress(len(layers), "instrumented layers")
        for it, row in zip(layers, measured):
            row.update(L.breakdown(it.fn, it.setup, dev, aligned=self.aligned))
            bar.step(it.key)
        return micro, measured

    def fit(self, micro: dict) -> calibrate.Calibration:
        self._enter("fit")
        cfit = calibrate.fit_collectives([(r["op"], r["size_bytes"], r["time_s"])
                                          for r in micro["collectives"]], self.world)
        kfit = calibrate.fit_compute(
            [(r["m"], r["n"], r["k"], r["batch"], r["time_s"]) for r in micro["gemms"]],
            [(r["bytes"], r["time_s"]) for r in micro["elementwise"]])
        cal = calibrate.Calibration(cfit, kfit, self.dtype_name, self.device_name(),
                                    self.memory_GB(), notes=(f"Backend {self.backend}, torch "
                                                             f"{torch.__version__}, "
                                                             f"{torch.get_num_threads()} thread(s)"
                                                             " per rank.",))
        if self.rank == 0:
            calibrate.write_calibrated_topology(self.out / "calibrated.yaml", cal)
        dist.barrier()
        return cal

    def report(self, micro, cal, measured, checks) -> None:
        self._enter("report")
        if self.rank != 0:
            return
        topo = load_topology(self.out / "calibrated.yaml")
        main = [r for r in measured if r["layer"] != "naive_mlp"]
        naive = [{**{k: v for k, v in r.items() if k != "shape_obj"},
                  "shape": r["shape_obj"].label()} for r in measured if r["layer"] == "naive_mlp"]
        cases = R.build_cases(main, topo, self.world, self.dtype_name, self.attention)
        env = self.environment()
        report = {"summary": R.summarize(cases), "cases": cases, "baseline": naive,
                  "environment": env, "correctness": self._checks(checks),
                  "fit": {"collectives": dataclasses.asdict(cal.collectives),
                          "compute": dataclasses.asdict(cal.compute)},
                  "collectives": R.collective_rows(micro["collectives"], topo),
                  "gemms": micro["gemms"], "elementwise": micro["elementwise"],
                  "fit_shapes": [s.as_dict() for s in S.FIT[self.args.mode]],
                  "calibrated_topology": str(self.out / "calibrated.yaml")}
        R.write_json(self.out / "report.json", report)
        (self.out / "report.md").write_text(R.render_md(report))
        s = report["summary"]
        sys.stderr.write(f"validate: median |error| {s['median_abs_error_pct']:.1f}%, max "
                         f"{s['max_abs_error_pct']:.1f}% over {s['cases']} cases; wrote "
                         f"{self.out / 'report.md'}, report.json, calibrated.yaml "
                         f"({env['wall_s']:.0f} s)\n")

    # ------------------------------------------------------------------ environment
    def device_name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return f"CPU {name}"

    def memory_GB(self) -> float:
        if self.cuda:
            return torch.cuda.get_device_properties(self.device).total_memory / 1e9
        try:
            kb = int(Path("/proc/meminfo").read_text().split()[1])
            return kb * 1024 / 1e9 / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        except (OSError, ValueError, IndexError):
            return 1.0

    def environment(self) -> dict:
        env = {"backend": self.backend, "device": self.device_name(), "world_size": self.world,
               "dtype": self.dtype_name, "torch": torch.__version__,
               "threads_per_rank": torch.get_num_threads(), "attention": self.attention,
               "mode": self.args.mode, "rounds": S.REPEATS[self.args.mode],
               "aligned_starts": self.aligned, "python": platform.python_version(),
               "host": platform.node(), "wall_s": time.perf_counter() - self.t0,
               "nnodes": int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1),
               "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE", "1"))}
        if self.cuda:
            env["cuda"] = torch.version.cuda
            v = torch.cuda.nccl.version()
            env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            env["driver"] = _nvidia_driver()
        return env


def _nvidia_driver() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0]
    except Exception:                                        # noqa: BLE001
        return "unknown"
