"""tpsim infer for a mixture-of-experts model beside a published serving measurement.

    python bench/infer_moe_published.py

Data (used in no fit): vLLM pull request #4002 ("[Kernel] Fused MoE Config for Mixtral 8x22",
https://github.com/vllm-project/vllm/pull/4002), ``benchmarks/benchmark_latency.py`` on
A100-80G at TP 4 and 8, batch 8, 16 and 32, the run "with config" (the tuned fused-MoE
kernel). The script's defaults at the time, which the pull request does not override: input 32
tokens, output 128, CUDA graphs on; the model's dtype bf16; vLLM 0.4's custom all-reduce on
(one NVLink node, 4 or 8 GPUs). ``Avg latency`` is one batch from prompt to its 128th token:
tpsim's ``total.time_s`` (prefill + 127 decode steps) on the shipped dgx-a100 topology.
"""
from __future__ import annotations

import statistics

from tpsim.serving.infer import infer

SOURCE = "vLLM PR #4002, benchmark_latency.py, Mixtral-8x22B, A100-80G, with the tuned config"
# (tp, batch) -> Avg latency, seconds
MEASURED = {(4, 8): 5.4268, (4, 16): 6.1079, (4, 32): 6.8939,
            (8, 8): 3.7084, (8, 16): 4.0473, (8, 32): 4.3907}


def rows(allreduce: str = "custom") -> list[dict]:
    """One row per measurement: tpsim's latency and its signed error, percent."""
    out = []
    for (tp, batch), measured in MEASURED.items():
        p = infer("mixtral-8x22b", "dgx-a100", tp=tp, batch=batch, prompt=32, gen=128,
                  allreduce=allreduce)
        out.append({"tp": tp, "batch": batch, "measured_s": measured,
                    "tpsim_s": p.total.time_s,
                    "error_pct": 100 * (p.total.time_s - measured) / measured})
    return out


def main() -> None:
    print(SOURCE)
    for allreduce in ("custom", "nccl"):
        table = rows(allreduce)
        print(f"\nall-reduce {allreduce}\n  tp batch  measured s  tpsim s   error")
        for r in table:
            print(f"  {r['tp']:2d} {r['batch']:5d}  {r['measured_s']:10.3f}  {r['tpsim_s']:7.3f}"
                  f"  {r['error_pct']:+6.1f}%")
        errs = [abs(r["error_pct"]) for r in table]
        print(f"  median |error| {statistics.median(errs):.1f}%, max {max(errs):.1f}%")


if __name__ == "__main__":
    main()
