"""The op graphs of serving a TP transformer: a layer's prefill and decode, and the model's ends.

A layer serves requests with the same ops it trains with, forward only: :mod:`tpsim.layer.graph`'s
attention and MLP blocks (norm, column-parallel QKV, attention core, row-parallel output
projection, all-reduce, residual; norm, column-parallel fc1, activation, row-parallel fc2,
all-reduce, residual) built into a :class:`~tpsim.layer.template.Builder` without dropout or sequence
parallelism, plus the write of the new keys and values into the KV cache (vLLM's
``reshape_and_cache``: read 2 kv_width activations a token, write them in the cache dtype).
Two of its ops change meaning at inference:

* prefill runs the causal flash-attention core (:class:`~tpsim.layer.ops.Attention`, seq_q = seq_kv
  = prompt) in the activation dtype (bf16/fp16), as FlashAttention serves fp8 models;
* decode runs one query per sequence against the cache (FlashDecoding, paged attention,
  FlashInfer): it reads every cached key and value once, so it is priced by its bytes,

      bytes = b (2 q_width bpe_act + 2 L kv_width bpe_kv)      (read q, write o, read K and V)

  as a memory-bound kernel with a fixed part, the split-KV kernel's combine and pipeline fill
  (:class:`~tpsim.layer.ops.DecodeAttention`, :func:`tpsim.cost.compute.decode_attention_time`). Its FLOPs, 4 b L q_width
  (:class:`~tpsim.layer.ops.Attention` with seq_q = 1), are at most 2 (heads/kv_heads) / bpe_kv per
  byte (8 for Llama 2 70B in bf16), far under every device's tensor-core ridge point (~300
  FLOP/byte on H100): a tensor-core kernel is never compute-bound. (:func:`tpsim.cost.compute.
  attention_time` would price seq_q = 1 at the efficiency of a 1-row GEMM tile, hundreds of
  times too slow for decode.) With ``decode_attention`` ``flashinfer-0.1`` (FlashInfer <= 0.1.6,
  as SGLang v0.3-v0.4.1 calls it: its CUDA-core decode kernel where heads / kv_heads is 1, 2, 4
  or 8, ``_grouped_size_compiled_for_decode_kernels``; its tensor-core kernel otherwise) the
  op carries that group size, and the CUDA cores may bound it (``DecodeAttention.cuda_core_group``).
  With ``trtllm-mmha`` (TensorRT-LLM's masked multi-head attention before XQA, one CTA per query
  head) it carries the bytes requested once per query head (:func:`mmha_l2_bytes`), which the
  L2 may bound (``DecodeAttention.l2_bytes``), and the thread instructions its CTAs spend on the
  CUDA cores (:func:`tpsim.cost.mmha.mmha_instructions`), which may bound it instead.

With ``--dtype fp8`` the GEMMs run in fp8 (weights 1 byte, the fp8 peak) while activations
between kernels, the collectives and the attention stay in the 16-bit activation dtype, as
TensorRT-LLM and vLLM serve fp8 checkpoints: :class:`InferDims` carries both dtypes.

The ends: the vocab-parallel embedding (lookup, all-reduce of the partial rows) over the
tokens fed; the output over the last token of each sequence only (final norm, logits GEMM
(b x h) @ (h x V/tp), all-gather of the logits, sampling that reads the b x V logits and
writes them as fp32). Construction only: pricing is :mod:`tpsim.sim.price`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..base.errors import ConfigError
from ..base.memo import Memo
from .graph import Dims, layer_dims, _attention_fwd, _bias_dropout_add_fwd, _mlp_fwd, _norm_fwd
from .infer_mla import mla_attention_fwd, mla_decode_core
from .infer_moe import infer_moe_fwd
from .ops import Attention, DecodeAttention
from .template import Builder, Template
from ..cluster.topology import BYTES_PER_ELEMENT
from ..cost.mmha import mmha_instructions

FP32 = 4
PHASES = ("prefill", "decode")
# Built once per switch set and kept: other memos key on a template's identity.
_TEMPLATES = Memo("serving templates", 256, lru=True)


@dataclass(frozen=True)
class InferDims(Dims):
    """:class:`~tpsim.layer.graph.Dims` of one serving step: ``dtype`` is the GEMMs' (weights'),
    ``act_dtype`` the activations' between kernels (``bpe`` follows it), ``kv_dtype`` the
    cache's, ``kv_len`` the cached tokens each decoded token attends to (itself included);
    Dims' ``ep``: the expert-parallel degree (``experts`` is then the E / ep local ones,
    :mod:`tpsim.layer.infer_moe`); ``window``: the layer's sliding attention window (0: full
    attention), which bounds the keys each query attends to; ``decode_attention``: the decode
    kernel (:class:`~tpsim.spec.serving.ServingLayout`'s, module docstring)."""
    kv_len: int = 0
    act_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    window: int = 0
    decode_attention: str = "tensor-cores"

    @property
    def attended(self) -> int:
        """The cached tokens a decoded token reads: kv_len, at most the window."""
        return min(self.kv_len, self.window) if self.window else self.kv_len

    @property
    def bpe(self) -> int:
        return BYTES_PER_ELEMENT[self.act_dtype]

    @property
    def kv_bpe(self) -> int:
        return BYTES_PER_ELEMENT[self.kv_dtype]


def infer_dims(base: Dims, act_dtype: str, kv_dtype: str, kv_len: int = 0) -> InferDims:
    """``base`` (from :func:`tpsim.layer.graph.layer_dims`, which checks the TP split) as InferDims."""
    return InferDims(**_fields(base), kv_len=kv_len, act_dtype=act_dtype, kv_dtype=kv_dtype)


def _fields(d: Dims) -> dict:
    """``d``'s fields by name: ``dataclasses.asdict`` without its deep copy (every field of
    :class:`Dims` is a number, a string or a flag)."""
    return {name: getattr(d, name) for name in _DIMS}


_DIMS = tuple(f.name for f in dataclasses.fields(Dims))


def serving_dims(model, tp: int, ep: int, b: int, s: int, dtype: str, act_dtype: str,
                 kv_dtype: str, kv_len: int = 0, **given) -> InferDims:
    """Per-rank sizes of a serving layer of ``model`` (widths split by ``tp``, experts by
    ``ep``), after checking the splits: :func:`infer_dims` of
    :func:`~tpsim.layer.dims.layer_dims` plus the MoE and MLA widths; ``given``: other
    :class:`InferDims` fields (``window``, ``decode_attention``)."""
    dims = layer_dims(model, tp, b, s, dtype, serving=True)
    moe = {}
    if model.moe:
        shared = model.shared_experts * (model.shared_expert_ffn_hidden or 0)
        for key, width in (("expert_ffn_hidden", model.expert_ffn_hidden),
                           ("shared experts' width", shared)):
            if width % tp:
                raise ConfigError("--tp", "", f"a divisor of {model.name}'s {key} ({width})", tp)
        if model.experts % ep:
            raise ConfigError("--ep", "", f"a divisor of {model.name}'s {model.experts} experts",
                              ep)
        moe = dict(experts=model.experts // ep, topk=model.experts_per_token,
                   fe=model.expert_ffn_hidden // tp, fs=shared // tp)
    elif ep > 1:
        raise ConfigError("--ep", "", f"1: {model.name} has no experts", ep)
    return InferDims(**{**_fields(dims), "ep": ep, **moe}, kv_len=kv_len,
                     act_dtype=act_dtype, kv_dtype=kv_dtype, **given)


def resizer(d: InferDims):
    """f(b, s, kv_len): ``d`` at another batch, length and cache, what :func:`serving_dims`
    makes of them with every other argument alike (no other field reads them, and its checks
    read neither), without deriving the rest again."""
    fields = {f: getattr(d, f) for f in _INFER}
    return lambda b, s, kv_len: InferDims(**{**fields, "b": b, "s": s, "kv_len": kv_len})


_INFER = tuple(f.name for f in dataclasses.fields(InferDims))


def prefill_attention(d: InferDims) -> Attention:
    """The causal flash-attention core over the prompt, in the activation dtype."""
    return Attention(d.b, d.heads, d.kv_heads, d.s, d.s, d.d, d.act_dtype, True, False,
                     window=d.window)


def decode_attention_core(d: InferDims) -> Attention:
    """The decode attention as an attention core (one query per sequence, ``kv_len`` keys): its
    conventional FLOPs, 4 b kv_len q_width; with one dtype its bytes equal
    :func:`decode_attention_bytes` (MLA: :func:`~tpsim.layer.infer_mla.mla_decode_core`)."""
    if d.r_kv:
        return mla_decode_core(d)
    return Attention(d.b, d.heads, d.kv_heads, 1, d.attended, d.d, d.act_dtype, False, False)


def decode_attention_bytes(d: InferDims) -> float:
    """b (2 s q bpe_act + 2 L kv bpe_kv): read the queries, write the outputs, read the cached
    keys and values of L = kv_len tokens, at most the layer's window (the module docstring);
    s queries per sequence (1 but in a speculative verification) share one read of the cache."""
    return d.b * (2 * d.s * d.q * d.bpe + 2 * d.attended * d.kv * d.kv_bpe)


# query heads per KV head that FlashInfer <= 0.1.6 compiled its CUDA-core decode for
# (flashinfer/decode.py, _grouped_size_compiled_for_decode_kernels)
CUDA_CORE_GROUPS = (1, 2, 4, 8)


def mmha_l2_bytes(d: InferDims) -> float:
    """b (2 s q bpe_act + 2 L q bpe_kv): what TensorRT-LLM's masked multi-head attention
    requests, each query head's CTA loading its KV head's L keys and values itself
    (decoderMaskedMultiheadAttentionTemplate.h as of v0.5/v0.6: hi_kv = hi / qhead_per_kv,
    getKVLocalIdx(t, hi_kv, ...)): the cache read heads / kv_heads times, as if every query
    head had its own KV head (q = heads d, kv = kv_heads d)."""
    return d.b * (2 * d.s * d.q * d.bpe + 2 * d.attended * d.q * d.kv_bpe)


def _decode_attention(d: InferDims) -> DecodeAttention:
    g = d.heads // d.kv_heads
    cuda = g if d.decode_attention == "flashinfer-0.1" and g in CUDA_CORE_GROUPS else 0
    mmha = d.decode_attention == "trtllm-mmha"
    l2 = mmha_l2_bytes(d) if mmha and g > 1 else 0.0
    work = mmha_instructions(d.b * d.s, d.heads, d.attended, d.d, d.kv_bpe) if mmha else ()
    return DecodeAttention(decode_attention_bytes(d), (d.b, d.heads, d.attended, d.d),
                           cuda_core_group=cuda, l2_bytes=l2, instructions=work)


def _act_label(make):
    """A collective made in the activation dtype (its bytes already use ``d.bpe``)."""
    return lambda d: dataclasses.replace(make(d), dtype=d.act_dtype)


def _serving_nodes(B: Builder, attention_make) -> None:
    """Swap the training attention core for ``attention_make`` and label the collectives with
    the activation dtype they carry."""
    if not any(n.name == "fwd.attn" for n in B.nodes):
        raise RuntimeError("tpsim.layer.graph no longer names the fused attention core 'fwd.attn'")
    B.nodes = [dataclasses.replace(n, make=attention_make or n.make) if n.name == "fwd.attn" else
               dataclasses.replace(n, make=_act_label(n.make)) if n.stream == "comm" else n
               for n in B.nodes]


def serving_layer_template(phase: str, tp_group: bool, swiglu: bool, moe: int = 0,
                           ep_group: bool = False, mla: int = 0) -> Template:
    """One layer's forward for ``phase`` (prefill | decode), built once per switches.
    ``moe``: the MLP is the mixture-of-experts slot (:mod:`tpsim.layer.infer_moe`; 2: with
    shared experts), ``ep_group``: its EP group has more than one rank; ``mla``: multi-head
    latent attention (:mod:`tpsim.layer.infer_mla`; 2: queries compressed too)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    key = (phase, tp_group, swiglu) + ((moe, ep_group, mla) if moe or mla else ())
    return _TEMPLATES.get(("layer",) + key, _serving_layer, phase, tp_group, swiglu, moe,
                          ep_group, mla)


def _serving_layer(phase: str, tp_group: bool, swiglu: bool, moe: int = 0,
                   ep_group: bool = False, mla: int = 0) -> Template:
    B = Builder(False)
    if mla:
        B.block = "attention"
        x = mla_attention_fwd(B, _norm_fwd(B, "fwd.norm1", None), phase, mla == 2)
        x = _bias_dropout_add_fwd(B, 1, x, None, False)
    else:
        x = _attention_fwd(B, None, bare=False, kernel="fused", dropout=False)
        B.eltwise("fwd.kv_cache_write",
                  lambda d: (d.T, 2 * d.kv, 2 * d.T * d.kv * (d.bpe + d.kv_bpe)), ("fwd.qkv",))
    if moe:
        B.block = "mlp"
        y = infer_moe_fwd(B, _norm_fwd(B, "fwd.norm2", x), swiglu, moe == 2)
        _bias_dropout_add_fwd(B, 2, y, x, False)
    else:
        _mlp_fwd(B, x, bare=False, swiglu=swiglu, dropout=False)
    attention = (prefill_attention if phase == "prefill" else _decode_attention)
    if not mla:
        _serving_nodes(B, attention)
    else:
        _serving_nodes(B, None)
    return B.compile({"tp": 2 if tp_group else 1, "ep": 2 if ep_group else 1}, phase=phase)


def embedding_template(tp_group: bool) -> Template:
    """Vocab-parallel lookup of the tokens fed (read and write T rows) and the all-reduce of
    the partial rows (Megatron's VocabParallelEmbedding, as vLLM serves it)."""
    return _TEMPLATES.get(("embedding", tp_group), _embedding, tp_group)


def _embedding(tp_group: bool) -> Template:
    B = Builder(False)
    B.block = "embedding"
    x = B.eltwise("fwd.embedding", lambda d: (d.T, d.h, 2 * d.T * d.h * d.bpe))
    B.collective("fwd.embedding.all-reduce", "all-reduce", (x,))
    B.nodes = [dataclasses.replace(n, make=_act_label(n.make)) if n.stream == "comm" else n
               for n in B.nodes]
    return B.compile({"tp": 2 if tp_group else 1})


def _logits_gather(d):
    """The all-gather of the logits: the full (T x V) output, as nccl-tests counts it."""
    return d.T * d.vocab * d.tp * d.bpe, (d.T, d.vocab * d.tp), d.act_dtype


def output_template(tp_group: bool) -> Template:
    """Final norm, logits GEMM (T x h) @ (h x V/tp), all-gather of the logits, sampling (read
    T x V logits, write them in fp32: T V (bpe + 4) bytes); at dims of T = b tokens."""
    return _TEMPLATES.get(("output", tp_group), _output, tp_group)


def _output(tp_group: bool) -> Template:
    B = Builder(False)
    B.block = "output"
    x = _norm_fwd(B, "fwd.final_norm", None)
    x = B.gemm("fwd.logits", lambda d: (d.T, d.vocab, d.h), (x,))
    x = B.collective("fwd.logits.all-gather", "all-gather", (x,), size=_logits_gather)
    B.eltwise("fwd.sample", lambda d: (d.T, d.vocab * d.tp,
                                       d.T * d.vocab * d.tp * (d.bpe + FP32)), (x,))
    return B.compile({"tp": 2 if tp_group else 1})
