"""`tpsim infer`: prefill and decode of a tensor-parallel model with a KV cache."""
from __future__ import annotations

from ..spec.serving import ServingLayout
from ..base.errors import ConfigError
from .common import TOPOLOGY_HELP, StoreOnce, add_csv, dump_json, output_format, warn, topology_for
from .layout_args import add_layout_arguments, layout_from_args


def fill_infer(p) -> None:
    p.add_argument("--model", default="llama2-70b", action=StoreOnce, help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default=None, action=StoreOnce, help=TOPOLOGY_HELP)
    add_layout_arguments(p, cls=ServingLayout)
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_csv(p)
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> None:
    from ..serving.infer import infer
    from ..report.render import infer_json, infer_notice_text, infer_report
    fmt = output_format(args)
    pred = infer(args.model, topology_for(args.topology, args.tp * args.pp),
                 settings=layout_from_args(args, cls=ServingLayout))
    check_batch(pred)
    if fmt == "csv":
        from ..report.flat_csv import csv_text
        print(csv_text([infer_json(pred)]))
    else:
        print(dump_json(infer_json(pred)) if fmt else infer_report(pred))
    for w in pred.warnings:          # the report keeps its WARNING lines; stderr has them too
        warn(infer_notice_text(w))


def check_batch(pred) -> None:
    """A batch that cannot fit where the weights do, refused (exit 2) naming the largest one
    that fits (:attr:`~tpsim.serving.result.InferMemory.max_batch`): its KV cache, not the
    layout, is what overflows. Weights that do not fit leave the batch aside: a warning."""
    mem, inp = pred.memory, pred.inputs
    usable = mem.capacity_bytes - mem.reserved_bytes
    if mem.fits or mem.weights_bytes > usable:
        return
    room = (f"{mem.total_bytes / 2**30:,.1f} GiB per GPU needed, {usable / 2**30:,.1f} GiB "
            f"usable on {inp.device}, {mem.weights_bytes / 2**30:,.1f} GiB of it weights")
    if mem.max_batch == 0:
        one = mem.kv_bytes_per_token * (inp.prompt + inp.gen - 1)
        raise ConfigError("--batch", "", f"a batch that fits: not even one sequence of --prompt "
                          f"{inp.prompt} + --gen {inp.gen} tokens fits beside the weights (its KV "
                          f"cache {one / 2**30:,.1f} GiB; {room}); a shorter context, more TP or "
                          "PP, or --kv-dtype fp8", inp.batch)
    raise ConfigError("--batch", "", f"at most {mem.max_batch}, the largest batch whose KV cache "
                      f"fits beside the weights at --prompt {inp.prompt} --gen {inp.gen} ({room})",
                      inp.batch)
