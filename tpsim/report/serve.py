"""``tpsim serve``'s output: a short text report and the JSON object, each section naming the
function that computed it (``formula``, read off the function objects as
:mod:`tpsim.report.formulas` does)."""
from __future__ import annotations

import math

from ..cluster.nccl import nccl_text
from ..base.formula import qualname
from ..serving.engine import EngineLoop, kv_cache_blocks, serve, summarize
from ..serving.frontend import paced_wall_s
from ..serving.gaps import TokenGaps
from ..serving.host import step_wall_s
from ..serving.serve_result import Percentiles
from ..serving.step_model import StepModel
from .energy import energy_json, energy_lines
from .formulas import by_field, formula_lines
from .header import kernel_note
from .values import plain

ENGINE = qualname(kv_cache_blocks)
THROUGHPUT = qualname(summarize)
LATENCY = by_field((summarize, ("ttft_s", "tpot_s", "e2e_s")), (TokenGaps, ("itl_s",)),
                   (Percentiles.of, ("mean", "p50", "p90", "p99")))
SCHEDULER = by_field((EngineLoop.run, ("steps", "prefill_steps", "preemptions",
                                       "mean_running")),
                     (StepModel, ("step_prices",)), (step_wall_s, ("host_wait_s",)),
                     (paced_wall_s, ("frontend_wait_s",)))
INPUTS = qualname(serve)


def _rate(rate: float, users: int | None = None) -> str:
    if users is not None:
        return f"a closed loop of {users} users"
    return "all at once (offline)" if math.isinf(rate) else f"Poisson {rate:g} requests/s"


def _ms(p: Percentiles) -> str:
    return (f"mean {p.mean * 1e3:10.2f}  p50 {p.p50 * 1e3:10.2f}  p90 {p.p90 * 1e3:10.2f}  "
            f"p99 {p.p99 * 1e3:10.2f} ms")


def serve_report(p) -> str:
    """``tpsim serve``'s text: at most 30 lines of at most 120 columns."""
    i, e, t, lat, s = p.inputs, p.engine, p.throughput, p.latency, p.scheduler
    host = ("CUDA graphs, eager prefill" if i.eager_prefill else "CUDA graphs") if i.cuda_graphs \
        else "eager"
    gib = 2**30
    lines = [
        f"tpsim serve: {i.model} on {i.topology}{nccl_text(i.nccl)} ({i.device}), TP={i.tp}"
        f"{f' PP={i.pp}' if i.pp > 1 else ''}{f' EP={i.ep}' if i.ep > 1 else ''}; "
        f"GEMMs {i.dtype}, "
        f"KV cache {i.kv_dtype}; all-reduce {i.allreduce}; {host}{kernel_note(i)}",
        f"{i.requests} requests, {_rate(i.rate, i.users)}, seed {i.seed}; prompt {i.prompt} "
        f"({i.prompt_dist}), gen {i.gen} ({i.gen_dist})",
        "",
        f"engine: max_num_seqs {e.max_num_seqs}, max_num_batched_tokens "
        f"{e.max_num_batched_tokens}, block_size {e.block_size}, {e.memory_rule} "
        f"(tensors {e.gpu_memory_utilization:.0%})",
        *([] if i.admission == "vllm" else
          [f"  admission {i.admission}: SGLang's PrefillAdder (tpsim.serving.admission)"]),
        *([] if not i.num_speculative_tokens else
          [f"  speculative decoding: {i.speculative or i.draft_model} drafts k = "
           f"{i.num_speculative_tokens}, acceptance {i.acceptance_rate:.3g} per token "
           "(tpsim.serving.spec_engine)"]),
        f"  KV cache {e.kv_cache_bytes / gib:.2f} GiB per GPU: {e.num_gpu_blocks} blocks"
        f"{f' on {i.ep} EP replicas' if i.ep > 1 else ''}, "
        f"{e.kv_cache_tokens:,} tokens (weights {e.weights_bytes / gib:.2f} GiB, activations "
        f"{e.activations_bytes / gib:.2f} GiB)",
        *formula_lines(ENGINE),
        "",
        f"throughput: {t.output_tokens_per_s:,.1f} output tokens/s, {t.input_tokens_per_s:,.1f} "
        f"input tokens/s, {t.requests_per_s:.3f} requests/s over {t.duration_s:.2f} s",
        *formula_lines(THROUGHPUT),
        *energy_lines(p.energy, p.cost),
        "latency per request:",
        f"  TTFT  {_ms(lat.ttft_s)}",
        f"  TPOT  {_ms(lat.tpot_s)}",
        f"  e2e   {_ms(lat.e2e_s)}",
        f"  ITL   {_ms(lat.itl_s)}  (per streamed chunk, pooled)",
        *formula_lines(LATENCY),
        "",
        f"scheduler: {s.steps:,} engine steps ({s.prefill_steps:,} with prefill), "
        f"{s.mean_running:.1f} sequences per step, {s.preemptions} preemptions (recompute)",
        f"  the steps priced from {s.step_prices} layer simulations, interpolated; the GPU "
        f"waited {s.host_wait_s:.3f} s for the engine's host work,",
        f"  the engine {s.frontend_wait_s:.3f} s for the front end (HTTP server, tokenizer)",
        *formula_lines(SCHEDULER),
    ]
    return "\n".join(lines)


def serve_json(p) -> dict:
    """The JSON object of ``tpsim serve --json``; an infinite rate is the string "inf"."""
    inputs = plain(p.inputs)
    if math.isinf(inputs["rate"]):
        inputs["rate"] = "inf"
    return {
        "inputs": {**inputs, "formula": INPUTS},
        "engine": {**plain(p.engine), "formula": ENGINE},
        "throughput": {**plain(p.throughput), "formula": THROUGHPUT},
        "latency": {**plain(p.latency), "formula": dict(LATENCY)},
        "scheduler": {**plain(p.scheduler), "formula": dict(SCHEDULER)},
        **energy_json(p),
    }


__all__ = ["serve_report", "serve_json"]
