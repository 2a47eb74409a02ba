"""What ``tpsim.serve`` returns: a frozen dataclass tree (text and JSON: ``tpsim.report.serve``).

SI throughout (seconds, bytes); latencies are per request, throughputs over the run (first
arrival to last token).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .energy import Cost, Energy  # noqa: F401 - the result's energy and cost types


@dataclass(frozen=True)
class Percentiles:
    """mean, p50, p90 and p99 of one latency over the requests (numpy's linear percentiles)."""
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values) -> Percentiles:
        v = np.asarray(values, float)
        if v.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0)
        s = np.sort(v).tolist()
        return cls(float(v.mean()), *(linear_percentile(s, q) for q in PERCENTS))


PERCENTS = tuple(q / 100 for q in (50, 90, 99))     # as np.percentile divides them


def linear_percentile(s: list, q: float) -> float:
    """``np.percentile(v, 100 q)`` of the values ``s`` (sorted, NaN last), bit for bit, without
    its ``np.unique`` (whose ``np.ma`` check imports numpy.ma, ~11 ms a process): numpy's
    ``_quantile`` (numpy/lib/_function_base_impl.py, v2.x) at the virtual index i = (n - 1) q,
    j = floor(i), g = i - j (where i >= n - 1: j = -1 for both values, so g = i + 1), and
    ``_lerp`` of s[j], s[j + 1]:
    s[j] + d g, or s[j + 1] - d (1 - g) where g >= 0.5, d = s[j + 1] - s[j]; NaN where any
    value is NaN."""
    n = len(s)
    if s[-1] != s[-1]:
        return float("nan")
    i = (n - 1) * q
    if i >= n - 1:
        a = b = s[-1]
        g = i + 1
    else:
        j = math.floor(i)
        a, b, g = s[j], s[j + 1], i - j
    d = b - a
    return b - d * (1 - g) if g >= 0.5 else a + d * g


@dataclass(frozen=True)
class ServeInputs:
    """What was served: model, topology, split and dtypes, the requests."""
    model: str
    topology: str
    device: str
    tp: int
    pp: int
    ep: int
    dtype: str
    kv_dtype: str
    allreduce: str
    cuda_graphs: bool
    rate: float
    requests: int
    seed: int
    prompt: int
    gen: int
    prompt_dist: str
    gen_dist: str
    prompt_tokens: int
    output_tokens: int
    users: int | None = None
    eager_prefill: bool = False   # prefill steps without CUDA graphs (--eager-prefill)
    admission: str = "vllm"      # which waiting request a step admits (--admission)
    speculative: str | None = None        # the draft head (mtp, eagle), None for none
    draft_model: str | None = None        # the separate draft model's name
    num_speculative_tokens: int = 0       # k, tokens drafted per step (0: no speculation)
    acceptance_rate: float | None = None  # a, per drafted token (None without a draft)
    decode_attention: str = "tensor-cores"  # the decode kernel (--decode-attention)
    nccl: str = "topology"                # the NCCL release priced (tpsim.cluster.nccl)


@dataclass(frozen=True)
class EngineConfig:
    """The engine's knobs as vLLM names them and the paged KV cache they leave:
    ``gpu_memory_utilization`` = usable / capacity (Device.usable_bytes); ``num_gpu_blocks`` =
    floor((usable - weights - activations) / (block_size x kv_bytes_per_token));
    ``memory_headroom`` the share of (memory - reserve) kept free (the layout's, else the
    engine's: :mod:`tpsim.serving.engine_memory`), ``memory_rule`` which, in words."""
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    gpu_memory_utilization: float
    num_gpu_blocks: int
    kv_cache_tokens: int
    kv_bytes_per_token: float
    weights_bytes: float
    activations_bytes: float
    kv_cache_bytes: float
    memory_headroom: float
    memory_rule: str


@dataclass(frozen=True)
class Throughput:
    """Over the run, duration_s = the last token's time - the first arrival's."""
    output_tokens_per_s: float
    input_tokens_per_s: float
    requests_per_s: float
    duration_s: float


@dataclass(frozen=True)
class Latency:
    """Per request: TTFT = first token - arrival; TPOT = (e2e - TTFT) / (gen - 1) over the
    requests with gen > 1; e2e = last token - arrival. Per streamed chunk: ITL = the gap to
    the request's chunk before, all requests' gaps pooled (:mod:`tpsim.serving.gaps`)."""
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    itl_s: Percentiles


@dataclass(frozen=True)
class Scheduler:
    """What the engine loop did: ``steps`` engine steps (``prefill_steps`` of them with a
    prefill chunk), ``preemptions`` (a sequence's blocks freed, its tokens recomputed later),
    ``mean_running``: the mean sequences per step; ``step_prices``: the layer simulations
    the step-time tables priced (the points the run's steps read, and those of the runs before
    it where they shared the tables: :attr:`tpsim.serving.step_model.StepModel.prices`); ``host_wait_s``: the GPU waiting for the engine's host work,
    sum over steps of t_engine - t_gpu (:func:`tpsim.serving.host.step_wall_s`);
    ``frontend_wait_s``: the engine waiting for the front end, sum over steps of wall -
    t_engine (:func:`tpsim.serving.frontend.paced_wall_s`)."""
    steps: int
    prefill_steps: int
    preemptions: int
    mean_running: float
    step_prices: int
    host_wait_s: float
    frontend_wait_s: float = 0.0


@dataclass(frozen=True)
class ServePrediction:
    """The whole answer of ``tpsim.serve``."""
    inputs: ServeInputs
    engine: EngineConfig
    throughput: Throughput
    latency: Latency
    scheduler: Scheduler
    ttft: np.ndarray
    e2e: np.ndarray
    generated: np.ndarray
    energy: Energy | None = None
    cost: Cost | None = None
