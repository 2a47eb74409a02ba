"""`tpsim search`: the fastest layouts of a training job that fit in memory."""
from __future__ import annotations

import sys

from .common import TOPOLOGY_HELP, StoreOnce, topology_for, add_csv, dump_json, note_seq, output_format, positive_int
from .layout_args import (add_framework_argument, add_layout_arguments, add_pin_arguments,
                          layout_values)

FIXED_HELP = ": every layout searched runs with it"


def fill_search(p) -> None:
    from ..search.pins import PINNABLE
    add_search_space(p)
    add_pin_arguments(p, PINNABLE, what="every value the search can run")
    add_layout_arguments(p, ("usd_per_gpu_hour",))
    add_fixed_arguments(p)
    p.add_argument("--zero-with-pp", action="store_true",
                   help="also try ZeRO-2/3 with a pipeline, as PyTorch's pipeline schedules run "
                        "FSDP2 (default: without one only)")
    p.add_argument("--top", type=positive_int, default=10, help="candidates to show (at most 100)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: evaluated, candidates (best first), dropped")
    add_csv(p)
    p.set_defaults(func=_cmd_search)


def add_fixed_arguments(p) -> None:
    """The settings every layout of a search runs with, and ``--framework``
    (:mod:`tpsim.search.fixed`; ``tpsim search``, ``tpsim plot search``)."""
    from ..search.fixed import FIXED
    add_layout_arguments(p, FIXED, extra=dict.fromkeys(FIXED, FIXED_HELP))
    add_framework_argument(p)


def fixed_values(args) -> dict:
    """The fixed settings the parsed ``args`` give, by field name; the search applies
    ``--framework`` to them, as predict does (:func:`tpsim.search.fixed.fixed_settings`)."""
    from ..search.fixed import FIXED
    return layout_values(args, FIXED, preset=False)


def add_search_space(p) -> None:
    """The job a search is for (``tpsim search``, ``tpsim plot search``)."""
    p.add_argument("--model", default="gpt3", action=StoreOnce,
                   help="shipped name (see `tpsim models`), YAML path or Hugging Face config.json")
    p.add_argument("--topology", default=None, action=StoreOnce, help=TOPOLOGY_HELP)
    add_layout_arguments(p, ("nccl",))
    p.add_argument("--gpus", type=positive_int, required=True,
                   help="GPUs of the job: every tp x pp x dp = gpus is tried")
    p.add_argument("--global-batch", type=positive_int, required=True,
                   help="sequences per optimizer step")
    add_layout_arguments(p, ("seq_len", "dtype", "nodes", "memory_headroom"))
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="processes to spread the pricing and the re-pricing over (at most "
                        "the machine's CPU cores)")
    p.add_argument("--tp-across-nodes", action="store_true",
                   help="also try TP degrees larger than a node")


class Progress:
    """One line on stderr, rewritten in place; only on a terminal."""

    def __init__(self, stream=None):
        stream = sys.stderr if stream is None else stream
        self.stream, self.shown = stream, False
        self.on = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.on:
            return
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        self.stream.write(f"\r{phase}: {count}\033[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _cmd_search(args) -> None:
    from ..report.search import search_csv, search_json, search_report
    from ..search.driver import search
    from ..base.collector import paused_gc
    from ..search.pins import PINNABLE
    fmt = output_format(args)
    note_seq(args.model, args.seq)
    progress = Progress()
    with paused_gc(freeze=True):    # the whole command, printing included
        try:
            result = search(args.model, topology_for(args.topology, args.gpus, args.nodes), args.gpus,
                            args.global_batch, seq_len=args.seq, dtype=args.dtype,
                            nodes=args.nodes, top=args.top, jobs=args.jobs,
                            tp_across_nodes=args.tp_across_nodes, progress=progress,
                            memory_headroom=args.memory_headroom,
                            pins=layout_values(args, PINNABLE, preset=False),
                            zero_with_pp=args.zero_with_pp,
                            fixed=fixed_values(args),
                            framework=args.framework,    # the search applies it, as predict
                            nccl=args.nccl)
        finally:
            progress.close()
        usd = args.usd_per_gpu_hour
        print(dump_json(search_json(result, usd)) if fmt == "json" else search_csv(result, usd)
              if fmt == "csv" else search_report(result))
