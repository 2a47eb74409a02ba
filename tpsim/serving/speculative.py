"""Speculative decoding, as vLLM and SGLang run it, priced by tpsim's own decode step.

One speculative step, per sequence of the batch (b sequences on each of ep attention replicas):

* **Draft**: k forwards of the draft. The first takes the k + 1 tokens the last verification
  settled, s = k + 1 per sequence (vLLM v1's ``EagleProposer.propose`` feeds the verified
  tokens with the target's hidden states in its first forward; SGLang's ``EAGLEWorker`` runs
  ``forward_draft_extend_after_decode`` over them, then ``speculative_num_steps`` - 1 more),
  then k - 1 chained single-token forwards, each feeding the token drafted by the one before
  and the hidden state it left. A head (``mtp``: the model's own multi-token-prediction
  module; ``eagle``: an EAGLE one-layer head) forward over t = b s tokens = the embedding of
  the t tokens + two RMSNorms (``enorm``, ``hnorm``: read and write t h each) + ``eh_proj``,
  (t x 2h) @ (2h x h), replicated on every rank and unquantized, in the activation dtype
  (vLLM's ``DeepSeekMultiTokenPredictorLayer``: a plain ``nn.Linear(2 * hidden, hidden,
  bias=False)``, vllm/model_executor/models/deepseek_mtp.py;
  EAGLE's ``fc``, vllm/model_executor/models/llama_eagle.py) + one decoder layer of the
  target's shape at s queries per sequence (the model's first kind: for DeepSeek-V3 its MoE
  layer, as its MTP module; eagle: the last kind, a dense layer where the model mixes) + the
  shared output layer over the b tokens drafted from (the proposers sample the draft token
  from the target's own lm_head). ``--draft-model``: the draft model's own forward at the
  same tp (its layers at s queries per sequence and its ends), the same k forwards.
* **Verify**: the target's forward over k + 1 tokens per sequence in one pass: its GEMMs at
  (k + 1) b rows, the decode attention with k + 1 queries per sequence reading the cache once
  (:func:`tpsim.layer.infer_graph.decode_attention_bytes` at s = k + 1), the KV cache written
  for the k + 1 tokens, the embedding over (k + 1) b tokens and the logits of all of them
  (vLLM v1 ``EagleProposer`` / SGLang ``EAGLEWorker.verify``: a target forward in
  ``ForwardMode.TARGET_VERIFY`` over the draft tokens; CUDA graphs as for decode).
* **Tokens per step**: with each drafted token accepted with probability a, independently,
  the expected tokens a step emits are E = (1 - a^(k+1)) / (1 - a) (Leviathan, Kalman, Matias
  2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1): the accepted
  prefix plus the target's own next token.

The time per output token is the step's mean over the cache lengths, taken exactly as for
plain decode (:func:`tpsim.serving.lengths.mean_over_lengths`; the step is convex and piecewise
linear in the cache length), divided by E. At k = 0 a step is one plain decode step (E = 1,
no draft): the numbers of :func:`tpsim.serving.infer.decode_steps`.
"""
from __future__ import annotations

import dataclasses

from ..cost.compute import elementwise_time, gemm_time, memory_bound
from ..layer.infer_graph import decode_attention_core, embedding_template, output_template
from ..cluster.topology import BYTES_PER_ELEMENT
from ..spec.model_params import layer_kinds
from .lengths import mean_over_lengths
from .memory import kv_bytes_per_token, layer_weights, weights_per_gpu
from .result import Decode, PhaseCost, Speculative


def expected_tokens(a: float, k: int) -> float:
    """E = (1 - a^(k+1)) / (1 - a) = 1 + a + ... + a^k: tokens one step emits (Leviathan et
    al. 2023, eq. 1), for an acceptance rate 0 <= a < 1 and k drafted tokens."""
    return sum(a ** j for j in range(k + 1))


def _small(t: float, flops: float, nbytes: float, device) -> PhaseCost:
    """A kernel of time ``t`` as a :class:`PhaseCost`, memory- or compute-bound as
    :func:`tpsim.serving.infer.phase_cost` decides."""
    launch = device.kernel_launch_s
    hbm = memory_bound(t, nbytes, device)
    return PhaseCost(t, t - launch if hbm else 0.0, 0.0 if hbm else t - launch, launch, 0, 0,
                     flops, nbytes, 0, 1)


def head_step(srv, b: int, kv_len: int, kind: int, s: int = 1) -> PhaseCost:
    """One step of a draft head over b sequences, ``s`` tokens each (module docstring): the
    embedding over b s tokens, enorm and hnorm, eh_proj (b s x 2h) @ (2h x h), one decode
    layer of the target's kind ``kind`` (index into its kinds of layer) at ``kv_len`` with s
    queries per sequence, and the output layer over the b tokens it drafts from."""
    dev, h, t = srv.topo.device, srv.m.hidden, b * s
    _, _, tpl, w = srv.mix[kind]
    d = dataclasses.replace(srv.dims(b, s, kv_len), window=w)
    layer = srv.cost(tpl, d, s * decode_attention_core(d).flops)
    bpe = d.bpe                 # eh_proj: an unquantized nn.Linear, in the activation dtype
    proj_bytes = (2 * h * h + t * 3 * h) * bpe
    proj = _small(gemm_time(t, h, 2 * h, dev, srv.act), 4 * t * h * h, proj_bytes, dev)
    norm = _small(elementwise_time(2 * t * h * bpe, dev), 0.0, 2 * t * h * bpe, dev)
    return layer + proj + norm.scaled(2) + srv.ends(b, s)     # embedding b s, output b


def verify_step(srv, b: int, kv_len: int, s: int) -> PhaseCost:
    """The target's forward over ``s`` = k + 1 tokens of each of b sequences whose caches hold
    ``kv_len`` tokens: layers x the decode layer at s queries, the embedding over b s tokens,
    the output layer's logits for all b s of them."""
    tp_group = srv.tp > 1
    return (srv.decode_layer(b, kv_len, s).scaled(srv.m.layers)
            + srv.cost(embedding_template(tp_group), srv.dims(b, s))
            + srv.cost(output_template(tp_group), srv.dims(b * s, 1)))


def draft_step(srv, draft, method: str, b: int, kv_len: int, s: int = 1) -> PhaseCost:
    """One draft forward over ``s`` tokens of each of b sequences: a head's (``mtp``: the
    first kind of layer, ``eagle``: the last) or the draft model's server ``draft`` (its
    layers' decode and its ends)."""
    if method == "draft":
        return draft.decode_layer(b, kv_len, s).scaled(draft.m.layers) + draft.ends(b, s)
    return head_step(srv, b, kv_len, 0 if method == "mtp" else len(srv.mix) - 1, s)


def drafting(srv, draft, method: str, k: int, b: int, kv_len: int) -> PhaseCost | None:
    """The k draft forwards of a step (None at k = 0): the first over the k + 1 tokens the
    last verification settled (their hidden states and cache entries enter the draft: vLLM
    v1's proposer runs them in its first forward, SGLang's ``forward_draft_extend_after_
    decode`` in a pass of its own before its single-token steps), then k - 1 chained
    single-token forwards."""
    if not k:
        return None
    first = draft_step(srv, draft, method, b, kv_len, k + 1)
    if k == 1:
        return first
    return first + draft_step(srv, draft, method, b, kv_len + 1, 1).scaled(k - 1)


def spec_step_s(srv, draft, method: str, k: int, b: int, kv_len: int) -> float:
    """One speculative step of b sequences at cache length ``kv_len``, s: the k draft forwards
    at kv_len (:func:`drafting`) + the verification of k + 1 tokens at kv_len + k (the drafted
    tokens' keys written, :func:`verify_step`)."""
    dft = drafting(srv, draft, method, k, b, kv_len)
    return verify_step(srv, b, kv_len + k, k + 1).time_s + (dft.time_s if dft else 0.0)


def speculative_steps(srv, draft, method: str, k: int, a: float, batch: int, prompt: int,
                      gen: int, plain: Decode) -> tuple[Decode, Speculative]:
    """The gen - 1 tokens after the first decoded k + 1 at a time (module docstring): a step
    at cache length L = the k draft forwards at L (:func:`drafting`) + the verification at
    L + k (the drafted tokens' keys written); its mean over L = prompt + 1 .. prompt + gen - 1
    (:func:`~tpsim.serving.lengths.mean_over_lengths`) / E. ``plain``: the decode without
    speculation, for the speed-up."""
    micro = batch // srv.ep

    def parts(n):
        return drafting(srv, draft, method, k, micro, n), verify_step(srv, micro, n + k, k + 1)

    def step(n):
        return spec_step_s(srv, draft, method, k, micro, n)
    first, last = prompt + 1, prompt + gen - 1
    mean_step, calls = mean_over_lengths(step, first, last)
    e = expected_tokens(a, k)
    tpot = mean_step / e
    kv_mid = round((first + last) / 2)
    dft, ver = parts(kv_mid)
    cost = ver + dft if dft else ver
    draft_s = dft.time_s if dft else 0.0
    how = (f"exact mean over kv_len {first}..{last} from {calls} step simulations, / "
           f"{e:.4g} tokens per speculative step")
    dec = Decode(gen - 1, tpot, batch / tpot, step(first), step(last), kv_mid, cost,
                 cost.hbm_bytes / cost.time_s, plain.hbm_peak_Bps, how)
    spec = Speculative(method, draft.m.name if draft else None, k, a, e, mean_step, draft_s,
                       ver.time_s, draft_s / (draft_s + ver.time_s), tpot, batch / tpot,
                       plain.time_per_token_s / tpot)
    return dec, spec


def draft_memory(m, dm, method: str, tp: int, dtype: str, act: str, kv_dtype: str,
                 ep: int = 1) -> tuple[float, float]:
    """(weights, KV cache bytes per token) a draft adds on each GPU. A draft model
    ``dm``: its own (:func:`~tpsim.serving.memory.weights_per_gpu`,
    :func:`~tpsim.serving.memory.kv_bytes_per_token` at the same tp). A head: one layer of the
    target's kind (``mtp``: the first, ``eagle``: the last; its linear weights in ``dtype`` and
    two norms), eh_proj's 2h x h (whole on every rank, unquantized: the activation dtype) and
    enorm and hnorm, and one layer's cache; the embedding and output layer are the target's
    own (shared, as the DeepSeek-V3 report describes the MTP module)."""
    if method == "draft":
        return weights_per_gpu(dm, tp, 1, dtype, act), kv_bytes_per_token(dm, tp, 1, kv_dtype)
    sparse = layer_kinds(m)[0 if method == "mtp" else -1][1]
    bw, ba, h = BYTES_PER_ELEMENT[dtype], BYTES_PER_ELEMENT[act], m.hidden
    weights = (layer_weights(m, tp, ep, sparse) * bw
               + (2 * m.norm_params + 2 * h + 2 * h * h) * ba)
    return float(weights), kv_bytes_per_token(m, tp, 1, kv_dtype) / m.layers


__all__ = ["draft_memory", "expected_tokens", "speculative_steps", "spec_step_s", "head_step", "verify_step",
           "draft_step", "drafting"]
