"""`tpsim predict` and `tpsim models`: time, communication and memory of a TP transformer."""
from __future__ import annotations

import json


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="time, communication and memory of a TP transformer")
    p.add_argument("--model", default="gpt3", help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default="dgx-h100", help="shipped name or path to a YAML file")
    p.add_argument("--tp", type=int, default=8, help="tensor-parallel degree (consecutive ranks)")
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per micro-batch")
    p.add_argument("--seq", type=int, default=None, help="sequence length (default: the model's)")
    p.add_argument("--dtype", default=None,
                   help="bf16, fp16 or fp32 (default: the first of these the device lists)")
    p.add_argument("--sequence-parallel", action="store_true",
                   help="Megatron sequence parallelism (all-gather + reduce-scatter)")
    p.add_argument("--dropout", type=float, default=None, help="dropout probability (0: no dropout ops)")
    p.add_argument("--attention", default=None, help="fused (flash) or unfused (Megatron's kernels)")
    p.add_argument("--tp-comm-overlap", action="store_true",
                   help="Transformer Engine's TP communication overlap (userbuffers; needs "
                        "--sequence-parallel)")
    p.add_argument("--recompute", default="none",
                   help="activation recomputation: none, selective (unfused attention core) or full")
    for flag in ("layers", "hidden", "heads", "kv-heads", "head-dim", "ffn-hidden", "vocab"):
        p.add_argument(f"--{flag}", type=int, default=None, help=f"override the model's {flag}")
    p.add_argument("--json", action="store_true", help="one JSON object (keys in the README)")
    p.add_argument("--trace", metavar="FILE.json", default=None,
                   help="also write the scheduled layer as a Chrome trace (Perfetto, chrome://tracing)")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args) -> None:
    from ..model import load_model, with_overrides
    from ..predict import predict
    from ..render import prediction_json, prediction_report
    model = with_overrides(load_model(args.model), layers=args.layers, hidden=args.hidden,
                           heads=args.heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                           ffn_hidden=args.ffn_hidden, vocab=args.vocab)
    pred = predict(model, args.topology, tp=args.tp, micro_batch=args.micro_batch,
                   seq_len=args.seq, dtype=args.dtype, sequence_parallel=args.sequence_parallel,
                   dropout=args.dropout, attention=args.attention, recompute=args.recompute,
                   tp_comm_overlap=args.tp_comm_overlap)
    if args.trace:
        from ..trace import prediction_trace, write_trace
        write_trace(prediction_trace(pred), args.trace)
    print(json.dumps(prediction_json(pred), indent=2) if args.json else prediction_report(pred))
    if args.trace and not args.json:
        print(f"trace: {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")


def cmd_models(args) -> None:
    from ..model import list_models
    from ..render import models_table
    print(models_table(list_models()))
