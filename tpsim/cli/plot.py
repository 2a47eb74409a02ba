"""`tpsim plot`: figures (PNG or SVG) with the CSV of their numbers beside them."""
from __future__ import annotations

from ..cost.collectives import ALGORITHMS, OPS
from ..figures.data import FORMATS
from ..spec.serving import ServingLayout
from ..cluster.defaults import CLUSTER, NODE
from .common import TOPOLOGY_HELP, Parser, StoreOnce, lower, positive_int, topology_for
from .layout_args import add_layout_arguments


def fill_plot(p) -> None:
    kinds = p.add_subparsers(dest="figure", required=True, parser_class=Parser)

    def figure(name: str, help: str, func):
        q = kinds.add_parser(name, help=help)
        q.add_argument("--out", required=True, help="image file (.png, .svg or .pdf); its CSV "
                       "is written beside it, missing directories are created")
        q.add_argument("--format", choices=FORMATS, default=None,
                       help="image format (default: the --out suffix, else png)")
        q.set_defaults(func=_output_checked(func))
        if name not in ("validation", "search"):    # priced on a topology (search: its space's)
            add_layout_arguments(q, ("nccl",))
        return q

    q = figure("collective", "time and busbw against message size", _cmd_plot_collective)
    q.add_argument("--topology", action="append",
                   help="repeat to compare " + TOPOLOGY_HELP[TOPOLOGY_HELP.index("("):])
    q.add_argument("--op", default="all-reduce", choices=OPS, help="collective operation")
    q.add_argument("--ranks", type=positive_int, default=None,
                   help="group size (default: one node)")
    q.add_argument("--algo", action="append", type=lower, choices=("auto", *ALGORITHMS, "all"),
                   help="repeat to compare; all: every algorithm that applies (default: auto)")
    q.add_argument("--min-bytes", default="1KiB", help="smallest size (nccl-tests' -b)")
    q.add_argument("--max-bytes", default="8GiB", help="largest size (nccl-tests' -e)")
    q.add_argument("--measured", default=None,
                   help="overlay measured points: nccl-tests output (its out-of-place time), a CSV "
                        "(size and time columns) or a report.json")
    q = figure("intra-vs-inter", "layer time and comm share against TP degree, node vs cluster",
               _cmd_plot_intra_vs_inter)
    _add_plot_layer_args(q, topology="repeat to compare (default: dgx-h100, dgx-h100-ndr-cluster)")
    q = figure("breakdown", "where one layer's time goes, per op", _cmd_plot_breakdown)
    _add_plot_layer_args(q, topology=TOPOLOGY_HELP)
    add_layout_arguments(q, ("tp",))
    q = figure("tp-vs-dp", "bytes and time per step: TP activations against DP gradients",
               _cmd_plot_tp_vs_dp)
    _add_plot_layer_args(q, topology="shipped name or YAML path (default: dgx-h100-ndr-cluster)")
    q.add_argument("--micro-batches", type=positive_int, default=1,
                   help="micro-batches per step (TP communicates per micro-batch, DP per step)")
    q = figure("pipeline", "one training step's schedule per stage: chunks, p2p, DP, bubble",
               _cmd_plot_pipeline)
    _add_plot_layer_args(q, topology=TOPOLOGY_HELP)
    add_layout_arguments(q, ("tp",))
    from .predict import add_step_args
    add_step_args(q)
    q = figure("search", "step time over TP x PP, each cell the best choice of the other knobs",
               _cmd_plot_search)
    from .search import add_fixed_arguments, add_search_space
    add_search_space(q)
    add_fixed_arguments(q)
    q = figure("validation", "predicted against measured per validated layer", _cmd_plot_validation)
    q.add_argument("--report", required=True, help="a report.json written by validate/run.py")
    _add_plot_infer(figure("infer", "time per output token against batch for TP 1/2/4/8",
                           _cmd_plot_infer))


def _add_plot_infer(q) -> None:
    q.add_argument("--model", default="llama2-70b", action=StoreOnce,
                   help="shipped name, YAML path or Hugging Face config.json")
    q.add_argument("--topology", action="append",
                   help="repeat to compare " + TOPOLOGY_HELP[TOPOLOGY_HELP.index("("):])
    add_layout_arguments(q, ("prompt", "gen", "dtype", "kv_dtype", "allreduce", "eager"),
                         cls=ServingLayout)


def _cmd_plot_infer(args) -> None:
    from ..figures import plot
    from ..figures.data import infer_sweep, load_topologies
    topos = load_topologies(args.topology or [topology_for(None, 8)], args.nccl)   # TP 1-8
    table = infer_sweep(args.model, topos, prompt=args.prompt, gen=args.gen, dtype=args.dtype,
                        kv_dtype=args.kv_dtype, allreduce=args.allreduce, eager=args.eager)
    _plot_done(*plot.save(plot.infer_figure(table), table, args.out, args.format))


def _add_plot_layer_args(q, topology: str) -> None:
    q.add_argument("--model", default="gpt3", action=StoreOnce,
                   help="shipped name, YAML path or Hugging Face config.json")
    q.add_argument("--topology", action="append" if "repeat" in topology else StoreOnce,
                   help=topology)
    add_layout_arguments(q, ("micro_batch", "seq_len", "dtype", "sequence_parallel", "recompute"))


def _output_checked(func):
    """``func`` after a check of --out and --format, so a bad name fails before any work."""
    def run(args) -> None:
        from ..base.errors import ConfigError
        from ..figures.data import output_paths
        from ..figures.about import about_path
        written = output_paths(args.out, args.format)
        written = (*written, about_path(written[1]))
        for flag in ("measured", "report"):
            given = getattr(args, flag, None)
            if given and any(_same_file(given, w) for w in written):
                raise ConfigError("--out", "", f"files other than --{flag} (writing there would "
                                  "overwrite it)", args.out)
        func(args)
    return run


def _same_file(a, b) -> bool:
    from pathlib import Path
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):     # ValueError: a NUL byte in the name
        return False


def plot_settings(args) -> dict:
    settings = {"micro_batch": args.micro_batch, "seq_len": args.seq, "dtype": args.dtype,
                "sequence_parallel": args.sequence_parallel}
    if args.recompute != "none":   # the figures' notes list the settings: none stays unsaid
        settings["recompute"] = args.recompute
    return settings


def _cmd_plot_intra_vs_inter(args) -> None:
    from ..figures import plot
    from ..figures.data import intra_vs_inter, load_topologies
    topos = load_topologies(args.topology or [NODE, CLUSTER], args.nccl)   # node, cluster
    table = intra_vs_inter(args.model, topos, **plot_settings(args))
    _plot_done(*plot.save(plot.intra_vs_inter_figure(table), table, args.out, args.format))


def _cmd_plot_breakdown(args) -> None:
    from ..figures import plot
    from ..figures.data import breakdown
    from ..cluster.nccl import topology_of
    topology = topology_of(topology_for(args.topology, args.tp), args.nccl)
    table = breakdown(args.model, topology, args.tp, **plot_settings(args))
    _plot_done(*plot.save(plot.breakdown_figure(table), table, args.out, args.format))


def _cmd_plot_tp_vs_dp(args) -> None:
    from ..figures import plot
    from ..figures.data import tp_vs_dp
    from ..cluster.nccl import topology_of
    topology = CLUSTER if args.topology is None else args.topology    # '' is no name
    table = tp_vs_dp(args.model, topology_of(topology, args.nccl),
                     micro_batches=args.micro_batches, **plot_settings(args))
    _plot_done(*plot.save(plot.tp_vs_dp_figure(table), table, args.out, args.format))


def _cmd_plot_pipeline(args) -> None:
    from ..figures import pipeline_plot
    from ..figures.pipeline import pipeline
    from ..cluster.nccl import topology_of
    from .predict import step_kwargs
    step = step_kwargs(args)
    topology = topology_for(args.topology, args.tp * step["pp"] * step["dp"])
    table = pipeline(args.model, topology_of(topology, args.nccl), args.tp, **plot_settings(args),
                     **step)
    _plot_done(*pipeline_plot.save(pipeline_plot.pipeline_figure(table), table, args.out,
                                   args.format))


def _cmd_plot_search(args) -> None:
    from ..figures import plot_search
    from ..figures.search import search_grid
    from .search import Progress, fixed_values
    progress = Progress()
    try:
        table = search_grid(args.model, topology_for(args.topology, args.gpus), args.gpus,
                            args.global_batch,
                            seq_len=args.seq, dtype=args.dtype, nodes=args.nodes, jobs=args.jobs,
                            tp_across_nodes=args.tp_across_nodes, progress=progress,
                            memory_headroom=args.memory_headroom, fixed=fixed_values(args),
                            framework=args.framework, nccl=args.nccl)
    finally:
        progress.close()
    _plot_done(*plot_search.save(plot_search.search_figure(table), table, args.out,
                                 args.format))


def _plot_done(image, csv_path) -> None:
    from ..figures.about import about_path
    print(f"wrote {image}\nwrote {csv_path}\nwrote {about_path(csv_path)}")


def _cmd_plot_collective(args) -> None:
    from ..figures import plot
    from ..figures.data import collective_sweep, load_topologies
    from ..base.units import parse_size, power_of_two_sizes
    topos = load_topologies(args.topology or [topology_for(None, args.ranks)], args.nccl)
    ranks = args.ranks if args.ranks is not None else topos[0].devices_per_node
    sizes = power_of_two_sizes(parse_size(args.min_bytes, "--min-bytes"),
                               parse_size(args.max_bytes, "--max-bytes"))
    table = collective_sweep(topos, args.op, ranks, args.algo or ["auto"], sizes, args.measured)
    _plot_done(*plot.save(plot.collective_figure(table), table, args.out, args.format))


def _cmd_plot_validation(args) -> None:
    from ..figures import plot
    from ..figures.data import validation_table
    table = validation_table(args.report)
    _plot_done(*plot.save(plot.validation_figure(table), table, args.out, args.format))
