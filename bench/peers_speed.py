"""tpsim beside Calculon and llm-analysis on the same jobs, in CPU seconds (wall time on a shared
machine is noise).

    python bench/peers_speed.py [--peer-python PATH] [--calculon-dir DIR] [--repeats 5]
                                [--search-timeout 900]

The peers are not dependencies of tpsim; install them into an environment of their own,

    python -m venv /tmp/peers && git clone https://github.com/calculon-ai/calculon /tmp/peers/calculon
    /tmp/peers/bin/pip install llm-analysis==0.2.2 pandas psutil /tmp/peers/calculon

and pass ``--peer-python /tmp/peers/bin/python --calculon-dir /tmp/peers/calculon`` (or set
TPSIM_PEER_PYTHON and TPSIM_CALCULON_DIR; Calculon's system files live in its checkout, not in
its package). Without them their columns say why they did not run.

The jobs: GPT-3 175B (sequence 2048, global batch 1536, micro-batch 1, full recomputation) on
64 A100s (TP 8, PP 8, DP 1) and on 512 (TP 8, PP 8, DP 8); tpsim on dgx-a100-hdr-cluster sized to
the job (``--nodes``), the peers on their A100 80 GB entries (bench/peers_speed_worker.py says
how each is asked). Per tool and job:

* ``process``: the median CPU seconds (user + system, resource.getrusage of the children) of a
  fresh command that predicts the job's step: ``tpsim predict``, ``calculon llm``,
  ``python -m llm_analysis.analysis train``; interpreter start, imports and printing included;
* ``call``: the median CPU seconds of one prediction through the Python API in a warm process,
  after a first call: tpsim with every memo emptied before each call (tpsim.base.memo.clear_all:
  nothing kept from the last call), the peers as they are (they keep nothing);
* ``search``: CPU seconds of one whole search for the job's GPUs and global batch (a single
  run): ``tpsim search`` and Calculon's ``llm-optimal-execution`` (one worker process, -c 1,
  its MBS break on, -m); llm-analysis has none. A search still running after
  ``--search-timeout`` wall seconds is stopped and reported as not finished.

Each row also prints the step time the tool predicts (seconds), a check that all three priced
the same job, not a comparison of their accuracy (bench/megatron_published.py is that, for
tpsim). The load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = [dict(id="gpt3-64", gpus=64, tp=8, pp=8, dp=1, global_batch=1536, seq=2048),
        dict(id="gpt3-512", gpus=512, tp=8, pp=8, dp=8, global_batch=1536, seq=2048)]
WORKER = Path(__file__).with_name("peers_speed_worker.py")
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def child_cpu_s(cmd: list[str], timeout: float | None = None) -> float | None:
    """CPU seconds of ``cmd`` and its waited-for children; None past ``timeout`` wall seconds
    (the command and its workers, one process group, are stopped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=CHILD_ENV, start_new_session=True)
    try:
        err = child.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return None
    if child.returncode:
        raise RuntimeError(f"{cmd[:3]} failed: {err.decode()[-300:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def process_s(cmd: list[str], repeats: int) -> float:
    child_cpu_s(cmd)                    # warm the file cache, write the bytecode
    return statistics.median(child_cpu_s(cmd) for _ in range(repeats))


def tpsim_predict_argv(job) -> list[str]:
    return ["predict", "--model", "gpt3", "--topology", "dgx-a100-hdr-cluster", "--tp",
            str(job["tp"]), "--pp", str(job["pp"]), "--dp", str(job["dp"]), "--global-batch",
            str(job["global_batch"]), "--seq", str(job["seq"]), "--recompute", "full",
            "--nodes", str(job["gpus"] // 8)]


def tpsim_rows(repeats: int, search_timeout: float) -> dict:
    from tpsim.base.memo import clear_all
    from tpsim.training.predict import predict
    out = {}
    for job in JOBS:
        kw = dict(tp=job["tp"], pp=job["pp"], dp=job["dp"], global_batch=job["global_batch"],
                  seq_len=job["seq"], recompute="full", nodes=job["gpus"] // 8)
        step = predict("gpt3", "dgx-a100-hdr-cluster", **kw).step.time_s
        calls = []
        for _ in range(repeats):
            clear_all()
            t0 = time.process_time()
            predict("gpt3", "dgx-a100-hdr-cluster", **kw)
            calls.append(time.process_time() - t0)
        search = ["search", "--model", "gpt3", "--topology", "dgx-a100-hdr-cluster", "--gpus",
                  str(job["gpus"]), "--global-batch", str(job["global_batch"])]
        out[job["id"]] = dict(
            process=process_s([sys.executable, "-m", "tpsim", *tpsim_predict_argv(job)],
                              repeats),
            call=statistics.median(calls), step=step,
            search=child_cpu_s([sys.executable, "-m", "tpsim", *search], search_timeout))
    return out


def peer_rows(python: str | None, calculon_dir: str | None, repeats: int,
              search_timeout: float) -> tuple[dict, str]:
    """{tool: {job id: row}} for the peers, or why they did not run."""
    if not python:
        return {}, "not run: no --peer-python (or TPSIM_PEER_PYTHON) given"
    if not calculon_dir or not Path(calculon_dir, "systems", "a100_80g.json").is_file():
        return {}, "not run: no --calculon-dir (or TPSIM_CALCULON_DIR) holding systems/"
    system = str(Path(calculon_dir, "systems", "a100_80g.json"))
    ask = {"jobs": JOBS, "calculon_system": system, "repeats": repeats}
    done = subprocess.run([python, str(WORKER)], input=json.dumps(ask), capture_output=True,
                          text=True)
    if done.returncode:
        return {}, f"not run: the worker failed ({done.stderr.strip().splitlines()[-1:]})"
    api = json.loads(done.stdout)
    calculon = str(Path(python).parent / "calculon")
    out: dict = {"Calculon": {}, "llm-analysis": {}}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(WORKER.parent))
        from peers_speed_worker import GPT3, LA_GPT3, calculon_exe
        model, la_model = Path(tmp, "gpt3.json"), Path(tmp, "gpt3-la.json")
        model.write_text(json.dumps(GPT3))
        la_model.write_text(json.dumps(LA_GPT3))
        for job in JOBS:
            exe = Path(tmp, f"{job['id']}.json")
            exe.write_text(json.dumps(calculon_exe(job)))
            out["Calculon"][job["id"]] = _row(api["Calculon"][job["id"]], dict(
                process=process_s([calculon, "llm", str(model), str(exe), system,
                                   str(Path(tmp, "stats.json"))], repeats),
                search=child_cpu_s([calculon, "llm-optimal-execution", str(model),
                                    str(job["gpus"]), str(job["global_batch"]), "float16",
                                    system, str(Path(tmp, "best.json")), "-c", "1", "-m"],
                                   search_timeout)))
            out["llm-analysis"][job["id"]] = _row(api["llm-analysis"][job["id"]], dict(
                process=process_s([python, "-m", "llm_analysis.analysis", "train",
                                   "--model_name", str(la_model), "--gpu_name",
                                   "a100-sxm-80gb", "--tp_size", str(job["tp"]), "--pp_size",
                                   str(job["pp"]), "--dp_size", str(job["dp"]),
                                   "--global_batch_size", str(job["global_batch"]),
                                   "--batch_size_per_gpu", "1", "--seq_len", str(job["seq"]),
                                   "--activation_recomputation", "2", "--log_level", "ERROR"],
                                  repeats), search="none"))
    return out, ""


def _row(api: dict, cli: dict) -> dict:
    if "error" in api:
        return {**cli, "call": api["error"], "step": None}
    return {**cli, "call": api["call_s"], "step": api["step_s"]}


def _cell(x, timeout: float) -> str:
    if x is None:
        return f"not finished in {timeout:.0f} s"
    return f"{x:.4f}" if isinstance(x, float) and x < 0.01 else \
        f"{x:.3f}" if isinstance(x, float) else str(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", default=os.environ.get("TPSIM_PEER_PYTHON"))
    ap.add_argument("--calculon-dir", default=os.environ.get("TPSIM_CALCULON_DIR"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--search-timeout", type=float, default=900.0)
    args = ap.parse_args()
    rows = {"tpsim": tpsim_rows(args.repeats, args.search_timeout)}
    peers, why = peer_rows(args.peer_python, args.calculon_dir, args.repeats,
                           args.search_timeout)
    rows.update(peers)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; CPU seconds, "
          f"medians of {args.repeats} (searches: one run)")
    print("| tool | job | process (CPU s) | call (CPU s) | search (CPU s) | step (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tool, jobs in rows.items():
        for job, r in jobs.items():
            step = f"{r['step']:.1f}" if r.get("step") else "-"
            print(f"| {tool} | {job} | {_cell(r['process'], 0)} | {_cell(r['call'], 0)} | "
                  f"{_cell(r['search'], args.search_timeout)} | {step} |")
    if why:
        print(f"Calculon, llm-analysis: {why}")


if __name__ == "__main__":
    main()
