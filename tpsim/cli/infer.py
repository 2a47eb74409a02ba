"""`tpsim infer`: prefill and decode of a tensor-parallel model with a KV cache."""
from __future__ import annotations

from .common import StoreOnce, dump_json, positive_int


def fill_infer(p) -> None:
    p.add_argument("--model", default="llama2-70b", action=StoreOnce, help="shipped name (see `tpsim models`) or YAML path")
    p.add_argument("--topology", default="dgx-h100", action=StoreOnce, help="shipped name or path to a YAML file")
    p.add_argument("--tp", type=positive_int, default=8, help="tensor-parallel degree (consecutive ranks)")
    p.add_argument("--pp", type=positive_int, default=1, help="pipeline stages (batch/pp micro-batches in flight)")
    p.add_argument("--batch", type=positive_int, default=1, help="sequences served together")
    p.add_argument("--prompt", type=positive_int, default=2048, help="prompt (input) tokens per sequence")
    p.add_argument("--gen", type=positive_int, default=256,
                   help="tokens generated per sequence, the first one by the prefill (>= 2)")
    p.add_argument("--dtype", default="bf16", help="GEMMs and weights: bf16, fp16 or fp8 "
                                                   "(fp8 keeps bf16 activations)")
    p.add_argument("--kv-dtype", default=None, help="KV cache: bf16, fp16 or fp8 (default: --dtype)")
    p.add_argument("--allreduce", default="nccl",
                   help="nccl, or custom: vLLM's one-shot/two-shot kernel where it runs")
    p.add_argument("--eager", action="store_true",
                   help="no CUDA graphs: the host issues every op (the topology's host_dispatch_us)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args) -> None:
    from ..serving.infer import infer
    from ..report.render import infer_json, infer_report
    pred = infer(args.model, args.topology, tp=args.tp, pp=args.pp, batch=args.batch,
                 prompt=args.prompt, gen=args.gen, dtype=args.dtype, kv_dtype=args.kv_dtype,
                 allreduce=args.allreduce, eager=args.eager)
    print(dump_json(infer_json(pred)) if args.json else infer_report(pred))
