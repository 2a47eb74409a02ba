"""The multi-token-prediction module's own ops on one TP rank, one depth, as Megatron-core's
``MultiTokenPredictionLayer`` runs them (megatron/core/transformer/multi_token_prediction.py,
``_concat_embeddings``; DeepSeek-V3 report, section 2.2).

Forward: the token ids, labels and loss mask shifted one place (``roll_tensor``: a roll and a
fill each, on the b*s tokens); an RMSNorm of the shifted tokens' embedding (``enorm``) and one
of the previous depth's hidden state (``hnorm``), each over the Tn tokens of the rank (SP:
b*s/tp); their concatenation (2h wide: read both, write it); ``eh_proj``, a column-parallel
Transformer Engine linear 2h -> h without bias (``gather_output=False``): with SP its 2h-wide
input all-gathered along the sequence first (under FP8 cast first, as Transformer Engine
gathers the cast input, the cast's amax all-reduced over TP first under current scaling and
NVFP4: :func:`tpsim.layer.linears.amax_reduce`), the (b*s x 2h) @ (2h x h/tp) GEMM; then
``gather_from_tensor_model_parallel_region``: an all-gather of the b*s x h/tp outputs over TP
and the copy that lays the gathered blocks side by side along the hidden dimension
(``_gather_along_last_dim``: ``torch.cat`` of the gathered list, b*s x h); with SP
``scatter_to_sequence_parallel_region`` keeps this rank's b*s/tp rows (a contiguous slice, no
kernel). The transformer layer, the final norm, the shared output layer and its loss that
follow are the model's own (:mod:`tpsim.layer.graph`, :mod:`tpsim.layer.embedding`), priced
once more per depth (:func:`tpsim.training.step.mtp_ends`). ``MultiTokenPredictionBlock``
concatenates the decoder's hidden state and each depth's along the sequence for the losses
(``torch.cat(hidden_states_list, dim=0)``: (1 + D) Tn h read and written once; priced as two
Tn h blocks a depth, exact at DeepSeek-V3's D = 1); the losses take contiguous slices of it.

Backward: with SP the scatter's conjugate, an all-gather of the b*s x h gradient along the
sequence; the gather's conjugate keeps this rank's h/tp columns (``_split_along_last_dim``:
``.contiguous()``, a copy of b*s x h/tp); eh_proj's backward, a column-parallel linear's
(:func:`tpsim.layer.linears.column_parallel_bwd`: dgrad, the all-reduce or SP reduce-scatter
of the 2h-wide input gradient beside the wgrad GEMM, SP's re-gather of the saved 2h-wide input
shard); the concatenation's gradient, two strided slices (autograd's ``cat`` backward) made
contiguous by the norms' backward (Transformer Engine's RMSNorm op:
``grad_output.contiguous()``, ``transformer_engine/pytorch/ops/basic/rmsnorm.py``; read and
write 2 Tn h); the two norms' backward (read x and dy, write dx); the hidden state's gradient
added to the one the main output layer sends it (autograd's sum: read 2, write 1, Tn h).

Kept for backward: each norm its input (Tn h: the shifted tokens' embedding; the decoder's or
the previous depth's output, a tensor apart from the concatenation the output layer's passes
keep); eh_proj its 2h-wide input (SP: this rank's shard) in the GEMM's dtype. Under TP communication
overlap eh_proj's gather is not overlapped (Megatron names its buffer ``mtp_eh_proj``;
Transformer Engine's default overlap configuration lists no such GEMM).
"""
from __future__ import annotations

from ..base.memo import Memo
from .embedding import small_kernels
from .linears import column_parallel_bwd, fp8_cast
from .template import Builder, Template

ROLL_KERNELS = 6        # roll_tensor of the input ids, labels and loss mask: roll, fill each
WIDTH = 2               # eh_proj's input: [norm(embedding); norm(hidden)], 2h wide

_TEMPLATES = Memo("multi-token-prediction templates", 64, lru=True)


def mtp_template(tp_group: bool, sp: bool, fp8: str = "") -> Template:
    """One depth's enorm, hnorm, concatenation, eh_proj and TP gather, forward and backward
    (module docstring); ``fp8``: the linears' quantizer (:func:`tpsim.spec.precision.quantizer`;
    "": 16-bit)."""
    return _TEMPLATES.get((tp_group, sp, fp8), _mtp, tp_group, sp, fp8)


def _rows(d, width: int, rw: int):
    """A memory-bound pass over the rank's Tn tokens, ``width`` h wide, moving ``rw`` copies."""
    return d.Tn, width * d.h, rw * d.Tn * width * d.h * d.bpe


def _eh_proj(d):
    """eh_proj's GEMM: (b*s x 2h) @ (2h x h/tp)."""
    return d.T, d.h // d.tp, WIDTH * d.h


def _wide_input(d):
    """eh_proj's gathered (b*s, 2h) input, in the linears' GEMM dtype."""
    return d.T * WIDTH * d.h * d.gemm_bpe, (d.T, WIDTH * d.h), d.gemm_dtype


def _wide_grad(d):
    """eh_proj's (b*s, 2h) input gradient, reduced over TP in the activations' dtype."""
    return d.T * WIDTH * d.h * d.bpe, (d.T, WIDTH * d.h), d.dtype


def _mtp(tp_group: bool, sp: bool, fp8: str) -> Template:
    B = Builder(sp, fp8)
    B.block = "mtp"
    ids = small_kernels(B, "fwd.mtp.roll", ROLL_KERNELS, None)
    e = B.eltwise("fwd.mtp.enorm", lambda d: _rows(d, 1, 2), (ids,),
                  saved=lambda d: d.Tn * d.h * d.bpe)
    h = B.eltwise("fwd.mtp.hnorm", lambda d: _rows(d, 1, 2), saved=lambda d: d.Tn * d.h * d.bpe)
    x = B.eltwise("fwd.mtp.concat", lambda d: _rows(d, WIDTH, 2), (e, h))
    x = fp8_cast(B, "fwd.eh_proj.cast", lambda d: (d.Tn, WIDTH * d.h), x, gathered=sp)
    if sp:
        x = B.collective("fwd.eh_proj.all-gather", "all-gather", (x,), size=_wide_input)
    x = B.gemm("fwd.eh_proj", _eh_proj, (x,), linear=True,
               saved=lambda d: d.Tn * WIDTH * d.h * d.gemm_bpe)
    if tp_group:    # one rank: the gather and its split return their input
        x = B.collective("fwd.mtp.gather", "all-gather", (x,))
        x = B.eltwise("fwd.mtp.gather.cat", lambda d: (d.T, d.h, 2 * d.T * d.h * d.bpe), (x,))
    x = B.eltwise("fwd.mtp.block_cat", lambda d: _rows(d, 2, 2), (x,))
    B.phase = "backward"
    g = B.collective("bwd.mtp.scatter", "all-gather", (x,), forward_of=x) if sp else x
    if tp_group:
        g = B.eltwise("bwd.mtp.split", lambda d: (d.T, d.h // d.tp, 2 * d.T * d.h // d.tp
                                                  * d.bpe), (g,), forward_of=x)
    g, _ = column_parallel_bwd(B, "eh_proj", _eh_proj, (g,), bias=False,
                               input_size=_wide_input, grad_size=_wide_grad)
    g = B.eltwise("bwd.mtp.concat", lambda d: _rows(d, WIDTH, 2), (g,),
                  forward_of="fwd.mtp.concat")
    B.eltwise("bwd.mtp.enorm", lambda d: _rows(d, 1, 3), (g,), forward_of="fwd.mtp.enorm")
    g = B.eltwise("bwd.mtp.hnorm", lambda d: _rows(d, 1, 3), (g,), forward_of="fwd.mtp.hnorm")
    B.eltwise("bwd.mtp.hidden_add", lambda d: _rows(d, 1, 3), (g,))
    return B.compile({"tp": 2 if tp_group else 1})
