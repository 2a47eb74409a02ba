"""`tpsim serve`: an engine loop serving a stream of requests (continuous batching, chunked
prefill, a paged KV cache): throughput and TTFT/TPOT/e2e percentiles."""
from __future__ import annotations

from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from .common import TOPOLOGY_HELP, StoreOnce, dump_json, topology_for
from .layout_args import add_layout_arguments, layout_from_args

# the ServingLayout fields that serve takes (the batch is the engine's to make; pp is 1)
LAYOUT = ("tp", "prompt", "gen", "dtype", "kv_dtype", "allreduce", "eager", "memory_headroom")
EXTRA = {"prompt": " (the mean with --prompt-dist exponential)",
         "gen": " (the mean with --gen-dist exponential)"}


def fill_serve(p) -> None:
    p.add_argument("--model", default="llama2-70b", action=StoreOnce,
                   help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default=None, action=StoreOnce, help=TOPOLOGY_HELP)
    add_layout_arguments(p, LAYOUT, cls=ServingLayout, extra=EXTRA)
    add_layout_arguments(p, cls=ServeSettings)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> None:
    from ..serving.engine import serve
    from ..report.serve import serve_json, serve_report
    pred = serve(args.model, topology_for(args.topology, args.tp),
                 layout=layout_from_args(args, LAYOUT, cls=ServingLayout),
                 settings=layout_from_args(args, cls=ServeSettings))
    print(dump_json(serve_json(pred)) if args.json else serve_report(pred))
