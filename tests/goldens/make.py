"""Write the golden ``--json`` outputs that pin tpsim's numbers across refactors.

    python tests/goldens/make.py          # rewrite every golden from the current code

Run it only when a change is *meant* to move numbers (new physics), and say so in the commit;
``tests/test_goldens.py`` then holds every time, FLOP and byte of these configurations to 1e-12
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
    "gpt2-tp1-nodrop-fp32": "predict --model gpt2 --tp 1 --topology dgx-a100 --dropout 0 --dtype fp32",
    "gpt3-350m-tp2-hostbound": "predict --model gpt3-350m --tp 2 --topology dgx-a100 --seq 1024",
    "coll-ar-h100-sweep": "collective --topology dgx-h100 --sweep --min-bytes 1KiB --max-bytes 1GiB --json",
    "coll-ar-a100-sweep": "collective --topology dgx-a100 --ranks 4 --sweep --min-bytes 1KiB --max-bytes 1GiB --json",
    "coll-ar-ndr-16": "collective --topology dgx-h100-ndr-cluster --ranks 16 --sweep --json",
    "coll-ag-hdr-32": "collective --topology dgx-a100-hdr-cluster --ranks 32 --op all-gather --sweep --json",
    "coll-rs-l40s": "collective --topology pcie-l40s --op reduce-scatter --sweep --json",
}


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
    return json.loads(buf.getvalue())


def main() -> None:
    for name, args in CASES.items():
        (HERE / f"{name}.json").write_text(json.dumps({"args": args, "output": run(args)},
                                                      indent=1) + "\n")
        print(f"wrote {name}.json")


if __name__ == "__main__":
    main()
