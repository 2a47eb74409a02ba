"""The ends of the model on one TP rank: the vocab-parallel embedding and the output layer with
its loss, kernel by kernel as Megatron-core runs them.

Megatron's ``VocabParallelEmbedding`` holds vocab/tp rows per rank: with tp > 1 each rank masks
the token ids outside its rows (six small kernels on the b*s ids), looks its tokens up, zeroes the
rows it does not own, and an all-reduce (reduce-scatter with SP) sums the partial embeddings;
the (b, s, h) result is transposed to (s, b, h). Its backward is PyTorch's dense embedding
backward: sort the ids, zero a vocab/tp x h gradient, scatter-add the b*s rows, and Megatron's
DDP hook adds that gradient into the main gradient (the embedding is not covered by
gradient-accumulation fusion).

The output layer is a column-parallel GEMM over the (padded) vocabulary followed by
Megatron-core's vocab-parallel cross-entropy (``tensor_parallel/cross_entropy.py``), whose
kernels each stream the (b*s, vocab/tp) logits: the fp32 upcast, the row max, the in-place
subtraction, exp, the row sum and the in-place division into the softmax it keeps; between
them three all-reduces of b*s fp32 values (max, target logit, sum of exponentials) and ten small
kernels on the b*s targets (masking and gathering the target logits). The loss function
(pretrain_gpt's ``loss_func``: mask, sum, average) adds six small kernels forward and three
backward. Backward multiplies the softmax (with the target's one subtracted) by the output
gradient and casts it back to the logits' dtype.

Transformer Engine's fused cross-entropy (``cross_entropy="te"``: Megatron-core's
``--cross-entropy-loss-fusion --cross-entropy-fusion-impl te``, which Megatron-Bridge's Llama
recipes set; ``compute_language_model_loss`` in ``models/common/language_module``) is two Triton
kernels over the logits in their own dtype (``transformer_engine/pytorch/triton/cross_entropy.py``
as of TE 2.7-2.14): ``online_softmax_kernel`` reads them once for each row's max, sum of
exponentials and target logit (3 fp32 per row), an all-gather of those over TP, and
``cross_entropy_kernel`` reads them again and writes the loss gradient over them in place (what
it keeps for backward: b*s x vocab/tp x bytes per element, not the fp32 softmax; TE v2.18,
PR #3193 of July 2026, keeps an fp32 gradient instead); besides, four
small kernels (zeroing the loss, the row statistics and the count; clamping the count). Backward
is ``element_mul_kernel``, the stored gradient times the per-token output gradient, in place.

flash-attn's fused cross-entropy (``cross_entropy="xentropy"``: ``flash_attn.losses.
cross_entropy.CrossEntropyLoss`` on its ``xentropy_cuda_lib``, apex's softmax_xentropy kernel,
``csrc/xentropy/xentropy_kernel.cu`` as of flash-attn v1.0.9; llm-foundry v0.3.0's default
``loss_fn: fused_crossentropy``) is one kernel each way over the logits in their own dtype: the
forward reads each row twice (``ilpReduce`` for the max, again for the sum of exponentials) and
writes the loss and the log-sum-exp (fp32 per row), keeping the logits for the backward; the
backward reads them once and writes the gradient (``inplace_backward`` off: a new tensor).
Around it, small kernels on the b*s tokens: the targets shifted (``torch.roll`` and the last
set to -100, Composer's ``get_targets``), the ignored losses zeroed (compare, fill) and the
mean over the counted tokens (sum, compare, sum, divide); backward: the mean's gradient, made
contiguous, the ignored zeroed. With tp > 1 each rank all-gathers the row log-sum-exps and
all-reduces the losses (b*s fp32 each); the small kernels that mask the labels and combine the
log-sum-exps then are not counted (llm-foundry runs no TP).

Training metrics (``metrics``: Composer 0.16's ``Trainer._train_microbatch`` calls
``_eval_train_metrics`` after every micro-batch's backward; llm-foundry v0.3.0's MPT declares
two, ``LanguageCrossEntropy`` and ``LanguagePerplexity``, ``composer/metrics/nlp.py``) are each a
``torch.nn.CrossEntropyLoss(reduction='sum')`` over the kept logits, without gradient, under
the autocast context: autocast runs ``cross_entropy`` in fp32 (PyTorch's autocast op list), so
each copies the 16-bit logits to fp32, then ``log_softmax`` over rows of vocab/tp fp32 values
(``aten/src/ATen/native/cuda/SoftMax.cu``: a row longer than a block's 48 KiB of shared memory
runs ``cunn_SoftMaxForward``, which reads the row three times, for the max, the sum of
exponentials and the output, and writes it once), then small kernels on the b*s tokens
(``nll_loss`` of the targets, the count of those not ignored, the two running sums); once for
all of them, ``eval_forward``'s shift of the labels (clone, copy, fill). Their fp32 copies
live after the backward, when the activations are freed: not counted in memory.
Built as :class:`~tpsim.layer.template.Template` s
like a layer; priced and scheduled the same way: each small kernel costs at least its launch and
one host dispatch, which is what the model's ends cost when the model is small.
"""
from __future__ import annotations

from ..base.memo import Memo
from .dims import sp_reduce_op
from .linears import column_parallel_bwd
from ..spec.precision import precision
from .template import Builder, Template

CE_REDUCTIONS = ("max", "target", "sum-exp")   # Megatron's _VocabParallelCrossEntropy
FP32 = 4
ID_MASK_KERNELS = 6         # VocabParallelEmbedding: <, >=, |, clone, -, index_put on the ids
SORT_KERNELS = 6            # embedding_dense_backward: sort the ids, segment offsets
CE_TARGET_KERNELS = 10      # calculate_predicted_logits: mask (3), masked target (3), arange, gather, clone, zero
CE_LOSS_KERNELS = 2         # log(sum_exp) - predicted
CE_GRAD_KERNELS = 6         # backward: arange, mask.float, 1 - mask, gather, sub, index_put
LOSS_FWD_KERNELS = 6        # loss_func: float, mask float, mask sum, mul, sum, cat
LOSS_BWD_KERNELS = 3
TE_CE_SMALL_KERNELS = 4     # TE's fused cross-entropy: zeros (loss, row statistics, count), clamp
XENTROPY_TARGET_KERNELS = 2      # flash-attn's: roll the labels, set the last to -100
XENTROPY_LOSS_FWD_KERNELS = 6    # labels == ignored, masked_fill; mean: sum, !=, sum, div
XENTROPY_LOSS_BWD_KERNELS = 4    # the mean's gradient, contiguous, labels == ignored, masked_fill
LABEL_SHIFT_KERNELS = 3          # Composer's eval_forward: labels[:, 1:].clone(), copy, fill -100
METRIC_TOKEN_KERNELS = 5         # a metric's nll_loss, != ignored, sum, and its two running sums

# Built once per switch set and kept: other memos key on a template's identity.
_TEMPLATES = Memo("embedding and output templates", 256, lru=True)


def small_kernels(B: Builder, name: str, count: int, dep) -> str:
    """``count`` small kernels in a row over the b*s tokens (ids, targets, per-token losses):
    each reads and writes b*s 4-byte values."""
    for i in range(count):
        dep = B.eltwise(f"{name}{i}", lambda d: (d.T, 1, 2 * d.T * FP32), (dep,))
    return dep


def main_grad_bytes(d) -> int:
    """Bytes per element of the main gradient the weights' gradients accumulate into."""
    return precision(d.dtype).grads


def embedding_template(tp_group: bool, sp: bool, dropout: bool) -> Template:
    """Forward: (tp > 1: mask the ids) lookup (read b*s rows, write them), (tp > 1: zero the rows
    of other ranks), partial-sum collective, transpose to (s, b, h), optional dropout.

    Backward: dropout backward, (SP: all-gather of the gradient), transpose, (tp > 1: zero the
    masked rows), the dense weight gradient: sort the ids, zero vocab/tp x h, scatter-add b*s
    rows (read the gradient, read and write the rows: 3 b s h bpe), then add it into the main
    gradient (read it, read and write the main gradient: vocab/tp h (bpe + 2 main_grad_bytes)).
    """
    return _TEMPLATES.get(("embedding", tp_group, sp, dropout), _embedding, tp_group, sp,
                          dropout)


def _embedding(tp_group: bool, sp: bool, dropout: bool) -> Template:
    B = Builder(sp)
    B.block = "embedding"
    rows = lambda d, rw: (d.T, d.h, rw * d.T * d.h * d.bpe)   # noqa: E731
    x = small_kernels(B, "fwd.embedding.ids", ID_MASK_KERNELS, None) if tp_group else None
    x = B.eltwise("fwd.embedding", lambda d: rows(d, 2), (x,))
    if tp_group:
        x = B.eltwise("fwd.embedding.mask", lambda d: rows(d, 1), (x,))
    op = sp_reduce_op(sp)
    x = B.collective(f"fwd.embedding.{op}", op, (x,))
    x = B.eltwise("fwd.embedding.transpose", lambda d: (d.Tn, d.h, 2 * d.Tn * d.h * d.bpe), (x,))
    dropout_size = lambda d: (d.Tn, d.h, d.Tn * d.h * (2 * d.bpe + 1))   # noqa: E731
    if dropout:
        x = B.eltwise("fwd.embedding.dropout", dropout_size, (x,), saved=lambda d: d.Tn * d.h)
    B.phase = "backward"
    if dropout:
        x = B.eltwise("bwd.embedding.dropout", dropout_size, (x,),
                      forward_of="fwd.embedding.dropout")
    if sp:
        x = B.collective("bwd.embedding.all-gather", "all-gather", (x,),
                         forward_of="fwd.embedding.reduce-scatter")
    x = B.eltwise("bwd.embedding.transpose", lambda d: rows(d, 2), (x,),
                  forward_of="fwd.embedding.transpose")
    if tp_group:
        x = B.eltwise("bwd.embedding.mask", lambda d: rows(d, 1), (x,),
                      forward_of="fwd.embedding.mask")
    x = small_kernels(B, "bwd.embedding.sort", SORT_KERNELS, x)
    table = lambda d, per: (d.vocab, d.h, d.vocab * d.h * per)   # noqa: E731
    x = B.eltwise("bwd.embedding.zero", lambda d: table(d, d.bpe), (x,),
                  forward_of="fwd.embedding")
    x = B.eltwise("bwd.embedding", lambda d: rows(d, 3), (x,), forward_of="fwd.embedding")
    B.eltwise("bwd.embedding.main_grad", lambda d: table(d, d.bpe + 2 * main_grad_bytes(d)),
              (x,), forward_of="fwd.embedding")
    return B.compile({"tp": 2 if tp_group else 1})


def _ce_reduction(d):
    """One of the cross-entropy's all-reduces: b*s fp32 values."""
    return d.T * FP32, (d.T,), "fp32"


def _logits(d, per: float):
    """A pass over the (b*s, vocab/tp) logits moving ``per`` bytes per element."""
    return d.T, d.vocab, d.T * d.vocab * per


def _cross_entropy_fwd(B: Builder, x) -> str:
    """Megatron-core's vocab-parallel cross-entropy forward, kernel by kernel (module doc)."""
    name = "fwd.cross_entropy"
    x = B.eltwise(f"{name}.float", lambda d: _logits(d, d.bpe + FP32), (x,))
    x = B.eltwise(f"{name}.max", lambda d: _logits(d, FP32), (x,))
    x = B.collective(f"{name}.max.all-reduce", "all-reduce", (x,), size=_ce_reduction)
    x = B.eltwise(f"{name}.sub", lambda d: _logits(d, 2 * FP32), (x,))
    x = small_kernels(B, f"{name}.target", CE_TARGET_KERNELS, x)
    x = B.eltwise(f"{name}.exp", lambda d: _logits(d, 2 * FP32), (x,))
    x = B.eltwise(f"{name}.sum", lambda d: _logits(d, FP32), (x,))
    for r in CE_REDUCTIONS[1:]:
        x = B.collective(f"{name}.{r}.all-reduce", "all-reduce", (x,), size=_ce_reduction)
    x = small_kernels(B, f"{name}.loss", CE_LOSS_KERNELS, x)
    x = B.eltwise(name, lambda d: _logits(d, 2 * FP32), (x,),
                  saved=lambda d: d.T * d.vocab * FP32)       # the softmax, kept for backward
    return small_kernels(B, "fwd.loss", LOSS_FWD_KERNELS, x)


def _cross_entropy_bwd(B: Builder, x) -> str:
    x = small_kernels(B, "bwd.loss", LOSS_BWD_KERNELS, x)
    x = small_kernels(B, "bwd.cross_entropy.target", CE_GRAD_KERNELS, x)
    x = B.eltwise("bwd.cross_entropy", lambda d: _logits(d, 2 * FP32), (x,),
                  forward_of="fwd.cross_entropy")
    return B.eltwise("bwd.cross_entropy.float", lambda d: _logits(d, FP32 + d.bpe), (x,),
                     forward_of="fwd.cross_entropy.float")


def _te_cross_entropy_fwd(B: Builder, x) -> str:
    """Transformer Engine's fused cross-entropy forward: 2 reads and 1 write of the logits in
    their dtype, an all-gather of 3 fp32 per row (module doc)."""
    name = "fwd.cross_entropy"
    x = small_kernels(B, f"{name}.zero", TE_CE_SMALL_KERNELS, x)
    x = B.eltwise(f"{name}.online_softmax", lambda d: _logits(d, d.bpe), (x,))
    x = B.collective(f"{name}.all-gather", "all-gather", (x,),
                     size=lambda d: (3 * d.T * FP32 * d.tp, (3 * d.T,), "fp32"))
    x = B.eltwise(name, lambda d: _logits(d, 2 * d.bpe), (x,),
                  saved=lambda d: d.T * d.vocab * d.bpe)      # the gradient, in place
    return small_kernels(B, "fwd.loss", LOSS_FWD_KERNELS, x)


def _te_cross_entropy_bwd(B: Builder, x) -> str:
    x = small_kernels(B, "bwd.loss", LOSS_BWD_KERNELS, x)
    return B.eltwise("bwd.cross_entropy", lambda d: _logits(d, 2 * d.bpe), (x,),
                     forward_of="fwd.cross_entropy")


def _xentropy_fwd(B: Builder, x) -> str:
    """flash-attn's fused cross-entropy forward: 2 reads of the logits in their dtype, which it
    keeps; with tp > 1 an all-gather and an all-reduce of b*s fp32 (module doc)."""
    name = "fwd.cross_entropy"
    x = small_kernels(B, f"{name}.targets", XENTROPY_TARGET_KERNELS, x)
    x = B.eltwise(name, lambda d: _logits(d, 2 * d.bpe), (x,),
                  saved=lambda d: d.T * d.vocab * d.bpe)      # the logits, kept
    x = B.collective(f"{name}.lse.all-gather", "all-gather", (x,),
                     size=lambda d: (d.T * FP32 * d.tp, (d.T,), "fp32"))
    x = B.collective(f"{name}.loss.all-reduce", "all-reduce", (x,), size=_ce_reduction)
    return small_kernels(B, "fwd.loss", XENTROPY_LOSS_FWD_KERNELS, x)


def _xentropy_bwd(B: Builder, x) -> str:
    x = small_kernels(B, "bwd.loss", XENTROPY_LOSS_BWD_KERNELS, x)
    return B.eltwise("bwd.cross_entropy", lambda d: _logits(d, 2 * d.bpe), (x,),
                     forward_of="fwd.cross_entropy")


def _train_metrics(B: Builder, x, count: int) -> str:
    """``count`` metric cross-entropies over the logits, no gradient (module doc): each an fp32
    copy (b*s x vocab x (bpe + 4) bytes), log_softmax (3 reads and 1 write of the fp32 copy)
    and METRIC_TOKEN_KERNELS small kernels; LABEL_SHIFT_KERNELS small kernels before them."""
    x = small_kernels(B, "bwd.train_metrics.labels", LABEL_SHIFT_KERNELS, x)
    for i in range(count):
        name = f"bwd.train_metric{i}"
        x = B.eltwise(f"{name}.float", lambda d: _logits(d, d.bpe + FP32), (x,))
        x = B.eltwise(f"{name}.log_softmax", lambda d: _logits(d, 4 * FP32), (x,))
        x = small_kernels(B, name, METRIC_TOKEN_KERNELS, x)
    return x


CROSS_ENTROPY = {"unfused": (_cross_entropy_fwd, _cross_entropy_bwd),
                 "te": (_te_cross_entropy_fwd, _te_cross_entropy_bwd),
                 "xentropy": (_xentropy_fwd, _xentropy_bwd)}


def output_template(tp_group: bool, sp: bool, norm: bool = True,
                    cross_entropy: str = "unfused", metrics: int = 0) -> Template:
    """Final norm, (SP all-gather), logits GEMM (b*s x h) @ (h x V/tp), cross-entropy and loss
    (module docstring: Megatron-core's unfused kernels, or Transformer Engine's fused ones with
    ``cross_entropy="te"``); backward.

    The logits GEMM is a column-parallel linear: its backward is that of a layer's (dgrad, the
    all-reduce or SP reduce-scatter of the input gradient overlapping the wgrad, SP's re-gather
    of the input). ``d.vocab`` is the padded vocabulary per rank. ``metrics``: the training
    metrics' cross-entropies after the backward (:func:`_train_metrics`).
    """
    return _TEMPLATES.get(("output", tp_group, sp, norm, cross_entropy, metrics), _output,
                          tp_group, sp, norm, cross_entropy, metrics)


def _output(tp_group: bool, sp: bool, norm: bool, cross_entropy: str, metrics: int) -> Template:
    ce_fwd, ce_bwd = CROSS_ENTROPY[cross_entropy]
    B = Builder(sp)
    B.block = "output"
    x = None
    norm_size = lambda d, rw: (d.Tn, d.h, rw * d.Tn * d.h * d.bpe)   # noqa: E731
    if norm:
        x = B.eltwise("fwd.final_norm", lambda d: norm_size(d, 2),
                      saved=lambda d: d.Tn * d.h * d.bpe)
    if sp:
        x = B.collective("fwd.logits.all-gather", "all-gather", (x,))
    # keeps its 16-bit input (the output layer stays bf16 under FP8, as its GEMM does)
    x = B.gemm("fwd.logits", lambda d: (d.T, d.vocab, d.h), (x,),
               saved=lambda d: d.Tn * d.h * d.bpe)
    x = ce_fwd(B, x)
    B.phase = "backward"
    x = ce_bwd(B, x)
    x, _ = column_parallel_bwd(B, "logits", lambda d: (d.T, d.vocab, d.h), (x,), bias=False,
                               is_linear=False)
    if norm:
        x = B.eltwise("bwd.final_norm", lambda d: norm_size(d, 3), (x,),
                      forward_of="fwd.final_norm")
    if metrics:
        _train_metrics(B, x, metrics)
    return B.compile({"tp": 2 if tp_group else 1})
