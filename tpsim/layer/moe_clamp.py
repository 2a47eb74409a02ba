"""The experts' clamped GLU inputs (gpt-oss's ``swiglu_limit``), as Megatron-core runs them.

gpt-oss clamps its experts' gated-linear-unit inputs (``activation_func_clamp_value`` 7:
Megatron-Bridge ``models/gpt_oss/gpt_oss_bridge.py``). Megatron-core's fused activation
(``bias_activation_fusion``, ``TEGroupedMLP.bias_act_func`` ->
``weighted_bias_quick_geglu_impl``, Megatron-LM core_v0.17.0
``megatron/core/fusions/fused_bias_geglu.py``) clamps outside the fused kernel, in eager
PyTorch, on the R x 2 f_e output of fc1:

    x_glu.clamp(max=c), x_linear.clamp(-c, c), cat(...)      3 kernels: 2B, 2B, 4B
    linear_offset = torch.tensor(offset, device=cuda)       a host-to-device copy

bytes per element of an R x f_e half of that tensor, B the activations' bytes. ``torch.tensor``
of a Python number on the GPU copies it with ``memcpy_and_sync``: the host
waits for the stream to drain (pytorch/pytorch issues #120996 and #190217) before it issues the
activation, a device-to-host style synchronisation priced as the dispatchers' are
(:func:`tpsim.sim.schedule.run`, the template's ``syncs``): the activation waits on the cat's
end. Autograd's backward (PyTorch's ``clamp_backward``, ``torch/csrc/autograd/
FunctionsManual.cpp``): a 0-dim zero (``at::scalar_tensor``, a fill kernel), the comparisons
against the limits (each reading the half, B, and writing a 1-byte mask), for the two-sided
clamp their ``logical_and_`` (two masks read, one written), and ``where(mask, grad, zero)``
(the mask, the gradient read, the gradient written: 1 + 2B):

    clamp_glu     fill, le, where                        3 kernels: 3B + 2
    clamp_linear  fill, ge, le, logical_and_, where      5 kernels: 4B + 6
    split         the chunk's gradients gathered (cat)   1 kernel:  4B

each kernel timed with its launch (:func:`tpsim.cost.compute.elementwise_time`). Every kernel
is one bare torch call or one the C++ autograd engine launches, priced on the host as a launch
(:mod:`tpsim.sim.launches`). ``moe_act`` recomputation (:mod:`tpsim.layer.
recompute_modules`) re-runs the clamps, the cat and so the synchronisation before the
recomputed activation. What the clamps keep without that recomputation (their inputs, views of
fc1's output, beside the cat's copy the activation keeps: R x 2 f_e x B more) is not counted.
"""
from __future__ import annotations

from .moe import routed_rows
from .template import BARE_CALL

# (name, bytes per element of an R x f_e half: B's multiple, fixed bytes; kernels)
FWD = (("clamp_glu", 2, 0, 1), ("clamp_linear", 2, 0, 1), ("cat", 4, 0, 1))
BWD = (("clamp_glu", 3, 2, 3), ("clamp_linear", 4, 6, 5), ("split", 4, 0, 1))
NAMES = tuple(f"fwd.experts.act.{k[0]}" for k in FWD)   # the ops moe_act re-runs with the act


def _chain(B, phase: str, kernels, dep) -> str:
    x = dep
    for kernel, per_b, fixed, count in kernels:
        def size(d, per_b=per_b, fixed=fixed):
            rows, cols = routed_rows(d), 2 * d.fe
            return rows, cols, (per_b * d.bpe + fixed) * rows * d.fe
        extra = {"kernels": lambda d, k=count: k, "launches": lambda d, k=count: k - 1} \
            if count > 1 else {}
        x = B.eltwise(f"{phase}.experts.act.{kernel}", size, (x,), **BARE_CALL, **extra)
    return x


def clamp_fwd(B, y) -> str:
    """The two clamps and the cat on fc1's output ``y``; returns the cat, the op whose end
    the host waits for before issuing the activation."""
    return _chain(B, "fwd", FWD, y)


def clamp_bwd(B, y) -> str:
    """The clamps' backward after the activation's: their masks and masked gradients, then
    the two halves gathered."""
    return _chain(B, "bwd", BWD, y)
