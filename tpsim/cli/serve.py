"""`tpsim serve`: an engine loop serving a stream of requests (continuous batching, chunked
prefill, a paged KV cache): throughput and TTFT/TPOT/e2e percentiles; comma lists
(``--rate 1,4,16,inf --tp 4,8``) compare every combination in one table."""
from __future__ import annotations

from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from .common import add_csv, output_format, topology_for
from .infer import add_model_topology, run_each
from .layout_args import add_layout_arguments, layout_from_args, list_names

# the ServingLayout fields that serve takes (the batch is the engine's to make)
LAYOUT = ("nccl", "tp", "pp", "ep", "prompt", "gen", "dtype", "kv_dtype", "allreduce", "eager",
          "decode_attention", "memory_headroom", "speculative", "draft_model", "num_speculative_tokens",
          "acceptance_rate")
EXTRA = {"prompt": " (the mean with --prompt-dist exponential)",
         "gen": " (the mean with --gen-dist exponential)",
         "rate": "; a comma list (--rate 1,4,16,inf) compares every combination in one table"}
# the flags that take a comma list, in the order the combinations vary (the last fastest)
LISTS = ("model", "topology") + list_names(ServingLayout, LAYOUT) + \
    list_names(ServeSettings)


def fill_serve(p) -> None:
    add_model_topology(p)
    add_layout_arguments(p, LAYOUT, cls=ServingLayout, extra=EXTRA, lists=True)
    add_layout_arguments(p, cls=ServeSettings, extra=EXTRA, lists=True)
    p.add_argument("--json", action="store_true", help="one JSON object (a list of them with "
                   "comma lists)")
    add_csv(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> None:
    from ..serving.engine import serve
    from ..report.serve import serve_json, serve_report
    from .lists import combinations, print_runs, varied
    from ..base.collector import paused_gc
    fmt = output_format(args)
    combos = combinations(args, LISTS)
    with paused_gc(freeze=True):    # the whole command, printing included
        preds = run_each(args, combos, lambda c: serve(
            c["model"], topology_for(c["topology"], c["tp"] * c["pp"] * c["ep"]),
            layout=layout_from_args(args, LAYOUT, ServingLayout, c),
            settings=layout_from_args(args, cls=ServeSettings, given=c)))
        from ..report.serve_compare import serve_comparison
        print_runs(preds, fmt, serve_json, serve_report, serve_comparison, varied(combos))
