"""What ``tpsim.infer`` returns: a frozen dataclass tree (text and JSON: ``tpsim.report.render``).

SI throughout (seconds, bytes, FLOP); every JSON key carries its unit as a suffix. Times are
per GPU of the job (every GPU of a TP group runs the same ops in lock-step). The output names
the function behind each section (``formula``, :mod:`tpsim.report.formulas`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..sim.result import Notice
from .energy import Cost, Energy

BOUNDS = ("HBM", "FLOPs", "collectives", "kernel launches", "host dispatch")


@dataclass(frozen=True)
class PhaseCost:
    """One pass of the model (a prefill, or one decode step) on one GPU, and what bounds it.

    time_s = hbm_s + flops_s + launch_s + comm_s + host_s: the compute ops' time beyond their
    launch, split by which roofline term set it (``hbm_s``: memory-bound, ``flops_s``:
    compute-bound), their fixed launch cost and the decode attention's fixed part
    (``launch_s``), the collectives and p2p transfers
    the compute stream waits for plus the slowdown of compute beside them (``comm_s``), and
    the time the GPU waits for the host to issue ops (``host_s``, eager mode only).
    ``flops``: conventional FLOPs (the decode attention's included); ``hbm_bytes``: device
    memory traffic; ``comm_bytes``: collective sizes as nccl-tests counts them; ``ops``:
    kernels and collectives issued. ``bound``: the largest of the five terms.
    """
    time_s: float
    hbm_s: float
    flops_s: float
    launch_s: float
    comm_s: float
    host_s: float
    flops: float
    hbm_bytes: float
    comm_bytes: float
    ops: float

    @property
    def bound(self) -> str:
        terms = (self.hbm_s, self.flops_s, self.comm_s, self.launch_s, self.host_s)
        return BOUNDS[max(range(len(terms)), key=terms.__getitem__)]

    def scaled(self, k: float) -> PhaseCost:
        return PhaseCost(*(k * getattr(self, f) for f in PHASE_FIELDS))

    def __add__(self, other: PhaseCost) -> PhaseCost:
        return PhaseCost(*(getattr(self, f) + getattr(other, f) for f in PHASE_FIELDS))


PHASE_FIELDS = tuple(PhaseCost.__dataclass_fields__)


@dataclass(frozen=True)
class Prefill:
    """The prompt pass: ``time_s`` is the time to first token (TTFT) of the batch;
    ``tokens_per_s`` = batch x prompt / time_s; ``cost``: its breakdown."""
    time_s: float
    tokens_per_s: float
    cost: PhaseCost
    mfu: float            # cost.flops / time_s / peak[dtype]


@dataclass(frozen=True)
class Decode:
    """The generation steps after the first token: ``steps`` = gen - 1, step k feeding one
    token per sequence against kv_len = prompt + k cached tokens. ``time_per_token_s``: the
    mean step time over those steps (TPOT, inter-token latency); ``tokens_per_s`` = batch /
    time_per_token_s (all sequences). ``first_step_s``/``last_step_s`` at the shortest and
    longest cache; ``cost``: the step at the mean cache length (``kv_len``, rounded). With
    speculative decoding a step is a speculative one (draft and verification) and the time
    per token its mean over the cache lengths / the tokens it emits
    (:func:`tpsim.serving.speculative.speculative_steps`).
    ``hbm_bandwidth_Bps``: cost.hbm_bytes / cost.time_s, what the step draws from HBM, of the
    device's peak ``hbm_peak_Bps``."""
    steps: int
    time_per_token_s: float
    tokens_per_s: float
    first_step_s: float
    last_step_s: float
    kv_len: int
    cost: PhaseCost
    hbm_bandwidth_Bps: float
    hbm_peak_Bps: float
    integration: str      # how the mean was taken (see tpsim.serving.infer.mean_over_lengths)


@dataclass(frozen=True)
class Speculative:
    """One speculative configuration's decode (:mod:`tpsim.serving.speculative`): ``method`` mtp | eagle |
    draft; ``tokens_per_step`` E; ``step_s`` the mean step over the cache lengths, of which
    ``draft_s`` the k draft steps and ``verify_s`` the target's verification (both at the mean
    cache length); ``draft_share`` = draft_s / (draft_s + verify_s); ``time_per_token_s`` =
    step_s / E; ``tokens_per_s`` = batch / time_per_token_s; ``speedup``: plain decode's
    time per token over this one's."""
    method: str
    draft_model: str | None
    num_speculative_tokens: int
    acceptance_rate: float
    tokens_per_step: float
    step_s: float
    draft_s: float
    verify_s: float
    draft_share: float
    time_per_token_s: float
    tokens_per_s: float
    speedup: float


@dataclass(frozen=True)
class Total:
    """One batch from prompt to its last token: time_s = prefill + steps x time_per_token;
    ``tokens_per_s`` = batch x gen / time_s (output tokens, static batching)."""
    time_s: float
    tokens_per_s: float


@dataclass(frozen=True)
class InferMemory:
    """Bytes per GPU. ``kv_cache_bytes`` = batch x (prompt + gen - 1) x ``kv_bytes_per_token``
    (2 x layers x kv_heads_per_rank x head_dim x bpe_kv); ``activations_bytes``: the prefill's
    largest live activations; ``capacity_bytes``: the device's memory as the CUDA runtime
    exposes it; ``reserved_bytes``: what the tensors cannot have of it (CUDA context, NCCL
    buffers, headroom, the allocator's waste on the activations); ``fits``: total <= capacity - reserved; ``max_batch``:
    the largest batch that fits at this prompt and gen (0: not even the weights fit)."""
    weights_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float
    activations_bytes: float
    total_bytes: float
    capacity_bytes: float
    reserved_bytes: float
    fits: bool
    max_batch: int


@dataclass(frozen=True)
class InferInputs:
    model: str
    topology: str
    device: str
    tp: int
    pp: int
    batch: int
    prompt: int
    gen: int
    dtype: str            # the GEMMs' and weights'
    act_dtype: str        # activations between kernels, collectives, attention
    kv_dtype: str
    allreduce: str        # nccl | custom
    cuda_graphs: bool     # False: --eager, the host dispatches every op
    heads_per_rank: int
    kv_heads_per_rank: int
    nodes: int
    ep: int = 1           # expert-parallel degree: ep attention replicas of tp GPUs
    speculative: str | None = None        # mtp | eagle: a draft head (None: none)
    draft_model: str | None = None        # a separate draft model's name
    num_speculative_tokens: int = 0       # k, tokens drafted per step (0: no speculation)
    acceptance_rate: float | None = None  # per drafted token (the mtp default filled in)
    decode_attention: str = "tensor-cores"  # the decode kernel (--decode-attention)
    memory_headroom: float = 0.0          # share of (memory - reserve) kept free
    memory_rule: str = ""                 # whose: --memory-headroom, else vLLM's default
    nccl: str = "topology"                # the NCCL release priced (tpsim.cluster.nccl)


@dataclass(frozen=True)
class InferPrediction:
    """What :func:`tpsim.serving.infer.infer` returns. ``prefill_ops``/``decode_ops``: one row per op
    of one layer (:class:`~tpsim.sim.result.OpRow`), the decode layer at the mean cache length;
    ``prefill_collectives``/``decode_collectives``: that layer's collectives grouped
    (:class:`~tpsim.sim.result.CollectiveRow`); read from the simulations (``runs``) on first use.
    ``energy``, ``cost``: the batch's, from prompt to last token
    (:func:`tpsim.serving.energy.run_energy`: the prefill at full activity, the decode steps
    memory-bound)."""
    inputs: InferInputs
    prefill: Prefill
    decode: Decode
    total: Total
    memory: InferMemory
    warnings: tuple[Notice, ...] = ()
    runs: dict = field(default_factory=dict, compare=False, repr=False)
    energy: Energy | None = None
    cost: Cost | None = None
    speculative: Speculative | None = None    # with a draft: the speculative decode's parts

    @cached_property
    def prefill_ops(self):
        return self.runs["prefill"].op_rows()

    @cached_property
    def decode_ops(self):
        return self.runs["decode"].op_rows()

    @cached_property
    def prefill_collectives(self):
        return self.runs["prefill"].collective_rows()

    @cached_property
    def decode_collectives(self):
        return self.runs["decode"].collective_rows()
