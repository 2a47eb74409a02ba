"""What a serving engine's run takes beyond the model's split and dtypes
(:class:`~tpsim.spec.serving.ServingLayout`): the requests (how many, when they arrive, their
lengths) and the engine's scheduler knobs, named as vLLM names them.

Defaults are vLLM's (V1 engine, the OpenAI-compatible server, vllm/engine/arg_utils.py and
vllm/config.py as of v0.8): ``max_num_seqs`` 256, ``max_num_batched_tokens`` 8192 (the token
budget of one engine step with chunked prefill on), ``block_size`` 16 tokens per KV-cache
page. TensorRT-LLM (max_num_tokens 8192, max_batch_size 256 in trtllm-serve) and SGLang
(chunked_prefill_size 8192) use the same defaults under other names.

Lengths (``--prompt-dist``, ``--gen-dist``; :func:`length_dist`):

* ``fixed``: every request has ``--prompt`` (``--gen``) tokens;
* ``uniform:lo,hi``: integers drawn uniformly from lo .. hi, both included;
* ``exponential``: exponential with mean ``--prompt`` (``--gen``), rounded up to a whole
  token (at least 1).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..base.errors import ConfigError
from .serving import ServingLayout
from .settings import check, declared, given_or_made, setting

DISTS = ("fixed", "uniform:lo,hi", "exponential")
ADMISSIONS = ("vllm", "sglang-0.3", "sglang-0.4")     # tpsim/serving/admission.py
_UNIFORM = re.compile(r"uniform:\s*([0-9]+)\s*,\s*([0-9]+)")


def length_dist(text: str, flag: str) -> tuple:
    """``("fixed",)``, ``("uniform", lo, hi)`` or ``("exponential",)`` of a distribution's
    text (module docstring); a ConfigError naming ``flag`` otherwise."""
    if text in ("fixed", "exponential"):
        return (text,)
    hit = _UNIFORM.fullmatch(text) if isinstance(text, str) else None
    if hit and 1 <= int(hit[1]) <= int(hit[2]) <= 2**31:
        return ("uniform", int(hit[1]), int(hit[2]))
    raise ConfigError(flag, "", "fixed, exponential or uniform:lo,hi (1 <= lo <= hi)", text)


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """The requests and the engine's knobs of one ``tpsim serve`` run (module docstring);
    frozen, keyword-only, checked when made."""
    rate: float = setting(math.inf, "requests per second, Poisson arrivals (inf: every request "
                          "at once, the offline throughput benchmark; vLLM's benchmark "
                          "--request-rate)", flag="--rate",
                          kind="rate", lists=True)
    requests: int = setting(1000, "requests served (vLLM's benchmark --num-prompts)",
                            flag="--requests", kind="count")
    seed: int = setting(0, "seed of the arrivals and the lengths", flag="--seed", kind="count",
                        least=0)
    prompt_dist: str = setting("fixed", "prompt lengths: fixed, uniform:lo,hi or exponential "
                               "(mean --prompt)", flag="--prompt-dist", kind="name")
    gen_dist: str = setting("fixed", "generated lengths: fixed, uniform:lo,hi or exponential "
                            "(mean --gen)", flag="--gen-dist", kind="name")
    max_num_seqs: int = setting(256, "sequences an engine step holds at most (vLLM's "
                                "max_num_seqs)", flag="--max-num-seqs", kind="count",
                                lists=True)
    max_num_batched_tokens: int = setting(
        8192, "tokens an engine step computes at most, prefill chunks and decodes together "
        "(vLLM's max_num_batched_tokens)", flag="--max-num-batched-tokens", kind="tokens")
    block_size: int = setting(16, "tokens per KV-cache block (vLLM's block_size)",
                              flag="--block-size", kind="count")
    num_scheduler_steps: int = setting(
        1, "decode steps run per scheduling (vLLM V0's multi-step scheduling, "
        "--num-scheduler-steps): a waiting request is admitted only at the end of the run of "
        "this many decode steps in progress, and a run's or a prefill step's tokens stream "
        "with the next step (its asynchronous output processor: tpsim/serving/output_lag.py)",
        flag="--num-scheduler-steps", kind="count")
    separate_prefill: bool = setting(
        False, "a step that prefills runs no decodes: the running sequences wait while "
        "waiting requests prefill (vLLM V0 without chunked prefill, SGLang without "
        "--enable-mixed-chunk); off: prefill chunks join the decodes' step (vLLM V1)",
        flag="--separate-prefill", kind="flag")
    cuda_graph_align: int = setting(
        0, "a decode-only step replays the CUDA graph captured for the smallest size at least "
        "its sequences, among 1, 2, 4 and the multiples of this many sequences: its layers run "
        "at that size "
        "(vLLM V0's _BATCH_SIZES_TO_CAPTURE and SGLang 2024's capture list: 8); 0: no padding",
        flag="--cuda-graph-align", kind="count", least=0)
    cuda_graph_max_bs: int = setting(
        0, "the largest decode step captured in a CUDA graph, sequences: a decode-only step of "
        "more runs eagerly, unpadded, the host issuing each op at the topology's "
        "engine_dispatch_us (SGLang's cuda_graph_max_bs, 160 in 2024; vLLM V0's largest "
        "captured size, 256: tpsim/serving/step_model.py); 0: every decode step in a graph",
        flag="--cuda-graph-max-bs", kind="count", least=0)
    eager_prefill: bool = setting(
        False, "steps with prefill run without CUDA graphs, the host issuing each op of the "
        "forward at the topology's engine_dispatch_us (vLLM V0 and SGLang 2024 capture decode "
        "steps only: tpsim/serving/host.py); off: the host runs ahead of them",
        flag="--eager-prefill", kind="flag")
    host_step_us: float = setting(
        182.0, "the engine's host (CPU) time per step, us, whatever its sequences (fitted: "
        "bench/serve_published.py --fit-host: 181.8, on NVIDIA NIM 1.8.0's Llama 3.1 8B 200/200 "
        "ITLs at 25 and 100 users, with the front end's fits and the H100 decode attention's "
        "fixed time)", flag="--host-step-us", kind="price")
    host_seq_us: float = setting(
        14.6, "the engine's host (CPU) time per sequence in a step, us (fitted: 14.63, with "
        "--host-step-us)", flag="--host-seq-us", kind="price")
    host_overlap: bool = setting(
        False, "the host work of a step overlaps the next step's forward (TensorRT-LLM's "
        "overlap scheduler, SGLang's); off: it runs between steps, as vLLM's V1 engine "
        "does", flag="--host-overlap", kind="flag")
    frontend_token_us: float = setting(
        60.7, "the front end's (HTTP server's) time per streamed token, us: detokenizing it and "
        "sending it as a server-sent event (tpsim/serving/frontend.py; fitted: "
        "bench/serve_published.py --fit-host: 60.66, on NVIDIA NIM 1.8.0's Llama 3.1 8B 200/200 "
        "at 250 users, its throughput and ITL erring alike)",
        flag="--frontend-token-us", kind="price")
    frontend_request_us: float = setting(
        0.0, "the front end's time per request, us: parsing it, the chat template and "
        "tokenizing the prompt", flag="--frontend-request-us", kind="price")
    frontend_latency_us: float = setting(
        5254.0, "a request's time through the front end, us, from its sending to the engine "
        "seeing it (the HTTP request, the tokenizer, the hand-over to the engine): added to "
        "its TTFT (fitted: bench/serve_published.py --fit-host: 5253.5, on NVIDIA NIM 1.8.0's "
        "Llama 3.1 8B 200/200 TTFT at one user)", flag="--frontend-latency-us", kind="price")
    users: int | None = setting(
        None, "a closed loop of this many clients, each sending its next request when its last "
        "one ends (vLLM's benchmark --max-concurrency, genai-perf's --concurrency); the first "
        "all at once; with --rate inf (default: none, open-loop arrivals at --rate)",
        flag="--users", kind="count")
    api_servers: int = setting(1, "front-end processes sharing that work (vLLM's "
                               "--api-server-count)", flag="--api-servers", kind="count")
    admission: str = setting(
        "vllm", "which waiting request a step admits: vllm, while blocks are free for its first "
        "chunk, preempting when they run out; sglang-0.3, sglang-0.4: SGLang's PrefillAdder of "
        "v0.3.0 or v0.4.1, only if the tokens it will write fit beside the running requests' "
        "expected ones (tpsim/serving/admission.py)", flag="--admission", kind="choice",
        choices=ADMISSIONS)
    schedule_conservativeness: float = setting(
        1.0, "SGLang's --schedule-conservativeness: scales the share of the running requests' "
        "remaining tokens that --admission sglang-* reserves (1.0, SGLang's default)",
        flag="--schedule-conservativeness", kind="price")
    usd_per_gpu_hour: float | None = setting(
        None, "price of one GPU for an hour, USD: the run's cost = GPUs x duration / 3600 x "
        "this (default: none, no cost figures); it changes no time", flag="--usd-per-gpu-hour",
        kind="price")

    def __post_init__(self):
        check(self)
        if self.users is not None and not math.isinf(self.rate):
            raise ConfigError("--users", "", "--rate inf (a closed loop's clients send their "
                              "own requests)", self.rate)
        if self.admission == "vllm" and self.schedule_conservativeness != 1.0:
            raise ConfigError("--schedule-conservativeness", "", "--admission sglang-0.3 or "
                              "sglang-0.4 (vLLM's admission reserves nothing to scale)",
                              self.schedule_conservativeness)
        length_dist(self.prompt_dist, "--prompt-dist")
        length_dist(self.gen_dist, "--gen-dist")




def split_settings(layout, settings, given: dict,
                   drafts: bool = False) -> tuple[ServingLayout, ServeSettings]:
    """A serving run's two settings objects: given, or made from the keywords by field name.
    A layout that drafts (speculative decoding) is refused unless ``drafts`` (the engine loop
    of ``tpsim serve``), and there with pp > 1, multi-step scheduling or SGLang's admission
    (not modelled with a draft)."""
    names = {f.name for f in declared(ServeSettings)}
    serve_kw = {k: v for k, v in given.items() if k in names}
    lay_kw = {k: v for k, v in given.items() if k not in names}
    lay = given_or_made(ServingLayout, layout, lay_kw, "serve", "layout")
    st = given_or_made(ServeSettings, settings, serve_kw, "serve", "settings")
    k = lay.num_speculative_tokens
    if k and not drafts:
        raise ConfigError("--num-speculative-tokens", "", "0 here (speculative decoding is "
                          "priced by tpsim infer and tpsim serve only)", k)
    for flag, value, plain in (("--pp", lay.pp, 1), ("--num-scheduler-steps",
                               st.num_scheduler_steps, 1), ("--admission", st.admission, "vllm")):
        if k and value != plain:
            raise ConfigError(flag, "", f"{plain} with a speculative draft (not modelled)", value)
    return lay, st


__all__ = ["ServeSettings", "length_dist", "split_settings", "DISTS", "ADMISSIONS"]
