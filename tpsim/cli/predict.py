"""`tpsim predict` and `tpsim models`: time, communication and memory of a TP transformer."""
from __future__ import annotations

from ..errors import ConfigError
from ..memory import OPTIMIZER_BYTES
from ..model import ATTENTION_KERNELS, ATTENTIONS
from ..recompute import RECOMPUTE
from .common import StoreOnce, dump_json, positive_int, warn

DTYPES = tuple(OPTIMIZER_BYTES)     # the dtypes training memory is defined for


def fill_predict(p) -> None:
    p.add_argument("--model", default="gpt3", action=StoreOnce,
                   help="shipped name (see `tpsim models`), YAML path or Hugging Face config.json")
    p.add_argument("--topology", default="dgx-h100", action=StoreOnce,
                   help="shipped name or path to a YAML file (once: predict prices one topology)")
    p.add_argument("--tp", type=positive_int, default=8,
                   help="tensor-parallel degree (consecutive ranks)")
    p.add_argument("--micro-batch", type=positive_int, default=1, help="sequences per micro-batch")
    p.add_argument("--seq", type=positive_int, default=None,
                   help="sequence length (default: the model's)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="training dtype (default: the first of these the device lists)")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="Megatron sequence parallelism (all-gather + reduce-scatter)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout probability (0: no dropout ops; default: the model's)")
    p.add_argument("--attention", default=None, choices=ATTENTIONS + ATTENTION_KERNELS,
                   help="fused (the device's flash kernel), a flash kernel by name, or unfused "
                        "(Megatron's separate kernels) (default: the model's)")
    p.add_argument("--recompute", default="none", choices=RECOMPUTE,
                   help="activation recomputation (selective: the unfused attention core)")
    _add_step_args(p)
    for flag in ("layers", "hidden", "heads", "kv-heads", "head-dim", "ffn-hidden", "vocab"):
        p.add_argument(f"--{flag}", type=positive_int, default=None,
                       help=f"override the model's {flag}")
    p.add_argument("--json", action="store_true", help="one JSON object (keys in the README)")
    p.add_argument("--trace", metavar="FILE.json", default=None,
                   help="also write a Chrome trace (Perfetto, chrome://tracing): the scheduled "
                        "layer, and with --pp, --dp or several micro-batches every stage's streams")
    p.set_defaults(func=_cmd_predict)


def _add_step_args(p) -> None:
    """The training step's flags: pipeline, data parallelism, optimizer."""
    p.add_argument("--pp", type=positive_int, default=1, help="pipeline-parallel stages")
    p.add_argument("--dp", type=positive_int, default=1, help="data-parallel replicas")
    p.add_argument("--global-batch", type=positive_int, default=None,
                   help="sequences per optimizer step (default micro-batch x dp: one micro-batch)")
    p.add_argument("--virtual-stages", type=positive_int, default=1,
                   help="model chunks per pipeline stage: interleaved 1F1B when more than 1")
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


def _step_kwargs(args) -> dict:
    return {k: getattr(args, k) for k in (
        "pp", "dp", "global_batch", "virtual_stages", "distributed_optimizer",
        "overlap_grad_reduce", "scatter_gather_p2p", "tp_comm_overlap", "nodes",
        "first_stage_layers", "last_stage_layers")}


def _cmd_predict(args) -> None:
    from ..model import load_model, with_overrides
    from ..predict import predict
    from ..render import notice_text, prediction_json, prediction_report
    if args.trace is not None and not args.trace.strip():
        raise ConfigError("--trace", "", "a file name such as layer.json", args.trace)
    model = with_overrides(load_model(args.model), layers=args.layers, hidden=args.hidden,
                           heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                           ffn_hidden=args.ffn_hidden, vocab=args.vocab)
    pred = predict(model, args.topology, tp=args.tp, micro_batch=args.micro_batch,
                   seq_len=args.seq, dtype=args.dtype, sequence_parallel=args.sequence_parallel,
                   dropout=args.dropout, attention=args.attention, recompute=args.recompute,
                   **_step_kwargs(args))
    out = dump_json(prediction_json(pred)) if args.json else prediction_report(pred)
    if args.trace is not None:
        from ..trace import prediction_trace, write_trace
        write_trace(prediction_trace(pred), args.trace)
    print(out)
    if args.trace is not None and not args.json:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    for w in pred.warnings:
        warn(notice_text(w))


def _family_then_size(m) -> tuple:
    """gpt2 < gpt3 < llama2 < llama3, smallest model first inside a family (gpt3-1.3b before
    gpt3-13b, gpt3 = 175B last)."""
    return (m.name.split("-")[0], m.params(), m.name)


def fill_models(p) -> None:
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> None:
    from ..model import list_models
    from ..render import models_table
    print(models_table(sorted(list_models(), key=_family_then_size)))
