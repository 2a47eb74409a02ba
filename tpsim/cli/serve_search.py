"""`tpsim serve-search`: the serving layouts of some GPUs that meet TTFT and TPOT targets,
best first by output tokens/s per GPU (aggregated replicas beside disaggregated pools)."""
from __future__ import annotations

from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from ..base.errors import clip
from .common import (TOPOLOGY_HELP, StoreOnce, add_csv, dump_json, output_format, positive_int,
                     positive_rate, topology_for)
from ..spec.settings import declared
from .layout_args import add_layout_arguments, layout_from_args
from .lists import int_list

# what the search leaves to the user: the lengths, dtypes and engine switches; the requests of
# each run and every engine knob `tpsim serve` takes (tp, pp, ep, max_num_seqs and the rate
# are the search's; its arrivals are Poisson, so no closed loop of --users)
LAYOUT = ("nccl", "prompt", "gen", "dtype", "kv_dtype", "allreduce", "eager", "decode_attention",
          "memory_headroom")
SETTINGS = tuple(f.name for f in declared(ServeSettings)
                 if f.name not in ("rate", "max_num_seqs", "users"))


def seconds(text: str) -> float:
    """A latency target in seconds: a positive finite number."""
    import argparse
    try:
        value = positive_rate(text)
    except argparse.ArgumentTypeError:
        value = float("inf")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got "
                                         f"{clip(repr(text), 60)}")
    return value


def fill_serve_search(p) -> None:
    p.add_argument("--model", default="llama3-70b", action=StoreOnce,
                   help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default=None, action=StoreOnce, help=TOPOLOGY_HELP)
    add_layout_arguments(p, LAYOUT[:1], cls=ServingLayout)     # --nccl, beside the topology
    p.add_argument("--gpus", type=positive_int, required=True,
                   help="GPUs of the deployment: replicas of tp x pp x ep, or prefill + decode "
                   "pools")
    p.add_argument("--ttft-p99", type=seconds, required=True, metavar="S",
                   help="target: 99th percentile of the time to first token, seconds")
    p.add_argument("--tpot-p99", type=seconds, required=True, metavar="S",
                   help="target: 99th percentile of the time per output token, seconds")
    p.add_argument("--rate", type=seconds, default=None, metavar="R",
                   help="requests/s every candidate must serve within the targets (default: "
                        "none; candidates are ranked by the most they serve)")
    p.add_argument("--max-num-seqs", type=int_list, default=(64, 256),
                   help="sequences an engine step holds at most (vLLM's max_num_seqs), each "
                        "value of this comma list tried (default: 64,256)")
    p.add_argument("--no-disaggregated", dest="disaggregated", action="store_false",
                   help="aggregated replicas only (default: disaggregated prefill/decode "
                        "pools are tried too)")
    p.add_argument("--top", type=positive_int, default=10, help="candidates (rows) to show")
    add_layout_arguments(p, LAYOUT[1:], cls=ServingLayout)
    add_layout_arguments(p, SETTINGS, cls=ServeSettings,
                         extra={"requests": " in each engine run of the search (default 200 "
                                            "here)"})
    p.set_defaults(requests=200)
    p.add_argument("--json", action="store_true", help="one JSON object (keys in docs/json.md)")
    add_csv(p)
    p.set_defaults(func=_cmd_serve_search)


def _cmd_serve_search(args) -> None:
    from ..base.collector import paused_gc
    fmt = output_format(args)
    with paused_gc(freeze=True):    # the whole command, printing included
        _serve_search(args, fmt)


def _serve_search(args, fmt) -> None:
    """The search of ``args`` printed as ``fmt`` asks."""
    from ..serving.serve_search import serve_search
    from ..report.serve_search import serve_search_json, serve_search_report
    r = serve_search(args.model, topology_for(args.topology, args.gpus), gpus=args.gpus, ttft_p99_s=args.ttft_p99,
                     tpot_p99_s=args.tpot_p99, rate=args.rate,
                     layout=layout_from_args(args, LAYOUT, cls=ServingLayout),
                     settings=layout_from_args(args, SETTINGS, cls=ServeSettings),
                     max_num_seqs=args.max_num_seqs, disaggregated=args.disaggregated,
                     top=args.top)
    if fmt == "csv":
        from ..report.flat_csv import csv_text
        out = serve_search_json(r)
        head = {k: v for k, v in out["inputs"].items() if k != "formula"}
        print(csv_text({**head, **c} for c in out["candidates"]))
    else:
        print(dump_json(serve_search_json(r)) if fmt else serve_search_report(r))
