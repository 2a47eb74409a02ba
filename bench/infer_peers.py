"""tpsim infer beside published serving measurements and two peers, llm-analysis and GenZ.

    python bench/infer_peers.py [--peer-python PATH]

The measurements (Llama 2/3 70B on H100, H200 and A100 at TP 2-4, bf16/fp16 and fp8) are used
in no fit: tpsim's numbers come from the shipped topologies as they are. The peers are not
dependencies of tpsim; install them into an environment of their own,

    python -m venv /tmp/peers && /tmp/peers/bin/pip install llm-analysis==0.2.2 genz-llm==0.0.16

and pass ``--peer-python /tmp/peers/bin/python`` (or set TPSIM_PEER_PYTHON). Without it their
columns say why they did not run. bench/infer_peers_worker.py says how each peer is asked.

Every tool is read the same way: ttft = prefill; tpot = one decode step (tpsim: the exact mean
over the generated tokens); total = ttft + (gen - 1) tpot; throughput = batch gen / total.
Also: vLLM's custom all-reduce, tpsim's one-shot/two-shot model against vLLM's own H100 runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tpsim.cost.collectives import collective_time, custom_kernel_time
from tpsim.serving.infer import infer
from tpsim.cluster.topology import load_topology

TRT05 = "TensorRT-LLM v0.5 performance.md (gptSessionBenchmark, static batch)"
TRT061 = "TensorRT-LLM v0.6.1 performance.md (static batch)"
NIM = "NVIDIA NIM 1.8.0 Llama-3.3-70B FP8 TP2 (AIPerf, concurrency 1)"
VLLM = "vLLM CI latency test (Llama-3-70B bf16 TP4, in 32 / out 128, batch 8)"


def case(id, source, model, topology, tp, batch, prompt, gen, dtype, metric, measured,
         kv_dtype=None, allreduce="nccl"):
    # TensorRT-LLM v0.5/v0.6 decode GQA with masked multi-head attention (its XQA kernel came
    # with v0.8): --decode-attention trtllm-mmha; NIM and vLLM run later kernels
    kernel = "trtllm-mmha" if source in (TRT05, TRT061) else "tensor-cores"
    return dict(id=id, source=source, model=model, topology=topology, tp=tp, batch=batch,
                prompt=prompt, gen=gen, dtype=dtype, kv_dtype=kv_dtype or dtype,
                allreduce=allreduce, metric=metric, measured=measured, decode_attention=kernel)


CASES = [
    # TTFT, batch 1 (TRT-LLM builds --enable_fp8 --fp8_kv_cache on H100; fp16 on A100)
    case("trt-ttft-h100-128", TRT05, "llama2-70b", "dgx-h100", 4, 1, 128, 2, "fp8", "ttft_s", 26e-3),
    case("trt-ttft-h100-2048", TRT05, "llama2-70b", "dgx-h100", 4, 1, 2048, 2, "fp8", "ttft_s", 109e-3),
    case("trt-ttft-a100-128", TRT05, "llama2-70b", "dgx-a100", 4, 1, 128, 2, "fp16", "ttft_s", 47e-3),
    case("trt-ttft-a100-2048", TRT05, "llama2-70b", "dgx-a100", 4, 1, 2048, 2, "fp16", "ttft_s", 377e-3),
    # NIM (TensorRT-LLM, in-flight batching) at concurrency 1: TTFT and inter-token latency
    case("nim-5000-500-ttft", NIM, "llama3-70b", "dgx-h100", 2, 1, 5000, 500, "fp8", "ttft_s", 406.77e-3),
    case("nim-5000-500-itl", NIM, "llama3-70b", "dgx-h100", 2, 1, 5000, 500, "fp8", "tpot_s", 18.58e-3),
    case("nim-500-2000-ttft", NIM, "llama3-70b", "dgx-h100", 2, 1, 500, 2000, "fp8", "ttft_s", 47.77e-3),
    case("nim-500-2000-itl", NIM, "llama3-70b", "dgx-h100", 2, 1, 500, 2000, "fp8", "tpot_s", 18.91e-3),
    # vLLM CI end-to-end latency (CUDA graphs and its custom all-reduce, vLLM's defaults)
    case("vllm-h100", VLLM, "llama3-70b", "dgx-h100", 4, 8, 32, 128, "bf16", "total_s", 2.44447, allreduce="custom"),
    case("vllm-h200", VLLM, "llama3-70b", "dgx-h200", 4, 8, 32, 128, "bf16", "total_s", 2.07508, allreduce="custom"),
    case("vllm-a100", VLLM, "llama3-70b", "dgx-a100", 4, 8, 32, 128, "bf16", "total_s", 3.99059, allreduce="custom"),
    # throughput, total output tokens/s of the static batch (v0.5, H100 FP8, batch 64, TP4)
    case("trt-tput-128-128", TRT05, "llama2-70b", "dgx-h100", 4, 64, 128, 128, "fp8", "tokens_per_s", 3317),
    case("trt-tput-128-2048", TRT05, "llama2-70b", "dgx-h100", 4, 64, 128, 2048, "fp8", "tokens_per_s", 2616),
    case("trt-tput-2048-128", TRT05, "llama2-70b", "dgx-h100", 4, 64, 2048, 128, "fp8", "tokens_per_s", 843),
    case("trt-tput-2048-2048", TRT05, "llama2-70b", "dgx-h100", 4, 64, 2048, 2048, "fp8", "tokens_per_s", 1583),
    # v0.6.1 peak throughput, output tokens/s per GPU (H100 FP8; A100 fp16, see NOTES)
    case("trt061-h100-1024-tp2", TRT061, "llama2-70b", "dgx-h100", 2, 1024, 128, 128, "fp8", "tokens_per_s_per_gpu", 2657),
    case("trt061-h100-480-tp4", TRT061, "llama2-70b", "dgx-h100", 4, 480, 128, 2048, "fp8", "tokens_per_s_per_gpu", 1486),
    case("trt061-h100-96-tp2", TRT061, "llama2-70b", "dgx-h100", 2, 96, 2048, 128, "fp8", "tokens_per_s_per_gpu", 306),
    case("trt061-h100-64-tp2", TRT061, "llama2-70b", "dgx-h100", 2, 64, 2048, 2048, "fp8", "tokens_per_s_per_gpu", 547),
    case("trt061-a100-1280-tp4", TRT061, "llama2-70b", "dgx-a100", 4, 1280, 128, 128, "fp16", "tokens_per_s_per_gpu", 670),
    case("trt061-a100-240-tp4", TRT061, "llama2-70b", "dgx-a100", 4, 240, 128, 2048, "fp16", "tokens_per_s_per_gpu", 525),
    case("trt061-a100-120-tp4", TRT061, "llama2-70b", "dgx-a100", 4, 120, 2048, 128, "fp16", "tokens_per_s_per_gpu", 79),
]
LATENCY = ("ttft_s", "tpot_s", "total_s")
NOTES = [
    "TensorRT-LLM v0.6.1's A100 table heads its column 'out tok/s' where the H100 one says "
    "'out tok/s/GPU'; read as a total, Llama 70B at batch 1280 TP4 would take 245 s for 128 "
    "tokens (a compute-bound A100 does it in ~60 s), so it is read here per GPU, as for H100.",
    "TensorRT-LLM v0.5/v0.6 decoded GQA with masked MHA (XQA came with v0.8): one CTA per "
    "query head loads its KV head itself, the cache requested 8 times for Llama 2 70B, served "
    "by the L2 after the first, and each CTA converts and multiply-adds every element on "
    "the CUDA cores (tpsim.cost.mmha, counted from the kernel's code and priced per pipe at "
    "the CUDA C++ Programming Guide's rates, not fitted): their cases run --decode-attention "
    "trtllm-mmha (throughput median 30.1% before, 23.9% with the L2 term alone). Long-output "
    "H100 throughput is still fast (+35% to +47%): the rows imply 12-15 FP32-lane slots an "
    "element, 5.7 counted and priced (the issue slots bind); no sourced pipe rate is slower "
    "(bench/trtllm_mmha_published.py, docs/serving.md).",
    "NIM and vLLM run their engines' per-step CPU work (scheduling, sampling) that no tool here "
    "models; vLLM CI's latency test uses CUDA graphs and the custom all-reduce.",
]

# vLLM's own H100 all-reduce benchmarks (ms; bf16 tensors of 32..256 tokens x 8192 = 0.5..4 MiB)
VLLM_AR = {(6, "one-shot"): (0.013, 0.021, 0.038, 0.070), (6, "two-shot"): (0.015, 0.017, 0.026, 0.037),
           (6, "nccl"): (0.023, 0.025, 0.043, 0.053), (4, "one-shot"): (0.010, 0.014, 0.023, 0.038),
           (4, "two-shot"): (0.017, 0.018, 0.026, 0.042), (4, "nccl"): (0.021, 0.023, 0.028, 0.039)}
AR_SIZES = (2**19, 2**20, 2**21, 2**22)


def metric(c: dict, ttft: float, tpot: float) -> float:
    total = ttft + (c["gen"] - 1) * tpot
    tput = c["batch"] * c["gen"] / total
    return {"ttft_s": ttft, "tpot_s": tpot, "total_s": total, "tokens_per_s": tput,
            "tokens_per_s_per_gpu": tput / c["tp"]}[c["metric"]]


def tpsim_values() -> tuple[dict, float]:
    out, t0 = {}, time.process_time()
    for c in CASES:
        p = infer(c["model"], c["topology"], tp=c["tp"], batch=c["batch"], prompt=c["prompt"],
                  gen=c["gen"], dtype=c["dtype"], kv_dtype=c["kv_dtype"],
                  allreduce=c["allreduce"], decode_attention=c["decode_attention"],
                  memory_headroom=0.0)   # the memory as checked
        out[c["id"]] = {"value": metric(c, p.prefill.time_s, p.decode.time_per_token_s),
                        "fits": p.memory.fits}
    return out, time.process_time() - t0


def peer_values(python: str | None, cases=None) -> tuple[dict, str]:
    """{case id: {tool: values}} from the worker run by ``python`` on ``cases`` (default:
    CASES), and why not where it did not run."""
    if not python:
        return {}, "not run: no --peer-python (or TPSIM_PEER_PYTHON) given"
    worker = Path(__file__).with_name("infer_peers_worker.py")
    try:
        r = subprocess.run([python, str(worker)], input=json.dumps(cases or CASES),
                           capture_output=True,
                           text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {}, f"not run: {e}"
    if r.returncode:
        return {}, f"not run: the worker failed: {r.stderr.strip().splitlines()[-1:]}"
    return json.loads(r.stdout), ""


def _cell(value, measured) -> tuple[str, float | None]:
    if value is None:
        return f"{'-':>21s}", None
    err = 100 * (value / measured - 1)
    return f"{value:11.4g} ({err:+6.1f}%)", err


def report(ours: dict, peers: dict, why: str) -> None:
    tools = ("tpsim", "llm-analysis", "GenZ")
    errors = {t: {"latency": [], "throughput": []} for t in tools}
    print(f"{'case':24s} {'metric':20s} {'measured':>10s} " + " ".join(f"{t:>21s}" for t in tools))
    for c in CASES:
        cells = []
        for t in tools:
            if t == "tpsim":
                v = ours[c["id"]]["value"]
            else:
                got = peers.get(c["id"], {}).get(t, {})
                v = metric(c, got["ttft_s"], got["tpot_s"]) if "ttft_s" in got else None
            text, err = _cell(v, c["measured"])
            cells.append(text)
            if err is not None:
                errors[t]["latency" if c["metric"] in LATENCY else "throughput"].append(abs(err))
        print(f"{c['id']:24s} {c['metric']:20s} {c['measured']:10.4g} " + " ".join(cells))
    if why:
        print(f"llm-analysis, GenZ: {why}")
    for c in CASES:
        for t in ("llm-analysis", "GenZ"):
            if "error" in peers.get(c["id"], {}).get(t, {}):
                print(f"  {t} on {c['id']}: {peers[c['id']][t]['error']}")
    print("\nmedian |error| (cases priced):")
    for t in tools:
        parts = [f"{k} {statistics.median(v):5.1f}% over {len(v)}" if v else f"{k} -"
                 for k, v in errors[t].items()]
        print(f"  {t:13s} " + "; ".join(parts))


def all_reduce_report() -> None:
    h100 = load_topology("dgx-h100")
    print("\nvLLM custom all-reduce on H100 (vLLM PRs 24111 (6 GPUs) and 24532 (4 GPUs); us):")
    print(f"{'ranks':>5s} {'kernel':9s} " + " ".join(f"{s // 1024:>6d}KiB meas/model" for s in AR_SIZES))
    for (n, kind), measured in VLLM_AR.items():
        cells = []
        for s, ms in zip(AR_SIZES, measured):
            if kind == "nccl":
                t = collective_time("all-reduce", s, n, h100).time_s
            else:
                t = _forced(kind, s, n, h100)
            cells.append(f"{ms * 1e3:6.1f} / {t * 1e6:5.1f} ({100 * (t / (ms * 1e-3) - 1):+4.0f}%)")
        print(f"{n:5d} {kind:9s} " + " ".join(cells))


def one_shot_reading() -> None:
    """The one-shot rows as a straight line t = fixed + (n - 1) S / rate (least squares over
    the four sizes) beside the model's own fixed part (kernel_launch + 2 alpha) and rate (the
    NVLink level's bandwidth x efficiency.ring). A reading of the check rows: no parameter is
    set from it (docs/collectives.md, "vLLM's custom all-reduce: what the kernel does")."""
    import numpy as np
    h100 = load_topology("dgx-h100")
    level = h100.levels[0]
    fixed = sum(custom_kernel_time("one-shot", 0, 2, level, h100.device))
    rate = level.bandwidth_Bps * level.efficiency.ring
    print("one-shot as fixed + (n-1) S / rate (a reading of the rows above; fits no parameter):")
    for n in (4, 6):
        k, c = np.polyfit((n - 1) * np.array(AR_SIZES, float),
                          np.array(VLLM_AR[n, "one-shot"]) * 1e-3, 1)
        print(f"  {n} GPUs: measured {c * 1e6:.1f} us + {1 / k / 1e9:.0f} GB/s; "
              f"model {fixed * 1e6:.2f} us + {rate / 1e9:.0f} GB/s")


def _forced(kind: str, nbytes: int, n: int, topo) -> float:
    """The custom kernel's one-shot or two-shot time at any size (vLLM's benchmark forces the
    kernel): tpsim.cost.collectives.custom_kernel_time on the node's NVLink level."""
    return sum(custom_kernel_time(kind, nbytes, n, topo.levels[0], topo.device))


def fit_two_shot() -> None:
    """Refit the NVLink level's custom_two_shot_sync_us and custom_two_shot_efficiency on the
    6-GPU two-shot timings (least squares, time linear in the bytes moved) and check them on
    the 4-GPU ones, which no parameter sees."""
    import dataclasses

    import numpy as np
    h100 = load_topology("dgx-h100")
    bare = dataclasses.replace(h100.levels[0], custom_two_shot_sync_s=0.0,
                               custom_two_shot_efficiency=1.0)
    base = [sum(custom_kernel_time("two-shot", s, 6, bare, h100.device)) for s in AR_SIZES]
    fixed = sum(custom_kernel_time("two-shot", 0, 6, bare, h100.device))
    moved_s = np.array(base) - fixed                   # the transfer at efficiency 1
    slope, intercept = np.polyfit(moved_s, np.array(VLLM_AR[6, "two-shot"]) * 1e-3, 1)
    print(f"fit on vLLM PR 24111 (6 x H100, two-shot, 512 KiB-4 MiB): "
          f"custom_two_shot_sync_us = {(intercept - fixed) * 1e6:.3g}, "
          f"custom_two_shot_efficiency = {1 / slope:.3g}")
    lv = dataclasses.replace(bare, custom_two_shot_sync_s=intercept - fixed,
                             custom_two_shot_efficiency=1 / slope)
    for n in (6, 4):
        cells = []
        for s, ms in zip(AR_SIZES, VLLM_AR[n, "two-shot"]):
            t = sum(custom_kernel_time("two-shot", s, n, lv, h100.device))
            cells.append(f"{ms * 1e3:.0f}/{t * 1e6:.1f} ({100 * (t / (ms * 1e-3) - 1):+.0f}%)")
        print(f"  {n} GPUs ({'fit' if n == 6 else 'check'}), measured/model us: " + ", ".join(cells))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-python", default=os.environ.get("TPSIM_PEER_PYTHON"))
    ap.add_argument("--fit-custom", action="store_true",
                    help="refit the two-shot custom all-reduce's terms and stop")
    args = ap.parse_args(argv)
    if args.fit_custom:
        fit_two_shot()
        return 0
    ours, cpu = tpsim_values()
    peers, why = peer_values(args.peer_python)
    report(ours, peers, why)
    all_reduce_report()
    one_shot_reading()
    print("\nnotes:")
    for n in NOTES:
        print(f"  - {n}")
    unfit = [c["id"] for c in CASES if not ours[c["id"]]["fits"]]
    if unfit:
        print(f"  - tpsim says these do not fit in memory (priced anyway): {', '.join(unfit)}")
    print(f"\ntpsim: {len(CASES)} cases in {cpu:.3f} CPU s ({cpu / len(CASES) * 1e3:.1f} ms each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
