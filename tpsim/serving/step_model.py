"""The time of one engine step of a continuous-batching server, from tpsim's own pricing of
prefill and decode layers (:mod:`tpsim.serving.infer`), tabulated and interpolated.

An engine step feeds T tokens through the model in one forward: prefill chunks (c_j new
tokens of a sequence that already has s_j tokens cached) and decodes (one token of a sequence
whose cache then holds L_i tokens). On one GPU of the TP group, at pp = 1:

* a step without prefill (decode only, B sequences, CUDA graphs where the engine has them):
  ``decode_step_s(B, sum L)`` = n_layers (D(B) + k sum_i L_i) + E(B) + O(B), where D(B) is a
  decode layer (:func:`tpsim.serving.infer.serve_simulate` of the decode template) at batch
  B without its attention's cache reads, and k the attention's time per cached token (the
  decode attention is priced by its bytes, so affine in the cache: k = (layer(B, L2) -
  layer(B, L1)) / (B (L2 - L1)));
* a step with prefill: ``mixed_step_s`` = n_layers (P(T) + sum_j A(c_j, s_j) + k sum_i L_i)
  + E(T) + O(n), where P(T) is a prefill layer over T tokens (the prefill template: GEMMs at
  m = T, the all-reduces of T x h) less its attention op, and a chunk's causal attention
  A(c, s) = a(c + s) w(c, s) / w(c + s, 0): the attention a(x) of a whole prompt of x tokens
  scaled by the share of its work that the chunk does, with w(c, s) = c (s + (c + 1)/2) the
  (query, key) pairs of c new tokens after s cached ones;
* E(T): the embedding over T tokens; O(n): the output layer and sampling of the n sequences
  that emit a token in the step.

**CUDA-graph padding** (``graph_align`` a > 0): a decode-only step of B sequences replays the
graph captured for B' = the smallest size >= B among 1, 2, 4 and the multiples of a
(:func:`graph_batch`), at most ``max_num_seqs`` (no larger graph is captured), so D and E run
at B' rows while the cache reads (k sum L) and the output layer O stay at the B sequences: vLLM V0 captures 1, 2, 4, 8, ..., 256 (``_BATCH_SIZES_
TO_CAPTURE`` = [1, 2, 4] + [8 i], vllm/worker/model_runner.py, v0.6) and pads the batch with
empty slots, its logits computed for the real rows only; SGLang of 2024 captures 1, 2, 4, 8,
..., 160 (``[1, 2, 4] + [i * 8 for i in range(1, 21)]``, srt/model_executor). Steps with
prefill run without graphs in both: with ``eager_prefill`` such a step lasts max(its time
above, N c), the host issuing the forward's N ops (:attr:`StepModel.forward_ops`: n_layers x
the prefill layer's host ops + the ends'; at pp > 1 each stage's host issues its n_layers/pp
for each of g <= pp micro-batches, so N bounds it) at c each (:mod:`tpsim.serving.host`).
**Past the graphs** (``graph_max`` M > 0, SGLang's ``cuda_graph_max_bs``): only the sizes up
to M are captured, and a decode step whose padded size B' exceeds M runs eagerly, as a step
with prefill does: its layers at its own B rows (nothing to pad to) and its time max(the
decode step above, N c) (SGLang's ``CudaGraphRunner.can_run``: a batch larger than the
largest graph runs ``forward_decode`` without it).

D, P, E and O are interpolated linearly between prices at a geometric grid of sizes (ratio
2^(1/8), every integer up to 8), refined by bisection wherever the interpolation misses the
price at an interval's midpoint by more than 0.2% (:class:`~tpsim.serving.step_table.Table`:
GEMM tiles and collective algorithm switches make jumps, each pinned to one token); a(x),
which grows as x^2 once compute-bound, is interpolated linearly in log-log (exact for a power
law). A table prices only the points its lookups read, each the first time (the numbers those
of the whole table, bit for bit: :mod:`tpsim.serving.step_table`). At a table point
a step equals the direct pricing; between points the error is under 2%
(tests/serving/test_step_model.py).
A whole prompt in one chunk prices exactly as :func:`tpsim.serving.infer.prefill_pass` of one
sequence: P(x) + a(x) is the prefill layer, E and O its ends.

**Pipeline** (pp > 1), as vLLM runs it (its V1 engine keeps pp batches in flight, one per
stage, each scheduled while the others run; the older engine's "virtual engines" do the same):
a step's sequences are split into g = min(pp, n) micro-batches that follow each other through
the stages, so each sequence gets one token per round, and a round lasts one micro-batch's
trip through every layer: the step priced at pp = 1 with the micro-batch's share of the work,
plus (pp - 1) stage-to-stage transfers of its activations (R(T) = (pp - 1) send_recv(T h
bpe_a), tabulated as D is). A decode step of B sequences: n_layers (D(B/g) + k sum L / g)
+ E(B/g) + O(B/g) + R(B/g). A step with prefill: the micro-batch holds T/g tokens, but a
sequence's chunk is never split, so at least the largest chunk (and the attention at least
the largest chunk's): T_mb = max(T/g, max_j c_j), A_mb = max(sum_j A / g, max_j A); then
n_layers (P(T_mb) + A_mb + k sum L / g) + E(T_mb) + O(n/g) + R(T_mb). At pp = 1 (g = 1)
these are the forms above. One micro-batch's trip through the stages equals the stages'
work for all g micro-batches when the split is even (pp stages x 1/pp of the layers x g =
pp micro-batches): the round is both, and the bubble between rounds is not modelled.

**Expert parallelism** (ep > 1, as ``tpsim infer --ep`` prices it): the step's sequences are
spread evenly over ep attention replicas of tp GPUs, each running its share in pp
micro-batches, so g = min(pp ep, n) in the forms above: each replica's micro-batch carries
1/g of the step's work (its chunks unsplit), and its layers are priced at ep (the MoE layers'
experts split over the replicas, their dispatch and combine all-to-alls,
:mod:`tpsim.layer.infer_moe`). At ep = 1 g = min(pp, n) as above.
"""
from __future__ import annotations

import copy

import numpy as np

from ..layer.infer_graph import embedding_template, output_template
from ..sim.schedule import issue_bound
from ..sim.simulate import phase_times
from .infer import prefill_pass
from .step_table import Table, grid

def graph_batch(b, align: int):
    """B' = the smallest of 1, 2, 4 and the multiples of ``align`` at least B (B rounded up
    to whole sequences); B itself at ``align`` 0 (module docstring)."""
    if align <= 0:
        return b
    b = np.ceil(np.asarray(b, float))
    return np.where(b <= 2, b, np.where(b <= 4, 4.0, np.ceil(b / align) * align))


def _attention_time(sim) -> float:
    """The time of the attention op(s) of a simulated layer."""
    return sum(t for op, t in zip(sim.ops, sim.times) if type(op).__name__ == "Attention")


class StepModel:
    """The step-time tables of one configuration (module docstring); ``srv`` is the
    :class:`tpsim.serving.infer._Server` that prices the layers."""

    def __init__(self, srv, max_tokens: int, max_seqs: int, max_context: int,
                 graph_align: int = 0, graph_max: int = 0):
        self.srv, self.layers, self.graph_align = srv, srv.m.layers, graph_align
        self.graph_max = graph_max
        # c of an eager decode step; 0 where the tables already price each op's issue (--eager)
        self.eager_op_s = 0.0 if srv.host_s else srv.topo.device.engine_dispatch_s
        tg = srv.tp > 1
        # what the tables read beside the server and max_seqs (StepModel.like compares them)
        self.args = (max_tokens, max_context, graph_align, graph_max)
        self.max_tokens, self.top_t = max_tokens, max(max_tokens, max_seqs)
        top_t = self.top_t
        self.t_table = Table(self._prefill_lin, top_t)
        self.x_table = Table(self._prefill_attn, max(max_context, 2), log=True)
        self._chunk_memo = {}           # A(c, s) of the chunks priced
        self._decode_table(max_seqs)
        self.e_table = Table(
            lambda t: srv.cost(embedding_template(tg), srv.dims(1, t)).time_s, top_t)
        self.o_table = Table(
            lambda b: srv.cost(output_template(tg), srv.dims(b, 1)).time_s, top_t)
        self._p2p_table()
        self.forward_ops = (sum(n * tpls[0].host_ops[0] for n, *tpls, _ in srv.mix)
                            + embedding_template(tg).host_ops[0] + output_template(tg).host_ops[0])

    @property
    def prices(self) -> int:
        """The layer and end prices the tables' lookups have read so far (two for the cache
        slope k; :attr:`tpsim.serving.step_table.Table.prices`)."""
        return 2 + sum(t.prices for t in self.tables)

    @property
    def tables(self) -> tuple:
        """P, a, D, E, O and R (at pp > 1) as :class:`~tpsim.serving.step_table.Table`."""
        return (self.t_table, self.x_table, self.b_table, self.e_table, self.o_table,
                *((self.r_table,) if self.r_table else ()))

    def _decode_table(self, max_seqs: int) -> None:
        """k at ``max_seqs`` sequences and D(B) up to them: the tables max_num_seqs sets."""
        self.max_seqs, srv = max_seqs, self.srv
        self._decode_fixed = {}          # decode_step_s's parts by batch size
        self.k = self._per_cached_token(max_seqs)
        self.b_table = Table(lambda b: srv.decode_layer(b, 1).time_s - self.k * b, max_seqs)

    def _p2p_table(self) -> None:
        """R(T), the pipeline's stage-to-stage transfers (none at pp = 1)."""
        srv = self.srv
        self.pp, self.split = srv.pp, srv.pp * srv.ep
        self._decode_fixed, self._step_memo = {}, {}   # looked up once (R(T), the split)
        self.r_table = Table(
            lambda t: srv.p2p(t * srv.m.hidden * srv.dims(1, 1).bpe).time_s, self.top_t) \
            if self.pp > 1 else None

    def like(self, srv, max_tokens: int, max_seqs: int, max_context: int,
             *graphs) -> "StepModel | None":
        """These tables for ``StepModel(srv, max_tokens, max_seqs, max_context, *graphs)``
        where that is exact (:func:`same_layer_prices`: another pipeline depth, the stage
        transfers priced again; :meth:`with_seqs`), None where the lengths, the token budget
        or the graphs differ or ``srv`` prices its layers otherwise."""
        graphs = (*graphs, 0, 0)[:2]               # graph_align, graph_max: 0 when not given
        if (max_tokens, max_context, *graphs) != self.args or \
                not same_layer_prices(self.srv, srv):
            return None
        out = self
        if srv.pp != self.srv.pp:
            out = copy.copy(self)
            out.srv = srv
            out._p2p_table()
        return out.with_seqs(max_seqs)

    def with_seqs(self, max_seqs: int) -> "StepModel":
        """These tables for an engine of ``max_seqs`` sequences: the decode table and k
        priced again (they stop at max_num_seqs), the others shared where they stop at the
        same size, max(max_num_batched_tokens, max_num_seqs); all priced again otherwise."""
        if max_seqs == self.max_seqs:
            return self
        if max(self.max_tokens, max_seqs) != self.top_t:
            max_tokens, max_context, *graphs = self.args
            return StepModel(self.srv, max_tokens, max_seqs, max_context, *graphs)
        out = copy.copy(self)
        out._decode_table(max_seqs)
        return out

    def _prefill_lin(self, t: int) -> float:
        """P(t): a prefill layer over t tokens (its phase time) less its attention; the mean
        layer when dense and MoE layers mix."""
        if len(self.srv.mix) > 1:
            whole, attn = self.srv.prefill_layer_split(self.srv.dims(1, t))
            return whole - attn
        sim = self.srv.sim(self.srv.prefill_tpl, self.srv.dims(1, t))
        return phase_times(sim)[0] - _attention_time(sim)

    def _prefill_attn(self, x: int) -> float:
        if len(self.srv.mix) > 1:
            return self.srv.prefill_layer_split(self.srv.dims(1, x))[1]
        return _attention_time(self.srv.sim(self.srv.prefill_tpl, self.srv.dims(1, x)))

    def _per_cached_token(self, b: int) -> float:
        """k: a decode layer's time per cached token per sequence (the attention's reads)."""
        return cache_slope(lambda n, kv: self.srv.decode_layer(n, kv).time_s, b)

    # ------------------------------------------------------------------ interpolation
    def attention(self, c, s) -> np.ndarray:
        """A(c, s): the causal attention of a chunk of c tokens after s cached ones (arrays, or
        one chunk as floats)."""
        if not (isinstance(c, float) and isinstance(s, float)):
            c, s = np.asarray(c, float), np.asarray(s, float)
        x = c + s
        a = self.x_table(x)
        return a * (c * (s + (c + 1) / 2)) / (x * (x + 1) / 2)

    def ends(self, tokens, outputs) -> np.ndarray:
        """E(T) + O(n) + R(T) (R = 0 at pp = 1: not looked up)."""
        ends = self.e_table(tokens) + self.o_table(outputs)
        return ends + self.r_table(tokens) if self.pp > 1 else ends

    def graph_rows(self, b) -> tuple:
        """(g, rows, eager): a decode step of ``b`` sequences runs as g = min(pp ep, b)
        micro-batches, each replaying the CUDA graph of :func:`graph_batch` rows (at most the
        largest captured, max_num_seqs, unless b / g is larger), or, ``eager``, at b / g rows
        without a graph where that graph is larger than ``graph_max`` (> 0; module
        docstring)."""
        g = min(self.split, b)
        padded = graph_batch(b / g, self.graph_align)
        if self.graph_max and padded > self.graph_max:
            return g, b / g, True
        return g, np.minimum(padded, max(self.max_seqs, b / g)), False

    def past_graphs(self, b) -> bool:
        """Whether a decode step of ``b`` sequences runs eagerly (:meth:`graph_rows`)."""
        return self.graph_rows(b)[2]

    def eager_decode_s(self, eager: bool, gpu_s):
        """A decode step whose GPU time is ``gpu_s``: itself in a graph; max(gpu_s, N c)
        ``eager`` (past the graphs, :meth:`graph_rows`), the host issuing the
        :attr:`forward_ops` N at c each (:func:`tpsim.sim.schedule.issue_bound`)."""
        if not eager:
            return gpu_s
        return np.maximum(gpu_s, issue_bound(0.0, self.forward_ops, self.eager_op_s))

    def decode_terms(self, b) -> tuple:
        """(g, lin, ends, eager): what a decode step of ``b`` sequences depends on beside its
        cached tokens kv, looked up once per batch size; its GPU time is
        layers (lin + k kv / g) + ends, eager: :meth:`eager_decode_s` of it."""
        key = (b, self.graph_align, self.graph_max)
        fixed = self._decode_fixed.get(key)
        if fixed is None:
            g, rows, eager = self.graph_rows(b)
            fixed = self._decode_fixed[key] = (g, self.b_table(rows),
                                             self.ends(rows, b / g), eager)
        return fixed

    def decode_step_s(self, b, sum_kv) -> np.ndarray:
        """A decode-only step of ``b`` sequences holding ``sum_kv`` cached tokens in all, in
        g = min(pp ep, b) micro-batches, each replaying the graph of :func:`graph_batch` rows
        (module docstring)."""
        g, lin, ends, eager = self.decode_terms(b)
        gpu = self.layers * (lin + self.k * np.asarray(sum_kv, float) / g) + ends
        return self.eager_decode_s(eager, gpu) if eager else gpu

    def mixed_step_s(self, chunks, decode_seqs: int, decode_kv: float, outputs: int,
                     op_s: float = 0.0, queries: int = 1) -> float:
        """A step with prefill ``chunks`` ((c, s) pairs) and ``decode_seqs`` decodes holding
        ``decode_kv`` cached tokens, ``queries`` tokens each (k + 1 when they verify k
        drafts); ``outputs`` tokens sample (logits); the heaviest of
        g = min(pp ep, sequences) micro-batches (module docstring); run eagerly, the host
        issuing each of its :attr:`forward_ops` in ``op_s``: max(that, N op_s)
        (:func:`tpsim.sim.schedule.issue_bound`)."""
        return self.mixed_step_arrays(np.array([p[0] for p in chunks], float),
                                      np.array([p[1] for p in chunks], float), decode_seqs,
                                      decode_kv, outputs, op_s, queries)

    def mixed_step_arrays(self, c, s, decode_seqs: int, decode_kv: float, outputs: int,
                          op_s: float = 0.0, queries: int = 1) -> float:
        """:meth:`mixed_step_s` of the chunks c_j after s_j cached tokens given as arrays."""
        g = min(self.split, len(c) + decode_seqs)
        if len(c) == 1:                               # one chunk: its numbers as floats
            c_sum = c_max = float(c[0])
            att_sum = att_max = self._looked_up(self._chunk_memo, (c_sum, float(s[0])),
                                                self.attention)
        else:
            c, s = np.asarray(c, float), np.asarray(s, float)
            att = self.attention(c, s)
            c_sum, c_max, att_sum, att_max = c.sum(), c.max(), att.sum(), att.max()
        tokens = max((c_sum + decode_seqs * queries) / g, c_max)
        lin, ends = self._looked_up(self._step_memo, (tokens, outputs / g), self._lin_ends)
        layer = lin + max(att_sum / g, att_max) + self.k * decode_kv / g
        return issue_bound(float(self.layers * layer + ends), self.forward_ops, op_s)

    def _lin_ends(self, tokens, outputs) -> tuple:
        """(P(T), E(T) + O(n) + R(T)) of a step of ``tokens`` and ``outputs``."""
        return self.t_table(tokens), self.ends(tokens, outputs)

    @staticmethod
    def _looked_up(memo: dict, key: tuple, f):
        """f(*key), kept in ``memo`` (up to MEMO entries): an engine's steps repeat a few
        shapes (a prompt after none cached, the same batch)."""
        out = memo.get(key)
        if out is None:
            out = f(*key)
            if len(memo) < MEMO:
                memo[key] = out
        return out


def same_layer_prices(a, b) -> bool:
    """Whether two servers (:class:`tpsim.serving.infer._Server`) price every layer and end
    alike: the same model, topology, splits but pp, dtypes and switches, the same templates,
    and each group the templates' collectives run on the same ranks inside one unit of the
    innermost level, where its placement's spans do not read the job's size
    (:func:`tpsim.cluster.placement.spans`). The pipeline depth then changes no layer's
    price, only the stage transfers."""
    keys = ("m", "topo", "tp", "ep", "dtype", "act", "kv_dtype", "allreduce", "host_s", "mix",
            "decode_attention")
    if any(getattr(a, k) != getattr(b, k) for k in keys):
        return False
    if a.pp == b.pp:
        return True
    unit = a.topo.levels[0].size
    tg = a.tp > 1
    tpls = [t for _, *tpls, _ in a.mix for t in tpls] + [embedding_template(tg),
                                                         output_template(tg)]
    for name in {n.group for t in tpls for n in t.nodes if n.group}:
        ga, gb = a.pricing.group(name), b.pricing.group(name)
        last = ga.first + (ga.size - 1) * ga.stride
        if (ga.size, ga.stride, ga.first) != (gb.size, gb.stride, gb.first) \
                or ga.first // unit != last // unit:
            return False
    return True


MEMO = 1 << 16       # the entries a StepModel keeps of each kind of its steps' parts
CACHE_LO, CACHE_HI = 1024, 1024 + 4096    # cache lengths between which a slope is measured


def cache_slope(f, b: int) -> float:
    """A decode's time per cached token per sequence at ``b`` sequences: (f(b, CACHE_HI) -
    f(b, CACHE_LO)) / (b (CACHE_HI - CACHE_LO)), at least 0; f(b, kv_len) a step or layer time
    affine in the cache (the attention's reads)."""
    return max(f(b, CACHE_HI) - f(b, CACHE_LO), 0.0) / (b * (CACHE_HI - CACHE_LO))


def direct_prefill_s(srv, prompt: int) -> float:
    """One sequence's whole prompt priced directly: n_layers x the prefill layer (its phase
    time) + the ends, as :func:`tpsim.serving.infer.prefill_pass` prices it at pp = 1."""
    return prefill_pass(srv, 1, prompt)[0].time_s


def direct_decode_s(srv, b: int, kv_len: int) -> float:
    """A decode step of ``b`` sequences at cache length ``kv_len`` priced directly."""
    return srv.m.layers * srv.decode_layer(b, kv_len).time_s + srv.ends(b, 1).time_s


__all__ = ["StepModel", "grid", "graph_batch", "cache_slope", "CACHE_LO", "direct_prefill_s",
           "direct_decode_s"]
