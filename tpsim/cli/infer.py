"""`tpsim infer`: prefill and decode of a tensor-parallel model with a KV cache."""
from __future__ import annotations

from ..spec.serving import ServingLayout
from .common import StoreOnce, dump_json
from .layout_args import add_layout_arguments, layout_from_args


def fill_infer(p) -> None:
    p.add_argument("--model", default="llama2-70b", action=StoreOnce, help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default="dgx-h100", action=StoreOnce, help="shipped name or path to a YAML file")
    add_layout_arguments(p, cls=ServingLayout)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> None:
    from ..serving.infer import infer
    from ..report.render import infer_json, infer_report
    pred = infer(args.model, args.topology,
                 settings=layout_from_args(args, cls=ServingLayout))
    print(dump_json(infer_json(pred)) if args.json else infer_report(pred))
