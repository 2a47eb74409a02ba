"""The routed experts' biases (gpt-oss: ``--add-bias-linear``), as Megatron-core's TEGroupedMLP
adds them (``megatron/core/transformer/moe/experts.py``) on Transformer Engine's GroupedLinear
(``transformer_engine/pytorch/module/grouped_linear.py``).

fc1's bias (n_in f_e / etp per expert) costs no kernel of its own: GroupedLinear adds it in
the grouped GEMM's epilogue (``use_bias``) and reduces its gradient in the weight-gradient
GEMM's epilogue (``grad=True, use_bias``; under FP8 in the gradient's cast, ``bgrad_quantize``).

fc2's bias (h per expert) is skipped by the GEMM (``skip_bias_add=True``) and added by
``TEGroupedMLP._apply_packed_bias`` in PyTorch eager, scaled by each row's router probability
(the activation's output already is): ``flat_output + repeat_interleave(bias.float()) *
probs``, cast back. Per element of the R x h routed rows, with B the activations' bytes and
F = 4 (fp32):

forward   repeat_interleave (F written), the product (F read, F written), the sum (B + F
          read, F written), the cast (F read, B written):            24 + 2B bytes
backward  autograd in reverse: the cast (B, F), the output's gradient cast back to B (F, B),
          the repeated bias's gradient g p (F, F), the probabilities' g b and its sum over h
          (2F read, F written, F read), repeat_interleave's sum per expert (F read):
                                                                     36 + 2B bytes
saved     the repeated fp32 bias (the product's other factor):      F bytes

Each kernel is timed with its launch (:func:`tpsim.cost.compute.elementwise_time`): the
26.04 container's per-expert ``_apply_bias`` runs 2 E_l + 2 in forward and 6 E_l + 3 in
backward (:mod:`tpsim.layer.moe_loops` counts them; ``_apply_packed_bias`` has the same bytes).

The biases take no gradient accumulation fusion: autograd hands each expert bias's gradient
to Megatron-core's DDP hook (``distributed/distributed_data_parallel.py``
``_make_backward_post_hook``: ``param.main_grad.add_(param.grad.data)``), one add per bias and
micro-batch, 2 E_l kernels over E_l (n_in f_e / etp + h) elements reading the 16-bit gradient
and reading and writing the main gradient (B + 8 bytes, as :func:`tpsim.layer.linears.
grad_accumulate`), each hook's add a bare call on the host.

The router's bias (E) and the attention's (:mod:`tpsim.layer.linears`) are the dense
linears'; the router's costs T E elements, left out as its top-k's are not; so are their
DDP hooks' adds (and the norms' weights'), one each a layer, as in every model.
"""
from __future__ import annotations

from ..cost.compute import FP32_ACCUMULATE_BYTES
from .moe_loops import (apply_bias_bwd_launches, apply_bias_kernels, apply_bias_loop_ops,
                        bias_hooks, local_experts)
from .template import Builder

F32 = 4
FORWARD_BYTES = 24      # + 2B, an element of the R x h rows (module docstring)
BACKWARD_BYTES = 36     # + 2B
SAVED_BYTES = F32


def bias_fwd(B: Builder, name: str, x, rows) -> str:
    """fc2's eager bias add after the grouped GEMM ``name`` (output ``x``) on ``rows(d)`` x h:
    (24 + 2B) rows h bytes, keeping the fp32 repeated bias (4 rows h); its host's loop over
    the experts as :mod:`tpsim.layer.moe_loops` counts it."""
    return B.eltwise(f"{name}.bias", lambda d: (rows(d), d.h, (FORWARD_BYTES + 2 * d.bpe)
                                                * rows(d) * d.h), (x,),
                     saved=lambda d: SAVED_BYTES * rows(d) * d.h, loop_ops=apply_bias_loop_ops,
                     kernels=apply_bias_kernels)


def bias_bwd(B: Builder, name: str, grad, rows) -> str:
    """Its backward from the gradient ``grad`` of fc2's biased output: (36 + 2B) rows h
    bytes; returns the gradient of the GEMM's output. Its C++ autograd kernels per expert as
    :mod:`tpsim.layer.moe_loops` counts them."""
    return B.eltwise(f"bwd.{name}.bias", lambda d: (rows(d), d.h, (BACKWARD_BYTES + 2 * d.bpe)
                                                    * rows(d) * d.h), (grad,),
                     forward_of=f"fwd.{name}.bias", launches=apply_bias_bwd_launches,
                     kernels=apply_bias_bwd_launches)


def bias_grad_accumulate(B: Builder, fc1_width, dep) -> str:
    """The DDP hook's adds of the 2 E_l expert biases' gradients into the main gradient
    (module docstring), after fc1's weight gradient ``dep`` (whose epilogue makes fc1's);
    ``fc1_width(d)``: n_in f_e / etp. E_l (n_in f_e / etp + h) (B + 8) bytes in 2 E_l
    kernels; on the host 2 E_l bare calls, no Python-level op."""
    def size(d):
        n = local_experts(d) * (fc1_width(d) + d.h)
        return 1, n, n * (d.bpe + FP32_ACCUMULATE_BYTES)
    return B.eltwise("bwd.experts.bias.grad_accumulate", size, (dep,), forward_of="fwd.experts.fc1",
                     kernels=bias_hooks, host_ops=0, loop_ops=bias_hooks)
