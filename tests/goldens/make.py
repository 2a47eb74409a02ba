"""Write the golden ``--json`` outputs that pin tpsim's numbers across refactors.

    python tests/goldens/make.py          # rewrite every golden from the current code
    python tests/goldens/make.py NAME...  # rewrite only these

Run it only when a change is *meant* to move numbers (new physics), and say so in the commit;
``tests/integration/test_goldens.py`` then holds every time, FLOP and byte of these configurations to 1e-12
relative. Keys may be added to the outputs; none may disappear.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

# name -> tpsim CLI arguments (predict or collective)
CASES = {
    "gpt3-tp8-h100": "predict --model gpt3 --tp 8",
    "gpt3-tp1-a100": "predict --model gpt3-1.3b --tp 1 --topology dgx-a100",
    "gpt3-tp2-a100-sp": "predict --model gpt3-13b --tp 2 --topology dgx-a100 --sequence-parallel",
    "gpt3-tp16-ndr": "predict --model gpt3 --tp 16 --topology dgx-h100-ndr-cluster",
    "gpt3-tp16-hdr-sp-full": "predict --model gpt3 --tp 16 --topology dgx-a100-hdr-cluster "
                             "--sequence-parallel --recompute full",
    "gpt3-tp8-a100-unfused-selective": "predict --model gpt3 --tp 8 --topology dgx-a100 "
                                       "--attention unfused --recompute selective --micro-batch 2",
    "gpt3-tp4-unfused-sp-selective": "predict --model gpt3-6.7b --tp 4 --attention unfused "
                                     "--sequence-parallel --recompute selective",
    "llama3-70b-tp8-gqa": "predict --model llama3-70b --tp 8 --seq 4096",
    "llama2-7b-tp2-full-l40s": "predict --model llama2-7b --tp 2 --topology pcie-l40s "
                               "--recompute full --seq 2048",
    "llama3-8b-tp4-h200-sp": "predict --model llama3-8b --tp 4 --topology dgx-h200 "
                             "--sequence-parallel --micro-batch 2",
    "llama3-8b-tp4-fp8-tensorwise": "predict --model llama3-8b --tp 4 --sequence-parallel "
                                    "--dtype fp8 --fp8-recipe tensorwise",
    "gpt2-tp1-nodrop-fp32": "predict --model gpt2 --tp 1 --topology dgx-a100 --dropout 0 --dtype fp32",
    "gpt3-350m-tp2-hostbound": "predict --model gpt3-350m --tp 2 --topology dgx-a100 --seq 1024",
    "coll-ar-h100-sweep": "collective --topology dgx-h100 --sweep --min-bytes 1KiB --max-bytes 1GiB --json",
    "coll-ar-a100-sweep": "collective --topology dgx-a100 --ranks 4 --sweep --min-bytes 1KiB --max-bytes 1GiB --json",
    "coll-ar-ndr-16": "collective --topology dgx-h100-ndr-cluster --ranks 16 --sweep --json",
    "coll-ag-hdr-32": "collective --topology dgx-a100-hdr-cluster --ranks 32 --op all-gather --sweep --json",
    "coll-rs-l40s": "collective --topology pcie-l40s --op reduce-scatter --sweep --json",
    # the training step: pipeline, interleaving, DP, the distributed optimizer, TP overlap, FP8
    "step-gpt3-pp8-dp16-hdr": "predict --model gpt3 --tp 8 --pp 8 --dp 16 --global-batch 1536 "
                              "--topology dgx-a100-hdr-cluster --nodes 128 "
                              "--sequence-parallel --recompute selective",
    "step-gpt3-pp8-v3-interleaved": "predict --model gpt3 --tp 8 --pp 8 --virtual-stages 3 "
                                    "--dp 4 --global-batch 256 --topology dgx-h100-ndr-cluster "
                                    "--sequence-parallel --distributed-optimizer",
    "step-llama3-70b-dp8-distopt": "predict --model llama3-70b --tp 8 --pp 4 --dp 8 "
                                   "--global-batch 256 --topology dgx-h100-ndr-cluster "
                                   "--sequence-parallel --distributed-optimizer --tp-comm-overlap "
                                   "--dtype fp8 --recompute full",
    "step-gpt3-13b-dp-noverlap-sg": "predict --model gpt3-13b --tp 4 --pp 2 --dp 4 "
                                    "--global-batch 64 --micro-batch 2 --topology "
                                    "dgx-a100-hdr-cluster --no-overlap-grad-reduce "
                                    "--scatter-gather-p2p --nodes 8",
    "step-llama3-405b-uneven": "predict --model llama3-405b --tp 8 --pp 16 --dp 2 "
                               "--global-batch 64 --topology dgx-h100-ndr-cluster "
                               "--sequence-parallel --first-stage-layers 7 --last-stage-layers 7 --nodes 32 "
                               "--distributed-optimizer --recompute full",
    "step-llama2-7b-dp-only-l40s": "predict --model llama2-7b --tp 1 --dp 8 --global-batch 32 "
                                   "--topology pcie-l40s --recompute full",
    # the distributed optimizer's all-gather overlapped with the next step's first forwards
    "step-gpt3-pp8-dp16-hdr-gather": "predict --model gpt3 --tp 8 --pp 8 --dp 16 "
                                     "--global-batch 1536 --topology dgx-a100-hdr-cluster "
                                     "--nodes 128 --sequence-parallel --distributed-optimizer "
                                     "--overlap-param-gather",
    "step-gpt3-pp8-v3-interleaved-gather": "predict --model gpt3 --tp 8 --pp 8 "
                                           "--virtual-stages 3 --dp 4 --global-batch 256 "
                                           "--topology dgx-h100-ndr-cluster --sequence-parallel "
                                           "--distributed-optimizer --overlap-param-gather",
    # serving
    "infer-llama2-70b-tp8": "infer --model llama2-70b --tp 8 --batch 16 --json",
    "infer-llama3-70b-pp2-fp8": "infer --model llama3-70b --tp 4 --pp 2 --batch 32 --prompt 1024 "
                                "--gen 128 --dtype fp8 --kv-dtype fp8 --json",
    "infer-llama3-8b-custom-eager": "infer --model llama3-8b --tp 2 --batch 1 --prompt 512 "
                                    "--gen 64 --allreduce custom --eager --json",
    "infer-llama2-7b-a100": "infer --model llama2-7b --tp 4 --topology dgx-a100 --batch 64 --json",
    # the engine loop with preemptions under the default (vLLM) admission
    "serve-llama2-70b-tp2-preempt": "serve --model llama2-70b --tp 2 --requests 200 --rate 20 "
                                    "--prompt 2048 --gen 256 --prompt-dist uniform:1,4096 "
                                    "--gen-dist uniform:2,512 --json",
    # multi-step scheduling (its runs, held outputs) with preemptions, and SGLang's admission
    "serve-llama2-70b-tp2-multistep-preempt": "serve --model llama2-70b --tp 2 --requests 200 "
                                              "--rate 30 --prompt 2048 --gen 512 "
                                              "--num-scheduler-steps 4 --gen-dist uniform:2,1024 "
                                              "--json",
    "serve-llama3-8b-sglang-users": "serve --model llama3-8b --tp 1 --requests 300 --users 64 "
                                    "--prompt 1024 --gen 128 --admission sglang-0.4 "
                                    "--gen-dist uniform:2,500 --max-num-seqs 48 --json",
    # the search (its ranking, bounds and every candidate's numbers; pricing_s is a timing)
    "search-gpt3-13b-32": "search --model gpt3-13b --topology dgx-a100-hdr-cluster --gpus 32 "
                          "--global-batch 128 --json",
    "search-llama3-8b-h100-16": "search --model llama3-8b --topology dgx-h100-ndr-cluster "
                                "--gpus 16 --global-batch 64 --seq 4096 --top 20 --json",
}
TIMINGS = ("pricing_s",)   # wall-clock measurements, not model numbers


def run(args: str) -> object:
    import contextlib
    import io

    from tpsim.cli import main
    argv = args.split()
    if argv[0] == "predict":
        argv.append("--json")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc:
        raise SystemExit(f"tpsim {args}: exit {rc}")
    out = json.loads(buf.getvalue())
    if isinstance(out, dict):
        for k in TIMINGS:
            out.pop(k, None)
    return out


def main(names=()) -> None:
    for name, args in CASES.items():
        if names and name not in names:
            continue
        (HERE / f"{name}.json").write_text(json.dumps({"args": args, "output": run(args)},
                                                      indent=1) + "\n")
        print(f"wrote {name}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
