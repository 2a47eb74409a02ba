"""`tpsim predict` and `tpsim models`: time, communication and memory of a TP transformer."""
from __future__ import annotations

from ..base.errors import ConfigError
from ..sim.memory import OPTIMIZER_BYTES
from ..spec.model import ATTENTION_KERNELS, ATTENTIONS
from ..layer.recompute import RECOMPUTE
from .common import StoreOnce, dump_json, positive_int, probability, warn
from .lists import braces, choice_list, combinations, int_list, name_list, varied

DTYPES = tuple(OPTIMIZER_BYTES)     # the dtypes training memory is defined for


def fill_predict(p) -> None:
    p.add_argument("--model", default=("gpt3",), action=StoreOnce, type=name_list,
                   help="shipped name (see `tpsim models`), YAML path or Hugging Face "
                        "config.json; a comma list compares them (default: gpt3)")
    p.add_argument("--topology", default=("dgx-h100",), action=StoreOnce, type=name_list,
                   help="shipped name or path to a YAML file; a comma list compares them "
                        "(default: dgx-h100)")
    p.add_argument("--tp", type=int_list, default=(8,),
                   help="tensor-parallel degree (consecutive ranks); every flag that takes a "
                        "comma list (--tp 1,2,4,8) compares each combination in one table "
                        "(default: 8)")
    p.add_argument("--micro-batch", type=int_list, default=(1,),
                   help="sequences per micro-batch (default: 1)")
    p.add_argument("--seq", type=int_list, default=None,
                   help="sequence length (default: the model's)")
    p.add_argument("--dtype", default=None, type=choice_list(DTYPES), metavar=braces(DTYPES),
                   help="training dtype (default: the first of these the device lists)")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="Megatron sequence parallelism (all-gather + reduce-scatter)")
    p.add_argument("--dropout", type=probability, default=None,
                   help="dropout probability (0: no dropout ops; default: the model's)")
    p.add_argument("--attention", default=None, choices=ATTENTIONS + ATTENTION_KERNELS,
                   help="fused (the device's flash kernel), a flash kernel by name, or unfused "
                        "(Megatron's separate kernels) (default: the model's)")
    p.add_argument("--recompute", default=("none",), type=choice_list(RECOMPUTE),
                   metavar=braces(RECOMPUTE), help="activation recomputation (selective: the "
                   "unfused attention core) (default: none)")
    _add_step_args(p, lists=True)
    for flag in ("layers", "hidden", "heads", "kv-heads", "head-dim", "ffn-hidden", "vocab"):
        p.add_argument(f"--{flag}", type=positive_int, default=None,
                       help=f"override the model's {flag}")
    p.add_argument("--json", action="store_true", help="one JSON object (keys in docs/json.md)")
    p.add_argument("--trace", metavar="FILE.json", default=None,
                   help="also write a Chrome trace (Perfetto, chrome://tracing): the scheduled "
                        "layer, and with --pp, --dp or several micro-batches every stage's streams")
    p.set_defaults(func=_cmd_predict)


def _add_step_args(p, lists: bool = False) -> None:
    """The training step's flags: pipeline, data parallelism, optimizer (``lists``: the
    counts take comma lists)."""
    kind, one = (int_list, lambda x: (x,)) if lists else (positive_int, lambda x: x)
    p.add_argument("--pp", type=kind, default=one(1), help="pipeline-parallel stages (default: 1)")
    p.add_argument("--dp", type=kind, default=one(1), help="data-parallel replicas (default: 1)")
    p.add_argument("--global-batch", type=kind, default=None,
                   help="sequences per optimizer step (default micro-batch x dp: one micro-batch)")
    p.add_argument("--virtual-stages", type=kind, default=one(1),
                   help="model chunks per pipeline stage: interleaved 1F1B when more than 1 "
                        "(default: 1)")
    p.add_argument("--distributed-optimizer", action="store_true",
                   help="shard the optimizer state over DP (ZeRO-1): reduce-scatter + all-gather")
    p.add_argument("--no-overlap-grad-reduce", dest="overlap_grad_reduce", action="store_false",
                   help="reduce the gradients after the whole backward (older Megatron, "
                        "Megatron-DeepSpeed; default: in buckets beside it, as Megatron-core)")
    p.add_argument("--scatter-gather-p2p", action="store_true",
                   help="without SP each TP rank sends 1/tp of an activation, the next stage "
                        "all-gathers it (Megatron-LM 2021, DeepSpeed's pipeline engine)")
    p.add_argument("--tp-comm-overlap", action="store_true",
                   help="Transformer Engine's TP communication overlap (userbuffers; needs "
                        "--sequence-parallel)")
    p.add_argument("--nodes", type=positive_int, default=None,
                   help="size the topology's network to this many nodes")
    p.add_argument("--first-stage-layers", type=positive_int, default=None,
                   help="layers on the first pipeline stage (the rest split evenly)")
    p.add_argument("--last-stage-layers", type=positive_int, default=None,
                   help="layers on the last pipeline stage (the rest split evenly)")


LISTS = ("model", "topology", "tp", "micro_batch", "seq", "dtype", "recompute", "pp", "dp",
         "virtual_stages", "global_batch")     # the flags that take a comma list
STEP = ("overlap_grad_reduce", "scatter_gather_p2p", "tp_comm_overlap", "nodes",
        "distributed_optimizer", "first_stage_layers", "last_stage_layers")


def _step_kwargs(args) -> dict:
    """The step's keyword arguments of :func:`tpsim.training.predict.predict` (one value each)."""
    return {k: getattr(args, k) for k in ("pp", "dp", "global_batch", "virtual_stages") + STEP}


def _predict_one(args, combo: dict):
    from ..spec.model import load_model, with_overrides
    from ..training.predict import predict
    model = with_overrides(load_model(combo["model"]), layers=args.layers, hidden=args.hidden,
                           heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                           ffn_hidden=args.ffn_hidden, vocab=args.vocab)
    return predict(model, combo["topology"], tp=combo["tp"], micro_batch=combo["micro_batch"],
                   seq_len=combo["seq"], dtype=combo["dtype"],
                   sequence_parallel=args.sequence_parallel, dropout=args.dropout,
                   attention=args.attention, recompute=combo["recompute"],
                   pp=combo["pp"], dp=combo["dp"], global_batch=combo["global_batch"],
                   virtual_stages=combo["virtual_stages"],
                   **{k: getattr(args, k) for k in STEP})


def _cmd_predict(args) -> None:
    from ..report.render import notice_text, prediction_json, prediction_report
    if args.trace is not None and not args.trace.strip():
        raise ConfigError("--trace", "", "a file name such as layer.json", args.trace)
    combos = combinations(args, LISTS)
    if len(combos) > 1:
        return _compare(args, combos)
    pred = _predict_one(args, combos[0])
    out = dump_json(prediction_json(pred)) if args.json else prediction_report(pred)
    if args.trace is not None:
        from ..report.trace import prediction_trace, write_trace
        write_trace(prediction_trace(pred), args.trace)
    print(out)
    if args.trace is not None and not args.json:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    for w in pred.warnings:
        warn(notice_text(w))


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
