"""`tpsim serve`: an engine loop serving a stream of requests (continuous batching, chunked
prefill, a paged KV cache): throughput and TTFT/TPOT/e2e percentiles; comma lists
(``--rate 1,4,16,inf --tp 4,8``) compare every combination in one table."""
from __future__ import annotations

from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from .common import StoreOnce, add_csv, dump_json, output_format
from .infer import run_each
from .layout_args import add_layout_arguments, layout_from_args
from .lists import name_list

# the ServingLayout fields that serve takes (the batch is the engine's to make)
LAYOUT = ("tp", "pp", "prompt", "gen", "dtype", "kv_dtype", "allreduce", "eager",
          "memory_headroom")
EXTRA = {"prompt": " (the mean with --prompt-dist exponential)",
         "gen": " (the mean with --gen-dist exponential)",
         "rate": "; a comma list (--rate 1,4,16,inf) compares every combination in one table"}
# the flags that take a comma list, in the order the combinations vary (the last fastest)
LISTS = ("model", "topology", "tp", "pp", "prompt", "gen", "dtype", "max_num_seqs", "rate")


def fill_serve(p) -> None:
    p.add_argument("--model", default=("llama2-70b",), action=StoreOnce, type=name_list,
                   help="shipped name (see `tpsim models`) or YAML path; a comma list "
                        "compares them (default: llama2-70b)")
    p.add_argument("--topology", default=("dgx-h100",), action=StoreOnce, type=name_list,
                   help="shipped name or path to a YAML file; a comma list compares them "
                        "(default: dgx-h100)")
    add_layout_arguments(p, LAYOUT, cls=ServingLayout, extra=EXTRA, lists=True)
    add_layout_arguments(p, cls=ServeSettings, extra=EXTRA, lists=True)
    p.add_argument("--json", action="store_true", help="one JSON object (a list of them with "
                   "comma lists)")
    add_csv(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> None:
    from ..serving.engine import serve
    from ..report.serve import serve_json, serve_report
    from .lists import combinations, varied
    fmt = output_format(args)
    combos = combinations(args, LISTS)
    preds = run_each(args, combos, lambda c: serve(
        c["model"], c["topology"], layout=layout_from_args(args, LAYOUT, ServingLayout, c),
        settings=layout_from_args(args, cls=ServeSettings, given=c)))
    if fmt == "csv":
        from ..report.flat_csv import csv_text
        print(csv_text(serve_json(p) for p in preds))
    elif fmt:
        js = [serve_json(p) for p in preds]
        print(dump_json(js if len(js) > 1 else js[0]))
    elif len(preds) > 1:
        from ..report.serve_compare import serve_comparison
        print(serve_comparison(preds, varied(combos)))
    else:
        print(serve_report(preds[0]))
