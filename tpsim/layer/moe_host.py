"""The host work of a training MoE layer beyond its priced kernels: the small Python-level torch
ops Megatron-core issues around them, counted from the code.

tpsim's host model (:func:`tpsim.sim.schedule.issue_bound`) charges ``host_dispatch_s`` per op
the framework dispatches from Python (a node's ``host_ops``) and ``host_launch_s`` per kernel a
C++ loop launches inside one (a node's ``launches``, :mod:`tpsim.sim.launches`). The MoE slot's
nodes (:mod:`tpsim.layer.moe`, :mod:`tpsim.layer.moe_ep`, :mod:`tpsim.layer.moe_flex`) are its
kernels and collectives; around them Megatron-core issues ops whose GPU time is a few
microseconds (tensors of E or T x E elements) but whose host time is that of any other op. They
are counted here, per MoE layer and micro-batch, from Megatron-LM (``megatron/core/transformer/
moe``, commit d98e8a64, August 2026) and Transformer Engine (``transformer_engine/pytorch``,
commit d0067d0) with the settings every Megatron-Bridge performance recipe of
``bench/moe_published.py`` uses: ``moe_router_fusion``, ``moe_permute_fusion``, grouped GEMM,
no token dropping, no z-loss, no input jitter.

Each forward op counted is one Python-level call (one ``host_dispatch_s``); in backward, an
autograd Function written in Python (Transformer Engine's, Megatron-core's) is one Python-level
call, while an autograd node of a plain torch op runs in the C++ engine and costs one kernel
launch (``host_launch_s``). tpsim's own backward ops each keep one ``host_dispatch_s``, as the
dense fit of ``host_dispatch_us`` priced them.

Router (``router.py`` ``TopKRouter.forward`` / ``routing``; tpsim's ops: the gating GEMM
``fwd.router`` and the fused top-k ``fwd.router.topk``), with an auxiliary loss
(``load_balancing`` aux_loss or seq_aux_loss, :class:`tpsim.spec.model.ModelConfig`)::

    forward   moe_utils.compute_routing_scores_for_aux_loss (TE fused_compute_score_for_moe_aux_
              loss), get_tokens_per_expert_and_token_count's routing_map.sum, its all-reduce on
              TP x CP (a collective: ``fwd.router.aux.all-reduce``), switch_load_balancing_loss_
              func (TE fused_moe_aux_loss), attach_and_log_load_balancing_loss: the metrics
              tracker's aux_loss / coeff and values[layer] += (add, copy back: moe_logging.py
              MoEMetricsTracker.record), MoEAuxLossAutoScaler.apply:              7 ops
              seq_aux_loss: the loss / bsz besides:                              8 ops
    backward  the three autograd Functions (FusedAuxLoss, FusedComputeScoresForMoEAuxLoss,
              MoEAuxLossAutoScaler: Python), and the C++ sum of the logits' two gradients
              (seq_aux_loss: and the division's):            3 Python ops, 1 (2) launches

All-to-all dispatcher (``token_dispatcher.py`` ``MoEAlltoAllTokenDispatcher``; tpsim's ops:
permute, dispatch, sort, the experts, unsort, combine, unpermute)::

    preprocess       routing_map.sum(0), .long(), the input splits' sum: 3 ops; the counts'
                     gather_from_sequence_parallel_region on TP x EP (``fwd.moe.counts``, E
                     int64 a rank); the gathered counts' slice .contiguous() and three sums:
                     4 ops
    D2H              _maybe_dtoh_and_synchronize: wait_stream, four non-blocking copies to the
                     host (tokens per expert, input, output and TP splits), record_event: 6 ops;
                     the host then waits for the counts (the dispatch's ``sync``)
    permute          TE moe_permute_with_probs: make_row_id_map's three Triton kernels besides
                     the permutation (``triton/permutation.py``): 3 ops
    token_dispatch   the probabilities' own all-to-all (``fwd.moe.dispatch.probs``), and in
                     backward their gradients' (``bwd.moe.dispatch.probs``)
    sort, unsort     TE moe_sort_chunks_by_index(_with_probs): make_chunk_sort_map's kernel
                     besides the sort: 1 op each (without moe_permute_fusion: torch.split,
                     two .tolist() and torch.cat, of the probabilities too in the sort:
                     :mod:`tpsim.layer.moe_permute`); the unsort's counts .T.ravel() copy: 1 op;
                     TEGroupedMLP.forward's tokens_per_expert.tolist(): 1 op
    FP8              TEGroupedMLP's Fp8Padding of the tokens and of the probabilities and
                     Fp8Unpadding of the output (balanced counts are not multiples of 16): 3
                     Python autograd Functions forward, 3 backward

Flex dispatcher (``MoEFlexTokenDispatcher``; tpsim's ops: dispatch, sort, the experts, unsort,
combine)::

    hybridep   _HybridEPManager.dispatch: the probabilities' .float() (bf16 router), the
               received counts' .to(int64) and .sum(): 3 ops; TEGroupedMLP's
               tokens_per_expert.tolist(): 1 op (whether the counts HybridEP returns are
               still on the device, making it a wait, is inside hybrid_ep_dispatch: not
               priced as one)
    deepep     _DeepepManager.setup_metadata's torch.topk, dispatch's .float(), fused_a2a.py
               FusedDispatch's get_dispatch_layout and torch.tensor of the counts: 4 ops;
               get_permuted_hidden_states_by_experts: _indices_to_multihot (two zeros, the
               mask, indices[mask], arange, mask.sum, repeat_interleave, two index_put, probs
               [mask], .bool(): 11 ops), tokens_per_expert.sum().item(): 2, TE's permute's
               row-id map: 3, the experts' .tolist(): 1; backward: the C++ nodes of
               probs[mask], index_put, .float() and topk: 6 launches

DeepEP's indices[mask], repeat_interleave, probs[mask] and .item() read the dispatch's output on
the host: the host waits for the dispatch before issuing the sort's ops. Priced as a wait (the
sort's ``sync``) at ``host_dispatch_us`` an op, it makes Megatron-LM's MoE layer benchmark's
DeepEP forwards (``bench/moe_layer_published.py``) 1.2 ms longer than the all-to-all
dispatcher's where they are 0.3 ms longer: about 17 us an op, not a dense op's 58. That wait is
therefore not priced (the ops are, under the GPU's dispatch); a per-op host figure for these
small ops is what is missing.

Left out: the force-balanced router's RandomSTE (clone and normal_ under the RNG tracker's
fork: 2 ops, the benchmark setting ``--moe-router-force-load-balancing``), the expert bias
(DeepSeek-V3: 2 ops), HybridEP's own Python inside ``hybrid_ep_dispatch`` (DeepEP's hybrid-ep
branch, not read), the all-gather dispatcher's and the EP-1 slot's preprocessing, and the small
kernels' GPU time (microseconds each). Transformer Engine's and TEGroupedMLP's Python loops
over the local experts: :mod:`tpsim.layer.moe_loops`.
"""
from __future__ import annotations

from .moe_permute import CHUNK_SORT_OPS
from .template import Builder

# forward Python-level ops of the router's auxiliary loss, by Megatron-core's loss type
AUX_FWD = {"none": 0, "aux_loss": 7, "seq_aux_loss": 8}
AUX_BWD = {"none": 0, "aux_loss": 3, "seq_aux_loss": 3}          # Python autograd Functions
AUX_BWD_LAUNCHES = {"none": 0, "aux_loss": 1, "seq_aux_loss": 2}  # C++ autograd nodes
COUNTS_SUMS = 3          # routing_map.sum(0), .long(), the input splits' sum
GATHERED_SUMS = 4        # the gathered counts' .contiguous() and three sums
DTOH = 6                 # wait_stream, four copies to the host, record_event
ROW_ID_MAP = 3           # TE make_row_id_map's Triton kernels
CHUNK_SORT_MAP = 1       # TE make_chunk_sort_map
TOLIST = 1               # TEGroupedMLP.forward's tokens_per_expert.tolist()
RAVEL = 1                # the unsort's counts .T.ravel()
FP8_PADDING = (2, 1)     # Fp8Padding of tokens and probabilities (sort), Fp8Unpadding (unsort)
HYBRIDEP_DISPATCH = 3    # probs .float(), counts .to(int64) and .sum()
DEEPEP_DISPATCH = 4      # topk, .float(), get_dispatch_layout, torch.tensor of the counts
DEEPEP_SORT = 11 + 2 + ROW_ID_MAP + TOLIST   # multihot, sum().item(), row-id map, tolist
DEEPEP_BWD_LAUNCHES = 6  # probs[mask], index_put, .float(), topk: C++ autograd nodes


def aux_fwd_ops(B: Builder) -> int:
    """Python-level ops the auxiliary loss adds to the router's top-k forward (module
    docstring; 0 without one)."""
    return AUX_FWD[B.load_balancing]


def aux_all_reduce(B: Builder, topk: str) -> None:
    """The auxiliary loss's all-reduce of the E token counts on TP (none on one rank)."""
    if B.load_balancing != "none":
        B.collective("fwd.router.aux.all-reduce", "all-reduce", (topk,),
                     size=lambda d: _counts(d, 1))


def aux_bwd(B: Builder) -> tuple[int, int]:
    """(Python-level ops, C++ launches) the auxiliary loss adds to the top-k's backward."""
    return AUX_BWD[B.load_balancing], AUX_BWD_LAUNCHES[B.load_balancing]


def _counts(d, ranks: int):
    """E int64 token counts a rank, ``ranks`` ranks' gathered (nccl-tests' all-gather size)."""
    return ranks * d.experts * 8, (ranks, d.experts), "int64"


def counts_gather(B: Builder, topk: str) -> str:
    """The all-to-all dispatcher's gather of every EP rank's tokens per expert (module
    docstring, ``preprocess``), issued after the top-k and the counts' three sums."""
    return B.collective("fwd.moe.counts", "all-gather", (topk,), size=lambda d: _counts(d, d.ep),
                        group="ep", host_ops=1 + COUNTS_SUMS)


def alltoall_preprocess_ops() -> int:
    """Python-level ops the all-to-all dispatcher issues before its permute: the gathered
    counts' sums, the copies to the host."""
    return GATHERED_SUMS + DTOH


def alltoall_permute_ops() -> int:
    """Python-level ops of the all-to-all dispatcher's fused permute: itself, its
    preprocessing, TE's row-id map."""
    return 1 + alltoall_preprocess_ops() + ROW_ID_MAP


def sort_ops(B: Builder, dispatcher: str | None, backward: bool = False) -> int:
    """Python-level ops of the experts' sort (its forward or ``backward``) for ``dispatcher``
    (alltoall, hybridep, deepep; None: the all-gather dispatcher's, not counted: 1)."""
    if dispatcher is None:
        return 1
    pad = FP8_PADDING[0] if B.fp8 else 0
    if backward:
        return 1 + pad
    chunk = CHUNK_SORT_MAP if B.permute_fusion else 2 * CHUNK_SORT_OPS - 1
    extra = {"alltoall": chunk + TOLIST, "hybridep": TOLIST, "deepep": DEEPEP_SORT}
    return 1 + extra[dispatcher] + pad


def unsort_ops(B: Builder, dispatcher: str | None, backward: bool = False) -> int:
    """Python-level ops of the experts' unsort (forward or ``backward``; None: 1)."""
    if dispatcher is None:
        return 1
    pad = FP8_PADDING[1] if B.fp8 else 0
    chunk = CHUNK_SORT_MAP if B.permute_fusion else CHUNK_SORT_OPS - 1
    return 1 + pad + (chunk + RAVEL if dispatcher == "alltoall" and not backward else 0)


def flex_dispatch_ops(backend: str) -> int:
    """Python-level ops of the flex dispatcher's dispatch: its kernel and the Megatron-core
    ops around it (module docstring)."""
    return 1 + (DEEPEP_DISPATCH if backend == "deepep" else HYBRIDEP_DISPATCH)


def flex_dispatch_bwd_launches(backend: str):
    """The C++ autograd nodes of DeepEP's index ops (0 for HybridEP), as ``launches``."""
    n = DEEPEP_BWD_LAUNCHES if backend == "deepep" else 0
    return (lambda d: n) if n else None
