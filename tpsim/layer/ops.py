"""The ops of a transformer step as typed values: what one kernel or one collective is.

Each op is a frozen dataclass that knows its own conventional FLOP count and the bytes it moves
(device memory for kernels, nccl-tests' size for collectives), and nothing about time: pricing
is :mod:`tpsim.sim.price`, which hands each kind to its cost function. ``kind`` names the kind in
tables and JSON; ``stream`` is the GPU stream it runs on.

Counts, per op (bytes_per_element = bpe of the op's dtype):

``flops`` are the FLOPs the model needs (MFU's numerator); a kernel may execute more (a causal
attention kernel computes whole diagonal tiles, an unfused one the masked half of the scores),
which pricing accounts for, so that MFU never exceeds 1.

* :class:`Gemm` ``(m x k) @ (k x n)``, ``batch`` of them in one kernel: 2mnk FLOPs each
  (Narayanan et al. 2021), of which a causal attention product (``causal`` = its key length L)
  needs the (L + 1) / (2 L) on or below the diagonal; bytes :func:`tpsim.cost.compute.gemm_bytes`.
* :class:`Attention`: the attention core of ``heads`` query heads (QK^T, softmax, AV) over
  ``seq_q`` queries and ``seq_kv`` keys: 4 b heads head_dim P FLOPs forward, twice that
  backward, with P the (query, key) pairs: seq_q seq_kv, or causally seq_q seq_kv -
  seq_q (seq_q - 1) / 2 (the queries are the last seq_q of the keys: s (s + 1) / 2 for
  seq_q = seq_kv = s; Narayanan et al. count the full square, 2x this); a fused (flash)
  kernel's bytes: forward reads q, k, v and writes o, b (2 seq_q q + 2 seq_kv kv) bpe; backward
  reads q, k, v, o, do and writes dq, dk, dv, b (4 seq_q q + 4 seq_kv kv) bpe.
* :class:`MemoryBound`: a kernel priced by the ``nbytes`` it reads and writes (norms,
  activations, dropout, residual adds, softmax, embedding lookups).
* :class:`Collective`: an NCCL collective on the process group named ``group``; ``nbytes`` as
  nccl-tests counts it (the all-reduce buffer, the full all-gather output, the full
  reduce-scatter input).
* :class:`SendRecv`: a point-to-point transfer of ``nbytes`` between two ranks of ``group``.
* :class:`Dispatch`: a MoE dispatch or combine of ``tokens`` rows of ``token_bytes`` on the EP
  group by the flex dispatcher's kernels (DeepEP, HybridEP); ``nbytes`` = tokens x token_bytes,
  what the rank hands the kernel (each token once, wherever its experts are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Union

from ..cost.compute import gemm_bytes
from ..cluster.topology import BYTES_PER_ELEMENT


@dataclass(frozen=True)
class Gemm:
    """(m x k) @ (k x n), ``batch`` times in one strided-batched kernel; ``accumulate``: the
    product is added into an fp32 output (a weight gradient into Megatron's main_grad);
    ``causal``: the key length of an unfused causal attention product (0: none); ``streams``:
    the ``batch`` GEMMs run as separate kernels over that many streams (a grouped GEMM,
    :func:`tpsim.cost.compute.grouped_gemm_time`; 0: one batched kernel)."""
    m: int
    n: int
    k: int
    dtype: str
    batch: int = 1
    accumulate: bool = False
    causal: int = 0
    streams: int = 0
    kind: ClassVar[str] = "gemm"
    stream: ClassVar[str] = "compute"

    @property
    def executed_flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.batch

    @property
    def flops(self) -> float:
        full = self.executed_flops
        return full * (self.causal + 1) / (2 * self.causal) if self.causal else full

    @property
    def bytes(self) -> float:
        return gemm_bytes(self.m, self.n, self.k, self.dtype, self.batch, self.accumulate)

    comm_bytes: ClassVar[float] = 0.0

    @property
    def shape(self) -> str:
        return (f"{self.m}x{self.k} @ {self.k}x{self.n}" + (f" x{self.batch}" if self.batch > 1 else "")
                + (f" on {self.streams} streams" if self.streams else "")
                + (" +=fp32" if self.accumulate else ""))


@dataclass(frozen=True)
class Attention:
    """The attention core on one rank: ``heads`` query and ``kv_heads`` key/value heads, as one
    fused kernel (``kernel``: a name in the device's attention_kernels; None: its default)."""
    b: int
    heads: int
    kv_heads: int
    seq_q: int
    seq_kv: int
    head_dim: int
    dtype: str
    causal: bool = True
    backward: bool = False
    kernel: str | None = None
    window: int = 0       # sliding-window attention: each query sees its last ``window`` keys
    windowed: float = 1.0  # share of the layers it stands for that use the window (the rest: full)
    dropout: bool = False  # attention dropout inside the kernel (tpsim.cost.attention_dropout)
    kind: ClassVar[str] = "attention"
    stream: ClassVar[str] = "compute"
    comm_bytes: ClassVar[float] = 0.0

    @property
    def pairs(self) -> float:
        """(query, key) pairs the model needs per sequence and head; with a causal ``window``
        W the query at position p (the last seq_q of seq_kv) sees min(p, W) keys:
        sum_{p=a..b} min(p, W), a = seq_kv - seq_q + 1, b = seq_kv; on the ``windowed`` share
        u of the layers the op stands for, full causal on the rest:
        (1 - u) pairs(full) + u pairs(W)."""
        if not self.window:
            return self._pairs(0)
        u = self.windowed
        return (1 - u) * self._pairs(0) + u * self._pairs(self.window)

    @property
    def keys(self) -> int:
        """Keys one query's kernel loop streams: seq_kv, at most the window (priced at it:
        :func:`tpsim.sim.price.kernel_time`)."""
        return min(self.seq_kv, self.window) if self.window else self.seq_kv

    def _pairs(self, w: int) -> float:
        sq, skv = self.seq_q, self.seq_kv
        if not self.causal:
            return float(sq * skv)
        if not w or skv <= w:
            return sq * skv - sq * (sq - 1) / 2
        a = skv - sq + 1
        return float(sq * w) if a >= w else (a + w) * (w - a + 1) / 2 + (skv - w) * w

    @property
    def flops(self) -> float:
        fwd = 4.0 * self.b * self.heads * self.head_dim * self.pairs
        return 2 * fwd if self.backward else fwd

    @property
    def full_flops(self) -> float:
        """The FLOPs of every (query, key) pair, masked or not (what an unmasked kernel runs)."""
        fwd = 4.0 * self.b * self.heads * self.head_dim * self.seq_q * self.seq_kv
        return 2 * fwd if self.backward else fwd

    @property
    def bytes(self) -> float:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per = 4 if self.backward else 2
        return self.b * per * (self.seq_q * q + self.seq_kv * kv) * BYTES_PER_ELEMENT[self.dtype]

    @property
    def shape(self) -> str:
        s = f"s={self.seq_q}" if self.seq_q == self.seq_kv else f"sq={self.seq_q} skv={self.seq_kv}"
        return (f"b={self.b} heads={self.heads} kv={self.kv_heads} {s} d={self.head_dim}"
                + (" causal" if self.causal else "") + (f" window={self.window}"
                                                         if self.window else "")
                + (f" on {self.windowed:.0%} of layers" if self.window and self.windowed < 1
                   else "") + (" dropout" if self.dropout else ""))


@dataclass(frozen=True)
class MemoryBound:
    """A kernel that streams ``nbytes`` through device memory; ``dims`` label it and count its
    elements; ``arith`` names its per-element arithmetic (``softmax``, ``gelu_backward``...:
    a device may price it, :func:`tpsim.cost.compute.elementwise_time`); "" for none;
    ``kernels``: the kernels its call runs back to back over those bytes (Transformer Engine's
    quantize of a grouped GEMM's experts, split by split: :func:`tpsim.layer.linears.fp8_cast`),
    each with its own launch."""
    nbytes: float
    dims: tuple[int, ...] = ()
    arith: str = ""
    kernels: int = 1
    kind: ClassVar[str] = "elementwise"
    stream: ClassVar[str] = "compute"
    flops: ClassVar[float] = 0.0
    comm_bytes: ClassVar[float] = 0.0

    @property
    def bytes(self) -> float:
        return float(self.nbytes)

    @property
    def elements(self) -> float:
        return float(math.prod(self.dims))

    @property
    def shape(self) -> str:
        return "x".join(map(str, self.dims))


@dataclass(frozen=True)
class CastTranspose(MemoryBound):
    """An fp8 cast that also writes the transposed copy (Transformer Engine's cast-transpose
    on Hopper), at its own memory efficiency (:func:`tpsim.cost.compute.cast_transpose_time`)."""


@dataclass(frozen=True)
class StochasticCast(MemoryBound):
    """A block-scaled cast that rounds stochastically (NVFP4's output gradients), at its own
    rate (:func:`tpsim.cost.compute.stochastic_cast_time`)."""


@dataclass(frozen=True)
class DecodeAttention(MemoryBound):
    """Decode attention: one query per sequence against the KV cache, a memory-bound kernel
    with a fixed part (:func:`tpsim.cost.compute.decode_attention_time`);
    ``cuda_core_group`` g > 0: run on FlashInfer's CUDA-core kernel, g query heads per KV
    head, which its cores may bound instead; ``l2_bytes`` > 0: TensorRT-LLM's masked
    multi-head attention, which requests the KV bytes from L2 once per query head, and
    spends ``instructions`` on its CUDA cores, by pipe (:func:`tpsim.cost.mmha.mmha_instructions`)."""
    cuda_core_group: int = 0
    l2_bytes: float = 0.0
    instructions: tuple[float, ...] = ()


def cast_op(dtype: str, stochastic: bool = False) -> type:
    """The op of a cast into a linear's quantized ``dtype``: fp8's writes a transposed copy
    (:class:`CastTranspose`); MXFP8's and NVFP4's block-scaled copies are row-wise and
    column-wise, no transpose (:class:`MemoryBound`); ``stochastic``: the quantizer rounds
    the cast stochastically (:class:`StochasticCast`)."""
    if stochastic:
        return StochasticCast
    return CastTranspose if dtype == "fp8" else MemoryBound


class _Transfer:
    """What a communication op (``nbytes`` on the wire, ``dims`` and ``dtype`` as labels) has
    in common: no FLOPs, no device-memory bytes, the comm stream."""
    stream: ClassVar[str] = "comm"
    flops: ClassVar[float] = 0.0
    bytes: ClassVar[float] = 0.0

    @property
    def comm_bytes(self) -> float:
        return float(self.nbytes)

    @property
    def shape(self) -> str:
        return " ".join(filter(None, ("x".join(map(str, self.dims)), self.dtype)))


@dataclass(frozen=True)
class Collective(_Transfer):
    """``op`` (all-reduce, all-gather, reduce-scatter, broadcast) of ``nbytes`` on ``group``;
    ``sms``: the SMs its kernel holds beside a GEMM launched with them as a margin (Transformer
    Engine's pipelined reduce-scatter, :mod:`tpsim.sim.interference`); 0: NCCL's."""
    op: str
    nbytes: float
    group: str
    dims: tuple[int, ...] = ()
    dtype: str = ""
    sms: int = 0
    kind: ClassVar[str] = "collective"


@dataclass(frozen=True)
class SendRecv(_Transfer):
    """A point-to-point transfer of ``nbytes`` from member ``src`` of ``group`` to the next
    (``src`` -1: a ring's wrap, from its last member to its first)."""
    nbytes: float
    group: str
    src: int = 0
    dims: tuple[int, ...] = ()
    dtype: str = ""
    kind: ClassVar[str] = "p2p"
    op: ClassVar[str] = "send-recv"


@dataclass(frozen=True)
class Dispatch(_Transfer):
    """The flex dispatcher's dispatch (or combine: the same rows the other way) of ``tokens``
    rows of ``token_bytes`` on ``group``, each token to its ``top_k`` of ``experts`` experts,
    by ``backend``'s kernels (deepep, hybridep); ``probs``: each row carries its routing
    probabilities too (HybridEP's forward dispatch and that dispatch's backward); ``routing``:
    which experts a token takes (:func:`tpsim.cost.all_to_all.flex_dispatch_time`)."""
    tokens: float
    token_bytes: float
    experts: int
    top_k: int
    group: str
    backend: str = "deepep"
    dims: tuple[int, ...] = ()
    dtype: str = ""
    probs: bool = False
    routing: str = "uniform"
    kind: ClassVar[str] = "collective"
    op: ClassVar[str] = "all-to-all"

    @property
    def nbytes(self) -> float:
        return self.tokens * self.token_bytes


def act_arith(n_in: int, backward: bool = False):
    """An MLP's activation arithmetic as a :class:`MemoryBound`'s ``arith`` (per dims):
    ``gelu`` on one input (``n_in`` 1), ``swiglu`` on gate and up (``n_in`` 2), ``_backward``
    for its gradient; priced where the device lists its cost (a CPU's
    ``elementwise_ns_per_element``, :func:`tpsim.cost.compute.elementwise_time`), else 0. The
    dense MLP's and the experts' alike."""
    kind = ("swiglu" if n_in == 2 else "gelu") + ("_backward" if backward else "")
    return lambda d: kind


Op = Union[Gemm, Attention, MemoryBound, Collective, SendRecv, Dispatch]
