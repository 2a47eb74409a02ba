"""The Python loops over the local experts around a training MoE layer's grouped GEMMs: the
calls in them that dispatch a torch op or a C++ extension, counted from the code.

Transformer Engine's GroupedLinear (``transformer_engine/pytorch/module/grouped_linear.py``
``_GroupedLinear``), which Megatron-core's TEGroupedMLP (``megatron/core/transformer/moe/
experts.py``) runs for fc1 and fc2, keeps its E_l = E / ep experts' weights, quantizers and
input splits in Python lists. Most of its per-expert Python touches attributes only (the
quantizers' ``set_usage``, the FP8 tensors' ``update_usage``, the weights' ``main_grad``
lookups, ``cast_if_needed`` of a weight already in the activations' dtype): no torch op, not
counted. The calls that do dispatch one, per grouped GEMM (E_l each), read at Transformer
Engine v2.7 (the 25.09 container's), v2.12 (26.02) and v2.13 (26.04), which agree on them:

    forward, BF16 and FP8     none per expert a micro-batch (the weights' FP8 casts,
                              ``get_weight_workspace`` -> ``quantize_`` per expert, run on the
                              step's first micro-batch only, cached after: not counted)
    backward, BF16 and FP8    after the wgrad GEMM: ``clear_tensor_data(*inputmats)``, each
                              saved input split's storage swapped for an empty tensor
                              (``t.data = ...``; FP8: ``Float8TensorStorage.clear``, its one
                              remaining column-wise buffer), and ``handle_custom_ddp_from_
                              mcore``'s dummy weight gradient for Megatron-core's DDP, which
                              accumulates into ``main_grad`` itself (``get_dummy_wgrad``'s
                              ``.detach()``; v2.7: a ``torch.empty``):          2 ops each
    backward, per weight      after the GroupedLinear's backward returns its E_l dummy weight
                              gradients: autograd's AccumulateGrad node of each expert weight
                              (C++; ``get_dummy_wgrad``'s ``.detach()`` is a tensor no one else
                              holds, so it is stolen, not cloned: no kernel) and Megatron-core's
                              DDP post-hook on it (``distributed/distributed_data_parallel.py``
                              ``_make_backward_post_hook``, Megatron-LM 15e07a2d: Python, no
                              torch op, ``grad_added_to_main_grad`` being set; ``param.grad =
                              None``; ``register_grad_ready`` counts only on the last
                              micro-batch):                                    2 calls each
    backward with biases      fc1's bias gradients (``add_bias_linear``, gpt-oss): BF16,
                              ``general_grouped_gemm``'s ``torch.empty`` per expert; FP8,
                              ``tex.bgrad_quantize`` per expert instead of one
                              ``split_quantize``:                                1 op each

Megatron-core's TEGroupedMLP adds fc2's bias (``skip_bias_add``) in ``_apply_bias`` (commit
09cce75b, March 2026, the 26.04 container's era; replaced by the packed ``_apply_packed_bias``
in August 2026, whose memory traffic :mod:`tpsim.layer.moe_bias` prices): ``torch.cat([t + b *
p for t, b, p in zip(torch.split(out, counts), biases, torch.split(probs, counts))])`` then
``.view`` and ``.to``: 2 ops per expert besides the bias node's own op, and 4 more (the two
splits, the view, the cast), launching 2 kernels per expert, the cat's and the cast's; in
backward the C++ autograd engine (PyTorch's ``validate_outputs`` reduces and casts each input's
gradient to its shape and dtype) runs the cast's gradient up to fp32, then per expert the sum's
gradient cast to the 16-bit output's dtype, the product's two gradients (g p and g b), their
reductions to the bias's and the probabilities' shapes and the bias's gradient cast to 16 bits:
6 kernels per expert, and the splits' two concatenations, 6 E_l + 3 kernel launches.

The DDP post-hook is the one per-expert Python call counted that dispatches no torch op: a
whole function call (its closure, four attribute tests, the ``grad`` reset, a method call),
priced at a bare call's ``host_launch_s`` like the others. Left out: the per-expert Python that
dispatches nothing inside Transformer Engine's functions (it costs the host microseconds too,
not priced by a per-op model), the expert bias's token counting of DeepSeek-V3's router (``moe_router_enable_expert_bias``:
``routing_map.sum`` and ``+=``, 2 ops; no model field says which models use it) and the
force-balanced router's RandomSTE (2 ops, Megatron-LM's layer benchmark only).
"""
from __future__ import annotations

GROUPED_BWD = 2          # per expert: clear_tensor_data's swap, the dummy wgrad's detach
WEIGHT_HOOKS = 2         # per expert weight: autograd's AccumulateGrad, Megatron's DDP post-hook
GROUPED_BIAS_BWD = 1     # per expert: fc1's bias gradient (torch.empty or bgrad_quantize)
APPLY_BIAS_FWD = 2       # per expert: b * p, t + (...)
APPLY_BIAS_FIXED = 4     # the two splits, .view, .to (the cat is the bias node's own op)
APPLY_BIAS_FWD_KERNELS = 2    # per expert: b * p, t + (...); and APPLY_BIAS_FIXED_KERNELS
APPLY_BIAS_FIXED_KERNELS = 2  # the cat, the cast
APPLY_BIAS_BWD_LAUNCHES = 6   # per expert: the sum's gradient cast, g p, g b, their two
                              # reductions, the bias gradient's cast
APPLY_BIAS_BWD_FIXED = 3      # the cast's gradient; the splits' gradients: two concatenations


def local_experts(d) -> int:
    """E_l = E / ep: the routed experts on this rank, those its GroupedLinear loops over."""
    return d.experts // d.ep


def wgrad_loop_ops(biased: bool):
    """dims -> the Python-level calls of a grouped GEMM's backward loop over its E_l experts
and of autograd's and DDP's per-weight calls after it: (2 + 2 + 1 with ``biased``, fc1's bias
gradient) E_l (module docstring)."""
    per = GROUPED_BWD + WEIGHT_HOOKS + (GROUPED_BIAS_BWD if biased else 0)
    return lambda d: per * local_experts(d)


def apply_bias_loop_ops(d) -> int:
    """TEGroupedMLP._apply_bias's Python-level calls beside its cat: 2 E_l + 4."""
    return APPLY_BIAS_FWD * local_experts(d) + APPLY_BIAS_FIXED


def apply_bias_kernels(d) -> int:
    """The kernels of _apply_bias's forward: 2 E_l + 2."""
    return APPLY_BIAS_FWD_KERNELS * local_experts(d) + APPLY_BIAS_FIXED_KERNELS


def apply_bias_bwd_launches(d) -> int:
    """The C++ autograd engine's kernels of _apply_bias's backward: 6 E_l + 3."""
    return APPLY_BIAS_BWD_LAUNCHES * local_experts(d) + APPLY_BIAS_BWD_FIXED


def bias_hooks(d) -> int:
    """The expert biases whose gradient Megatron-core's DDP hook adds into the main gradient,
    fc1's and fc2's per expert: 2 E_l (:func:`tpsim.layer.moe_bias.bias_grad_accumulate`)."""
    return 2 * local_experts(d)
