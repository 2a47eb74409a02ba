"""`tpsim predict` and `tpsim models`: time, communication and memory of a TP transformer."""
from __future__ import annotations

from ..base.errors import ConfigError
from ..spec.layout import Layout
from .common import TOPOLOGY_HELP, StoreOnce, add_csv, dump_json, note_seq, output_format, positive_int, warn
from .layout_args import (add_framework_argument, add_layout_arguments, layout_from_args,
                          layout_values, list_names)
from .lists import combinations, name_list, varied

# the training step's settings (pipeline, data parallelism, optimizer): `tpsim plot pipeline`
STEP_FIELDS = ("pp", "dp", "global_batch", "virtual_stages", "distributed_optimizer",
               "overlap_grad_reduce", "overlap_param_gather", "scatter_gather_p2p", "tp_comm_overlap", "nodes",
               "first_stage_layers", "last_stage_layers", "pipeline_layout")
TP_HELP = ("; every flag that takes a comma list (--tp 1,2,4,8) compares each combination in "
           "one table")


def fill_predict(p) -> None:
    p.add_argument("--model", default=("gpt3",), action=StoreOnce, type=name_list,
                   help="shipped name (see `tpsim models`), YAML path or Hugging Face "
                        "config.json; a comma list compares them (default: gpt3)")
    p.add_argument("--topology", default=None, action=StoreOnce, type=name_list,
                   help=TOPOLOGY_HELP.replace(" (", "; a comma list compares them (", 1))
    add_layout_arguments(p, lists=True, extra={"tp": TP_HELP})    # every field of Layout
    add_framework_argument(p)
    for flag in ("layers", "hidden", "heads", "kv-heads", "head-dim", "ffn-hidden", "vocab"):
        p.add_argument(f"--{flag}", type=positive_int, default=None,
                       help=f"override the model's {flag}")
    p.add_argument("--json", action="store_true", help="one JSON object (keys in docs/json.md)")
    add_csv(p)
    p.add_argument("--ops", action="store_true", help="every section in full: the op table of "
                   "one layer, the layer, its collectives, the model, the step's stages, memory "
                   "(default: a summary of at most 30 lines)")
    p.add_argument("--trace", metavar="FILE.json", default=None,
                   help="also write a Chrome trace (Perfetto, chrome://tracing): the scheduled "
                        "layer, and with --pp, --dp or several micro-batches every stage's streams")
    p.set_defaults(func=_cmd_predict)


def add_step_args(p) -> None:
    """The training step's flags (pipeline, data parallelism, optimizer), one value each."""
    add_layout_arguments(p, STEP_FIELDS)
    add_framework_argument(p)


# the flags that take a comma list (argparse names: the Layout's fields declared ``lists``), in
# the order the combinations vary (the last fastest) and the comparison's columns show them
LISTS = ("model", "topology") + list_names(Layout)     # --nccl the first field


def step_kwargs(args) -> dict:
    """The step's keyword arguments of :func:`tpsim.training.predict.predict` (one value each)."""
    return layout_values(args, STEP_FIELDS)


def _predict_one(args, combo: dict):
    from ..base.compiled import quiet_import
    from ..spec.frameworks import check_given
    from ..spec.model import load_model, with_overrides
    predict = quiet_import("tpsim.training.predict").predict    # as `import tpsim` would
    model = with_overrides(load_model(combo["model"]), layers=args.layers, hidden=args.hidden,
                           heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                           ffn_hidden=args.ffn_hidden, vocab=args.vocab)
    check_given(model, layout_values(args, given=combo, preset=False), args.framework)
    lay = layout_from_args(args, given=combo)
    return predict(model, combo["topology"], layout=lay)   # None: the job's default


def _cmd_predict(args) -> None:
    from ..report.render import notice_text, prediction_json, prediction_report
    from ..report.summary import prediction_summary
    if args.trace is not None and not args.trace.strip():
        raise ConfigError("--trace", "", "a file name such as layer.json", args.trace)
    fmt = output_format(args)
    combos = combinations(args, LISTS)
    for model in dict.fromkeys(c["model"] for c in combos if c["seq"] is None):
        note_seq(model, None)
    if len(combos) > 1:
        return _compare(args, combos)
    pred = _predict_one(args, combos[0])
    if fmt == "json":
        out = dump_json(prediction_json(pred, args.framework))
    elif fmt == "csv":
        from ..report.flat_csv import csv_text
        out = csv_text([prediction_json(pred, args.framework)])
    else:
        out = prediction_report(pred, args.framework) if args.ops else prediction_summary(
            pred, combos[0]["model"], combos[0]["topology"],
            layout_from_args(args, given=combos[0]).predict_kwargs(), args.framework)
    if args.trace is not None:
        from ..report.trace import prediction_trace, write_trace
        write_trace(prediction_trace(pred), args.trace)
    print(out)
    if args.trace is not None and fmt is None:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if fmt or args.ops:               # the summary states both notices itself
        for w in pred.warnings:
            warn(notice_text(w, args.framework))


def _compare(args, combos: list[dict]) -> None:
    """One prediction per combination of the comma lists: a table, or a JSON list."""
    from ..base.errors import TpsimError
    from ..report.render import comparison_table, prediction_json
    if args.trace is not None:
        raise ConfigError("--trace", "", "one configuration (no comma lists)", args.trace)
    preds = []
    for combo in combos:
        try:
            preds.append(_predict_one(args, combo))
        except TpsimError as e:
            shown = ", ".join(f"{k}={v}" for k, v in combo.items() if v is not None)
            raise TpsimError(f"{e} [in the combination {shown}]") from None
    if args.json:
        print(dump_json([prediction_json(p) for p in preds]))
    elif args.csv:
        from ..report.flat_csv import csv_text
        print(csv_text(prediction_json(p) for p in preds))
    else:
        print(comparison_table(preds, varied(combos)))


def _family_then_size(m) -> tuple:
    """gpt2 < gpt3 < llama2 < llama3, smallest model first inside a family (gpt3-1.3b before
    gpt3-13b, gpt3 = 175B last)."""
    return (m.name.split("-")[0], m.params(), m.name)


def fill_models(p) -> None:
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> None:
    from ..spec.model import list_models
    from ..report.render import models_table
    print(models_table(sorted(list_models(), key=_family_then_size)))
