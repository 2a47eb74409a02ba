"""Megatron's tensor-parallel linear layers as ops: column- and row-parallel, forward and
backward, with their collectives.

Column-parallel (``Y = XA, A = [A_1 ... A_t]``): the input is whole on every rank (with sequence
parallelism, all-gathered along the sequence first); backward, the input gradient's partial sums
are all-reduced (SP: reduce-scattered) while the weight-gradient GEMM runs. Row-parallel
(``Y = sum_i X_i B_i``): the output's partial sums are all-reduced (SP: reduce-scattered);
backward, with SP the output gradient is all-gathered first. Issue order is Megatron-core's
(LinearWithGradAccumulationAndAsyncCommunication): dgrad, then the async collective, then wgrad,
which accumulates into the fp32 main gradient. Under FP8 (Transformer Engine) the 16-bit inputs
and output gradients are cast to fp8 first (:func:`fp8_cast`) and the GEMMs run in fp8.

Megatron-LM of 2021 (``mpu/layers.py`` before its September 2021 async all-reduce and February
2022 gradient accumulation fusion) ran the backward as PyTorch autograd orders ``F.linear``'s:
dgrad and wgrad in one node, then the TP all-reduce of the input gradient (the backward of
``copy_to_tensor_model_parallel_region``), synchronous, after wgrad (``B.async_dgrad`` False);
and each wgrad GEMM writes a new 16-bit gradient that AccumulateGrad adds into the parameter's
``.grad`` (:func:`grad_accumulate`, ``B.grad_fusion`` False).
"""
from __future__ import annotations

from .dims import Dims, sp_reduce_op
from .ops import SendRecv, cast_op
from .template import Builder
from ..cluster.topology import BYTES_PER_ELEMENT
from ..cost.compute import FP32_ACCUMULATE_BYTES
from ..cost.interference import UB_PIPELINE_SMS
from ..spec.precision import (AMAX_REDUCED_BYTES, NORM_AMAX, NORM_QUANTIZES, STOCHASTIC_ROUNDING,
                              amax_pass_bytes, cast_write_bytes, quantize_launches)


RS_SPLITS = 4    # Transformer Engine's default num_splits for its pipelined reduce-scatter


def column_linear_fwd(B: Builder, linear: str, x, size, saved) -> str:
    """A column-parallel linear forward, ``size(d)`` -> (m, n, k): with SP its input is
    all-gathered along the sequence first (synchronous, exposed; in fp8 under FP8 training, as
    Transformer Engine gathers the cast input); with TP communication overlap
    (:func:`_ring_exchange`) the gather is interleaved with the GEMM instead. Its input is the
    norm's output, cast first where the norm does not quantize it (:func:`norm_cast`)."""
    x = norm_cast(B, linear, x, size, gathered=B.sp)
    if B.tp_overlap:
        return _ring_exchange(B, f"fwd.{linear}", size, (x,), saved, linear=True)
    if B.sp:
        x = B.collective(f"fwd.{linear}.all-gather", "all-gather", (x,), size=gathered_input)
    return B.gemm(f"fwd.{linear}", size, (x,), saved=saved, linear=True)


def row_linear_fwd(B: Builder, linear: str, x, size, saved) -> str:
    """A row-parallel linear forward, ``size(d)`` -> (m, n, k): (FP8: its input cast) the GEMM,
    then the all-reduce (SP: reduce-scatter) of its partial sums; with TP communication overlap
    the GEMM runs in RS_SPLITS row chunks, each chunk's reduce-scatter beside the next chunk's
    GEMM, the last one exposed (Transformer Engine's pipelined split_overlap_rs), its kernel on
    UB_PIPELINE_SMS SMs the GEMMs leave as a margin (:mod:`tpsim.cost.interference`)."""
    x = fp8_cast(B, f"fwd.{linear}.cast", lambda d: (size(d)[0], size(d)[2]), x)
    op = sp_reduce_op(B.sp)
    if not B.tp_overlap:
        x = B.gemm(f"fwd.{linear}", size, (x,), saved=saved, linear=True)
        return B.collective(f"fwd.{linear}.{op}", op, (x,))
    for i in range(RS_SPLITS):
        last = i == RS_SPLITS - 1
        part = "" if last else f".chunk{i}"
        g = B.gemm(f"fwd.{linear}{part}", _rows(size, RS_SPLITS, i), (x,),
                   saved=saved if last else None, linear=True, host_ops=int(last))
        rs = B.collective(f"fwd.{linear}.{op}{part}", op, (g,),
                          size=_chunk_of_output(RS_SPLITS, i), host_ops=0, sms=UB_PIPELINE_SMS)
    return rs


def chunk_rows(m: int, chunks: int, i: int) -> int:
    """Rows of chunk ``i`` of ``m`` rows split in ``chunks``: the first m mod chunks chunks
    take ceil(m / chunks), the others floor(m / chunks); together all m rows."""
    return m // chunks + (i < m % chunks)


def _rows(size, chunks: int, i: int):
    """``size`` with only chunk ``i`` of its m split in ``chunks`` (:func:`chunk_rows`)."""
    def chunk(d):
        m, *rest = size(d)
        return (chunk_rows(m, chunks, i), *rest)
    return chunk


def _chunk_of_output(chunks: int, i: int):
    """Chunk ``i`` of the (b*s, h) partial sums a row-parallel linear reduces
    (:func:`chunk_rows` of b*s)."""
    def size(d):
        rows = chunk_rows(d.T, chunks, i)
        return rows * d.h * d.bpe, (rows, d.h), d.dtype
    return size


def _ring_exchange(B: Builder, name: str, size, deps, saved=None, linear=True) -> str:
    """A GEMM on a sequence-parallel operand gathered by ring exchange (Transformer Engine's
    split_overlap_ag with TP communication overlap): the GEMM runs in tp row chunks; chunk 0 is
    this rank's own shard, chunk i waits for the i-th shard passed along the ring, a
    point-to-point copy of b*s/tp x h elements on the copy engines (stream ``copy``, no SMs)
    while the previous chunk computes. The last chunk carries ``name``."""
    tp = B.tp
    prev = deps
    for i in range(tp):
        if i:
            prev = (B.add(f"{name}.p2p{i}", _shard_copy, "copy", deps, group="tp", host_ops=0),)
        last = i == tp - 1
        g = B.gemm(name if last else f"{name}.chunk{i}", _rows(size, tp, i), prev,
                   saved=saved if last else None, linear=linear, host_ops=int(last))
    return g


def _shard_copy(d: Dims) -> SendRecv:
    """One sequence shard of a gathered operand, rank to rank inside the TP group."""
    return SendRecv(d.Tn * d.h * BYTES_PER_ELEMENT[d.gemm_dtype], "tp", 0, (d.Tn, d.h),
                    d.gemm_dtype)


def gathered_input(d: Dims):
    """A column-parallel linear's gathered (b*s, h) input, or a row-parallel one's gathered
    output gradient, in the linears' GEMM dtype."""
    return d.T * d.h * BYTES_PER_ELEMENT[d.gemm_dtype], (d.T, d.h), d.gemm_dtype


def fp8_cast(B: Builder, name: str, shape, dep, splits=None, amax_fused=False,
             grad=False, gathered=False) -> str:
    """Under FP8 training (Transformer Engine), a linear's 16-bit input or output gradient is
    cast to fp8 in one fused cast-transpose kernel (:func:`~tpsim.layer.ops.cast_op`): read
    rows x cols in 16 bits, write the fp8 copy and its transpose (the weight gradient's
    operand), 1 + 1 bytes; MXFP8 and NVFP4 write row-wise and column-wise block-scaled
    copies (:func:`tpsim.spec.precision.cast_write_bytes`). Current scaling and NVFP4 first
    read the input once more for its amax, unless the kernel before found it (``amax_fused``):
    a memory-bound reduction kernel of its own, ``{name}.amax``
    (:func:`tpsim.spec.precision.amax_pass_bytes`), launched from C++ with the cast. Without
    FP8 nothing is added. ``splits``: the tensors one call quantizes from C++ (a grouped
    GEMM's, one per expert), whose kernels it launches
    (:func:`tpsim.spec.precision.quantize_launches`, one amax kernel per split of them;
    :class:`~tpsim.layer.template.Node`) and the GPU runs one after the other, each with its
    launch (:attr:`~tpsim.layer.ops.MemoryBound.kernels`: current scaling's 3 E_l, amax,
    scale and cast per expert, ``Float8CurrentScalingQuantizer::quantize_impl`` called split
    by split by ``split_quantize``, transformer_engine/pytorch/csrc/extensions/cast.cpp).
    ``grad``: an output gradient, rounded stochastically by the quantizers of
    :data:`tpsim.spec.precision.STOCHASTIC_ROUNDING` (:class:`~tpsim.layer.ops.StochasticCast`).
    ``gathered``: a sequence-parallel shard the TP group all-gathers after its cast, whose amax
    is all-reduced first (:func:`amax_reduce`)."""
    if not B.fp8:
        return dep
    own_amax = amax_pass_bytes(B.fp8, amax_fused) > 0
    if own_amax:
        def amax(d):
            rows, cols = shape(d)
            return rows, cols, rows * cols * amax_pass_bytes(d.quantizer)
        dep = B.eltwise(f"{name}.amax", amax, (dep,), launches=splits, host_ops=0,
                        kernels=splits)
    if gathered:
        dep = amax_reduce(B, name, dep)
    def size(d):
        rows, cols = shape(d)
        return rows, cols, rows * cols * (d.bpe + cast_write_bytes(d.quantizer))
    launches = None
    if splits:     # the amax kernels counted on their own node
        launches = lambda d: quantize_launches(d.quantizer, splits(d)) - own_amax * splits(d)
    def kind(d):
        return cast_op(d.linear_dtype, grad and d.quantizer in STOCHASTIC_ROUNDING)
    return B.eltwise(name, size, (dep,), kind=kind, launches=launches, kernels=launches)


def amax_reduce(B: Builder, name: str, dep) -> str:
    """The all-reduce (MAX) over the TP group of the amax a sequence-parallel operand's cast
    scales by, for the quantizers of :data:`tpsim.spec.precision.AMAX_REDUCED_BYTES` (current
    scaling, NVFP4; none for the others): every rank gathers the others' quantized shards and
    needs their common scale. Transformer Engine's quantizer issues it from C++ between the
    amax and the cast and makes the compute stream wait for it, so the cast depends on it:

        t = collective_time("all-reduce", AMAX_REDUCED_BYTES(q), tp)     (latency-bound)

    priced by :func:`tpsim.cost.collectives.collective_time` (the comm stream), and its host
    call as one launch (no Python dispatch: ``host_ops`` 0, ``launches`` 1)."""
    nbytes = AMAX_REDUCED_BYTES.get(B.fp8, 0)
    if not nbytes:
        return dep
    return B.collective(f"{name}.amax-all-reduce", "all-reduce", (dep,), host_ops=0,
                        size=lambda d: (nbytes, (nbytes // 4,), "fp32"),
                        launches=lambda d: 1)


def norm_cast(B: Builder, linear: str, x, size, gathered=False) -> str:
    """A column-parallel linear's input, the norm's output, under a quantizer whose norm does
    not write it quantized (all but delayed fp8's fused norm,
    :data:`tpsim.spec.precision.NORM_QUANTIZES`): the norm writes 16 bits (and the amax, for
    :data:`tpsim.spec.precision.NORM_AMAX`'s quantizers; NVFP4's, whose transformed copy
    needs the amax after the Hadamard transform, read it in a pass of their own), and a cast
    of the Tn x k tokens this rank normed follows, before any SP all-gather (Transformer
    Engine's LayerNormLinear gathers the quantized tensor; ``gathered``: it does, the amax
    all-reduced first, :func:`amax_reduce`)."""
    if not B.fp8 or B.fp8 in NORM_QUANTIZES:
        return x
    return fp8_cast(B, f"fwd.{linear}.cast", lambda d: (d.Tn, size(d)[2]), x,
                    amax_fused=B.fp8 in NORM_AMAX, gathered=gathered)


def input_saved(d: Dims) -> float:
    """What a column-parallel linear keeps of its input for the weight gradient: the (b*s, h)
    input, or with SP only the local b*s/tp shard (Megatron-core re-gathers it in backward), in
    the GEMM's dtype: under FP8 the norm's fp8 output, 1 byte (Transformer Engine's
    LayerNormLinear saves ln_out after its cast)."""
    return d.Tn * d.h * d.gemm_bpe


def row_input_saved(width):
    """What a row-parallel linear keeps of its (b*s, width(d)) input, in the GEMM's dtype:
    under FP8 its fp8 cast (Transformer Engine's Linear saves the cast input, and the 16-bit
    tensor is freed unless another op keeps it)."""
    return lambda d: d.T * width(d) * d.gemm_bpe


# --------------------------------------------------------------------------- backward

def bias_grad(B: Builder, linear: str, grads, tokens, width) -> str:
    """A linear's bias gradient: the output gradient summed over tokens, one reduction kernel
    reading tokens(d) x width(d) elements (Megatron computes it outside the GEMM)."""
    return B.eltwise(f"bwd.{linear}.bias_grad",
                     lambda d: (tokens(d), width(d), tokens(d) * width(d) * d.bpe), grads,
                     forward_of=f"fwd.{linear}")


def linear_backward(B: Builder, name: str, size, grads, between=None, wgrad_deps=(),
                    linear=True, cast=True):
    """Backward of the forward GEMM X (m x k) @ W (k x n), ``size(d)`` -> (m, n, k): two GEMMs,
    each 2mnk FLOPs, in Megatron's issue order: dgrad, then ``between(dgrad)`` (the async
    collective of the input gradient), then wgrad.

    dgrad: dX = dY W^T, (m x n) @ (n x k);   wgrad: dW = X^T dY, (k x m) @ (m x n), accumulated
    into the fp32 main gradient (gradient_accumulation_fusion: reads and writes k x n fp32).
    ``wgrad_deps``: what the wgrad GEMM waits for besides the output gradient (SP: the
    re-gathered input). Under FP8 the output gradient is first cast (:func:`fp8_cast`) unless
    ``cast`` is False (it arrives quantized: a sequence-parallel gather's);
    ``linear=False`` keeps both GEMMs in the activations' dtype (the output layer).
    """
    fwd = f"fwd.{name}"
    if linear and cast:
        grads = (fp8_cast(B, f"bwd.{name}.cast", lambda d: size(d)[:2], grads, grad=True),)
    dgrad_size, wgrad_size = _dgrad_size(size), _wgrad_size(size, B.grad_fusion)
    dgrad = B.gemm(f"bwd.{name}.dgrad", dgrad_size, grads, forward_of=fwd, linear=linear)
    after = between(dgrad) if between else None
    wgrad = B.gemm(f"bwd.{name}.wgrad", wgrad_size, (*grads, *wgrad_deps), forward_of=fwd,
                   linear=linear)
    if not B.grad_fusion:
        wgrad = grad_accumulate(B, name, size, wgrad)
    return after if between else dgrad, wgrad


def grad_accumulate(B: Builder, name: str, size, wgrad) -> str:
    """The add of a linear's new weight gradient, without gradient accumulation fusion, for
    the (k x n) weight:

    * autograd's into the parameter's 16-bit ``.grad`` (Megatron-LM 2021; PyTorch's
      AccumulateGrad, in place): read both, write one, 3 k n bpe bytes, on (m - 1) of a step's
      m micro-batches (the first has no gradient to add to: AccumulateGrad keeps the new one),
      so ``d.grad_adds`` = (m - 1)/m of it per micro-batch (one micro-batch: no bytes, the
      launches still counted);
    * ``d.main_grad_add``: Megatron-core's DDP hook's into the fp32 main gradient
      (``param.main_grad.add_(param.grad.data)``, megatron/core/distributed/
      distributed_data_parallel.py ``_make_backward_post_hook``), every micro-batch: read the
      16-bit gradient and the fp32 main gradient, write the main gradient, k n (bpe + 2 x 4)
      bytes (10 a weight in bf16; FP32_ACCUMULATE_BYTES the main gradient's 8)."""
    def add(d):
        m, n, k = size(d)
        if d.main_grad_add:
            return k, n, k * n * (d.bpe + FP32_ACCUMULATE_BYTES)
        return k, n, 3 * k * n * d.bpe * d.grad_adds
    return B.eltwise(f"bwd.{name}.grad_accumulate", add, (wgrad,), forward_of=f"fwd.{name}")


def _dgrad_size(size):
    """dX = dY W^T of the forward (m x k) @ (k x n): (m x n) @ (n x k)."""
    def dgrad(d):
        m, n, k = size(d)
        return m, k, n
    return dgrad


def _wgrad_size(size, fused: bool = True):
    """dW = X^T dY, (k x m) @ (m x n), accumulated into the fp32 main gradient (``fused``), or
    written as a new gradient."""
    def wgrad(d):
        m, n, k = size(d)
        return k, n, m, 1, fused
    return wgrad


def row_parallel_bwd(B: Builder, linear: str, size, grad, bias: bool):
    """Backward of a row-parallel linear: its bias gradient, (SP: all-gather of the output
    gradient, the conjugate of the forward reduce-scatter; synchronous) then dgrad and wgrad.
    Under FP8 with SP the local Tn x h shard is cast before the gather, which carries the
    quantized tensor (Transformer Engine's ``grad_output_preprocess``:
    ``gather_along_first_dim(grad_output, tp_group, quantizer=...)`` quantizes, then
    all-gathers the quantized data, module/base.py and distributed.py)."""
    if bias:
        bias_grad(B, linear, (grad,), lambda d: d.Tn, lambda d: d.h)
    if B.sp:
        grad = fp8_cast(B, f"bwd.{linear}.cast", lambda d: (d.Tn, d.h), grad, grad=True,
                        gathered=True)
    if B.tp_overlap:    # the output gradient's gather interleaved with the dgrad GEMM
        dgrad = _ring_exchange(B, f"bwd.{linear}.dgrad", _dgrad_size(size), (grad,),
                               linear=True)
        copies = tuple(f"bwd.{linear}.dgrad.p2p{i}" for i in range(1, B.tp))
        wgrad = B.gemm(f"bwd.{linear}.wgrad", _wgrad_size(size), (grad, *copies),
                       forward_of=f"fwd.{linear}", linear=True)
        return dgrad, wgrad
    if B.sp:
        grad = B.collective(f"bwd.{linear}.all-gather", "all-gather", (grad,),
                            forward_of=f"fwd.{linear}.reduce-scatter", size=gathered_input)
    return linear_backward(B, linear, size, (grad,), cast=not B.sp)


def column_parallel_bwd(B: Builder, linear: str, size, grads, bias: bool, is_linear=True,
                        input_size=gathered_input, grad_size=None):
    """Backward of a column-parallel linear, as Megatron-core's
    LinearWithGradAccumulationAndAsyncCommunication runs it: its bias gradient; with SP an
    async all-gather of the saved input shard (overlapping dgrad; the weight gradient needs the
    whole input); dgrad; the async all-reduce (SP: reduce-scatter) of the input gradient, which
    overlaps the wgrad GEMM; wgrad. Returns (the reduced input gradient, wgrad). ``input_size``,
    ``grad_size``: the sizes of the gathered input and of the reduced input gradient, (nbytes,
    dims, dtype) of Dims (default: the (b*s, h) activation's, :func:`gathered_input`)."""
    if bias:
        bias_grad(B, linear, grads, lambda d: d.T, lambda d: size(d)[1])
    inputs = ()
    fwd = f"fwd.{linear}" if B.tp_overlap and is_linear else f"fwd.{linear}.all-gather"
    if B.sp:
        inputs = (B.collective(f"bwd.{linear}.all-gather", "all-gather", grads,
                               forward_of=fwd, size=input_size if is_linear else None),)
    op = sp_reduce_op(B.sp)

    def reduce(dgrad, *after):
        conj = fwd if B.sp else f"fwd.{linear}"
        return B.collective(f"bwd.{linear}.{op}", op, (dgrad, *after), forward_of=conj,
                            size=grad_size)
    if not B.async_dgrad:    # Megatron-LM 2021: after wgrad, autograd's order (module doc)
        dgrad, wgrad = linear_backward(B, linear, size, grads, wgrad_deps=inputs,
                                       linear=is_linear)
        return reduce(dgrad, wgrad), wgrad
    return linear_backward(B, linear, size, grads, between=reduce, wgrad_deps=inputs,
                           linear=is_linear)
