"""`tpsim infer`: prefill and decode of a tensor-parallel model with a KV cache."""
from __future__ import annotations

from ..spec.serving import ServingLayout
from .common import StoreOnce, add_csv, dump_json, output_format
from .layout_args import add_layout_arguments, layout_from_args


def fill_infer(p) -> None:
    p.add_argument("--model", default="llama2-70b", action=StoreOnce, help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default="dgx-h100", action=StoreOnce, help="shipped name or path to a YAML file")
    add_layout_arguments(p, cls=ServingLayout)
    p.add_argument("--json", action="store_true", help="one JSON object")
    add_csv(p)
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> None:
    from ..serving.infer import infer
    from ..report.render import infer_json, infer_report
    fmt = output_format(args)
    pred = infer(args.model, args.topology,
                 settings=layout_from_args(args, cls=ServingLayout))
    if fmt == "csv":
        from ..report.flat_csv import csv_text
        print(csv_text([infer_json(pred)]))
    else:
        print(dump_json(infer_json(pred)) if fmt else infer_report(pred))
