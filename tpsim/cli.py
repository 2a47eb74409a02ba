"""tpsim's command line: parse, call the model, print. No modelling happens here.

Any :class:`~tpsim.errors.TpsimError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .collectives import OPS
from .errors import TpsimError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise TpsimError(f"{self.prog}: {message}")


# --------------------------------------------------------------------------- topologies, collective

def _cmd_topologies(args) -> None:
    from .topology import load_topology, shipped_topologies
    for name in shipped_topologies():
        topo = load_topology(name)
        print(f"{name:24s} {topo.max_ranks:5d} GPUs  {topo.description}")


def _add_collective(sub) -> None:
    p = sub.add_parser("collective", help="price one collective (or a sweep of sizes) on a topology")
    p.add_argument("--topology", default="dgx-h100", help="shipped name or path to a YAML file")
    p.add_argument("--op", default="all-reduce",
                   choices=OPS)
    p.add_argument("--ranks", type=int, default=None, help="group size (default: one node)")
    p.add_argument("--bytes", default="64MiB",
                   help="message size as nccl-tests counts it: 4096, 64MiB (2^20), 1GB (1e9)")
    p.add_argument("--algo", default="auto", help="ring, tree, hierarchical, nvls or auto")
    p.add_argument("--protocol", default="auto", help="simple, ll, ll128 or auto")
    p.add_argument("--sweep", action="store_true", help="sizes 1 KiB to 8 GiB by powers of two")
    p.add_argument("--min-bytes", default="1KiB", help="with --sweep: smallest size")
    p.add_argument("--max-bytes", default="8GiB", help="with --sweep: largest size")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_collective)


def _cmd_collective(args) -> None:
    from .collectives import collective_time
    from .render import collective_table
    from .topology import load_topology
    from .units import parse_size, power_of_two_sizes
    topo = load_topology(args.topology)
    ranks = args.ranks if args.ranks is not None else topo.devices_per_node
    if args.sweep:
        sizes = power_of_two_sizes(parse_size(args.min_bytes, "--min-bytes"),
                                   parse_size(args.max_bytes, "--max-bytes"))
    else:
        sizes = [parse_size(args.bytes, "--bytes")]
    costs = [collective_time(args.op, s, ranks, topo, args.algo, args.protocol) for s in sizes]
    if args.json:
        rows = [c.as_dict() for c in costs]
        print(json.dumps(rows if args.sweep else rows[0], indent=2))
    else:
        print(collective_table(costs, topo))


# --------------------------------------------------------------------------- plot (issue 6)

def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures (PNG or SVG) with the CSV of their numbers beside them")
    kinds = p.add_subparsers(dest="figure", required=True, parser_class=_Parser)

    def figure(name: str, help: str, func):
        q = kinds.add_parser(name, help=help)
        q.add_argument("--out", required=True, help="image file; its CSV is written beside it")
        q.add_argument("--format", choices=["png", "svg"], default=None,
                       help="image format (default: the --out suffix, else png)")
        q.set_defaults(func=func)
        return q

    q = figure("collective", "time and busbw against message size", _cmd_plot_collective)
    q.add_argument("--topology", action="append", help="repeat to compare (default: dgx-h100)")
    q.add_argument("--op", default="all-reduce",
                   choices=OPS)
    q.add_argument("--ranks", type=int, default=None, help="group size (default: one node)")
    q.add_argument("--algo", action="append",
                   help="auto, ring, tree, hierarchical, nvls, or all; repeat to compare (default: auto)")
    q.add_argument("--min-bytes", default="1KiB", help="smallest size (nccl-tests' -b)")
    q.add_argument("--max-bytes", default="8GiB", help="largest size (nccl-tests' -e)")
    q.add_argument("--measured", default=None,
                   help="overlay measured points: a CSV (size and time columns) or a report.json")
    q = figure("intra-vs-inter", "layer time and comm share against TP degree, node vs cluster",
               _cmd_plot_intra_vs_inter)
    _add_plot_layer_args(q, topology="repeat to compare (default: dgx-h100, dgx-h100-ndr-cluster)")
    q = figure("breakdown", "where one layer's time goes, per op", _cmd_plot_breakdown)
    _add_plot_layer_args(q, topology="shipped name or YAML path (default: dgx-h100)")
    q.add_argument("--tp", type=int, default=8, help="tensor-parallel degree (default 8)")
    q = figure("tp-vs-dp", "bytes and time per step: TP activations against DP gradients",
               _cmd_plot_tp_vs_dp)
    _add_plot_layer_args(q, topology="shipped name or YAML path (default: dgx-h100-ndr-cluster)")
    q.add_argument("--micro-batches", type=int, default=1,
                   help="micro-batches per step (TP communicates per micro-batch, DP per step)")
    q = figure("validation", "predicted against measured per validated layer", _cmd_plot_validation)
    q.add_argument("--report", required=True, help="a report.json written by validate/run.py")


def _add_plot_layer_args(q, topology: str) -> None:
    q.add_argument("--model", default="gpt3", help="shipped name or YAML path (default: gpt3)")
    q.add_argument("--topology", action="append" if "repeat" in topology else "store",
                   help=topology)
    q.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch")
    q.add_argument("--seq", type=int, default=None, help="sequence length (default: the model's)")
    q.add_argument("--dtype", default="bf16", help="bf16, fp16 or fp32")
    q.add_argument("--sequence-parallel", action="store_true", help="Megatron sequence parallelism")
    q.add_argument("--recompute", default="none", help="activation recomputation: none, selective or full")


def _plot_settings(args) -> dict:
    settings = {"micro_batch": args.micro_batch, "seq_len": args.seq, "dtype": args.dtype,
                "sequence_parallel": args.sequence_parallel}
    if args.recompute != "none":   # the figures' notes list the settings: none stays unsaid
        settings["recompute"] = args.recompute
    return settings


def _cmd_plot_intra_vs_inter(args) -> None:
    from . import plot
    from .figure_data import intra_vs_inter, load_topologies
    topos = load_topologies(args.topology or ["dgx-h100", "dgx-h100-ndr-cluster"])
    table = intra_vs_inter(args.model, topos, **_plot_settings(args))
    _plot_done(*plot.save(plot.intra_vs_inter_figure(table), table, args.out, args.format))


def _cmd_plot_breakdown(args) -> None:
    from . import plot
    from .figure_data import breakdown
    from .topology import load_topology
    table = breakdown(args.model, load_topology(args.topology or "dgx-h100"), args.tp,
                      **_plot_settings(args))
    _plot_done(*plot.save(plot.breakdown_figure(table), table, args.out, args.format))


def _cmd_plot_tp_vs_dp(args) -> None:
    from . import plot
    from .figure_data import tp_vs_dp
    from .topology import load_topology
    table = tp_vs_dp(args.model, load_topology(args.topology or "dgx-h100-ndr-cluster"),
                     micro_batches=args.micro_batches, **_plot_settings(args))
    _plot_done(*plot.save(plot.tp_vs_dp_figure(table), table, args.out, args.format))


def _plot_done(image, csv_path) -> None:
    print(f"wrote {image}\nwrote {csv_path}")


def _cmd_plot_collective(args) -> None:
    from . import plot
    from .figure_data import collective_sweep, load_topologies
    from .units import parse_size, power_of_two_sizes
    topos = load_topologies(args.topology or ["dgx-h100"])
    ranks = args.ranks if args.ranks is not None else topos[0].devices_per_node
    sizes = power_of_two_sizes(parse_size(args.min_bytes, "--min-bytes"),
                               parse_size(args.max_bytes, "--max-bytes"))
    table = collective_sweep(topos, args.op, ranks, args.algo or ["auto"], sizes, args.measured)
    _plot_done(*plot.save(plot.collective_figure(table), table, args.out, args.format))


def _cmd_plot_validation(args) -> None:
    from . import plot
    from .figure_data import validation_table
    table = validation_table(args.report)
    _plot_done(*plot.save(plot.validation_figure(table), table, args.out, args.format))


# --------------------------------------------------------------------------- predict, models (issue 4)

def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="time, communication and memory of a TP transformer")
    p.add_argument("--model", default="gpt3", help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default="dgx-h100", help="shipped name or path to a YAML file")
    p.add_argument("--tp", type=int, default=8, help="tensor-parallel degree (consecutive ranks)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch")
    p.add_argument("--seq", type=int, default=None, help="sequence length (default: the model's)")
    p.add_argument("--dtype", default="bf16", help="bf16, fp16 or fp32")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="Megatron sequence parallelism (all-gather + reduce-scatter)")
    p.add_argument("--dropout", type=float, default=None, help="dropout probability (0: no dropout ops)")
    p.add_argument("--attention", default=None, help="fused (flash) or unfused (Megatron's kernels)")
    p.add_argument("--recompute", default="none",
                   help="activation recomputation: none, selective (unfused attention core) or full")
    for flag in ("layers", "hidden", "heads", "kv-heads", "head-dim", "ffn-hidden", "vocab"):
        p.add_argument(f"--{flag}", type=int, default=None, help=f"override the model's {flag}")
    p.add_argument("--json", action="store_true", help="one JSON object (keys in the README)")
    p.add_argument("--trace", metavar="FILE.json", default=None,
                   help="also write the scheduled layer as a Chrome trace (Perfetto, chrome://tracing)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> None:
    from .model import load_model, with_overrides
    from .predict import predict
    from .render import prediction_json, prediction_report
    model = with_overrides(load_model(args.model), layers=args.layers, hidden=args.hidden,
                           heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                           ffn_hidden=args.ffn_hidden, vocab=args.vocab)
    pred = predict(model, args.topology, tp=args.tp, micro_batch=args.micro_batch,
                   seq_len=args.seq, dtype=args.dtype, sequence_parallel=args.sequence_parallel,
                   dropout=args.dropout, attention=args.attention, recompute=args.recompute)
    if args.trace:
        from .trace import prediction_trace, write_trace
        write_trace(prediction_trace(pred), args.trace)
    print(json.dumps(prediction_json(pred), indent=2) if args.json else prediction_report(pred))
    if args.trace and not args.json:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")


def _cmd_models(args) -> None:
    from .model import list_models
    from .render import models_table
    print(models_table(list_models()))


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tpsim", description="How long does a tensor-parallel transformer "
                     "layer take on a given cluster, and why.")
    parser.add_argument("--version", action="version", version=f"tpsim {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("topologies", help="list the shipped topologies").set_defaults(func=_cmd_topologies)
    _add_collective(sub)
    _add_predict(sub)
    sub.add_parser("models", help="list the shipped model presets").set_defaults(func=_cmd_models)
    _add_plot(sub)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except TpsimError as e:
        print(f"tpsim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tpsim ... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
