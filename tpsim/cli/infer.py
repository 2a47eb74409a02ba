"""`tpsim infer`: prefill and decode of a tensor-parallel model with a KV cache; comma lists
(``--tp 2,4,8 --batch 1,64``) compare every combination in one table."""
from __future__ import annotations

from ..spec.serve import ServeSettings
from ..spec.serving import ServingLayout
from ..base.errors import ConfigError
from .common import TOPOLOGY_HELP, StoreOnce, add_csv, output_format, topology_for, warn
from .layout_args import add_layout_arguments, layout_from_args, list_names
from .lists import name_list

# the flags that take a comma list, in the order the combinations vary (the last fastest)
LISTS = ("model", "topology") + list_names(ServingLayout)     # --nccl the first field
LIST_HELP = "; a comma list (--tp 2,4,8 --batch 1,64) compares every combination in one table"


def add_model_topology(p) -> None:
    """``--model`` and ``--topology`` of a serving command, each a name or a comma list
    (``--nccl`` next: the layout's first field)."""
    p.add_argument("--model", default=("llama2-70b",), action=StoreOnce, type=name_list,
                   help="shipped name (see `tpsim models`) or YAML path; a comma list "
                        "compares them (default: llama2-70b)")
    p.add_argument("--topology", default=(None,), action=StoreOnce, type=name_list,
                   help=TOPOLOGY_HELP.replace(" (", "; a comma list compares them (", 1))


def fill_infer(p) -> None:
    add_model_topology(p)
    add_layout_arguments(p, cls=ServingLayout, lists=True, extra={"tp": LIST_HELP})
    add_layout_arguments(p, ("usd_per_gpu_hour",), cls=ServeSettings)
    p.add_argument("--json", action="store_true", help="one JSON object (a list of them with "
                   "comma lists)")
    add_csv(p)
    p.set_defaults(func=_cmd_infer)


def run_each(args, combos, one):
    """``one(combo)`` for every combination; an error names the combination it came from."""
    from ..base.errors import TpsimError
    out = []
    for combo in combos:
        try:
            out.append(one(combo))
        except TpsimError as e:
            if len(combos) == 1:
                raise
            shown = ", ".join(f"{k}={v}" for k, v in combo.items() if v is not None)
            raise TpsimError(f"{e} [in the combination {shown}]") from None
    return out


def _cmd_infer(args) -> None:
    from ..serving.infer import infer
    from ..report.render import infer_json, infer_notice_text, infer_report
    from .lists import combinations, print_runs, varied
    fmt = output_format(args)
    combos = combinations(args, LISTS)

    def one(combo):
        topology = topology_for(combo["topology"], combo["tp"] * combo["pp"] * combo["ep"])
        pred = infer(combo["model"], topology, usd_per_gpu_hour=args.usd_per_gpu_hour,
                     settings=layout_from_args(args, cls=ServingLayout, given=combo))
        check_batch(pred)
        return pred
    preds = run_each(args, combos, one)
    from ..report.serve_compare import infer_comparison
    print_runs(preds, fmt, infer_json, infer_report, infer_comparison, varied(combos))
    for pred in preds:                # the report keeps its WARNING lines; stderr has them too
        for w in pred.warnings:
            warn(infer_notice_text(w))


def check_batch(pred) -> None:
    """A batch that cannot fit where the weights do, refused (exit 2) naming the largest one
    that fits (:attr:`~tpsim.serving.result.InferMemory.max_batch`): its KV cache, not the
    layout, is what overflows. Weights that do not fit leave the batch aside: a warning (weights
    that fit beside some batch do, however little the allocator's waste at this one leaves)."""
    mem, inp = pred.memory, pred.inputs
    usable = max(mem.capacity_bytes - mem.reserved_bytes, 0.0)
    if mem.fits or (mem.max_batch == 0 and mem.weights_bytes > usable):
        return
    room = (f"{mem.total_bytes / 2**30:,.1f} GiB per GPU needed, {usable / 2**30:,.1f} GiB "
            f"usable on {inp.device}, {mem.weights_bytes / 2**30:,.1f} GiB of it weights"
            if usable > mem.weights_bytes else f"{mem.total_bytes / 2**30:,.1f} GiB per GPU "
            f"needed of {inp.device}'s {mem.capacity_bytes / 2**30:,.2f} GiB")
    if mem.max_batch == 0:
        one = mem.kv_bytes_per_token * (inp.prompt + inp.gen - 1)
        raise ConfigError("--batch", "", f"a batch that fits: not even one sequence of --prompt "
                          f"{inp.prompt} + --gen {inp.gen} tokens fits beside the weights (its KV "
                          f"cache {one / 2**30:,.1f} GiB; {room}); a shorter context, more TP or "
                          "PP, or --kv-dtype fp8", inp.batch)
    raise ConfigError("--batch", "", f"at most {mem.max_batch}, the largest batch whose KV cache "
                      f"fits beside the weights at --prompt {inp.prompt} --gen {inp.gen} ({room})",
                      inp.batch)
