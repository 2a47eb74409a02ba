"""The experts' clamped GLU inputs (gpt-oss's ``swiglu_limit``), as Megatron-core runs them.

gpt-oss clamps its experts' gated-linear-unit inputs (``activation_func_clamp_value`` 7:
Megatron-Bridge ``models/gpt_oss/gpt_oss_bridge.py``). Megatron-core's fused activation
(``bias_activation_fusion``, ``TEGroupedMLP.bias_act_func`` ->
``weighted_bias_quick_geglu_impl``, Megatron-LM core_v0.17.0
``megatron/core/fusions/fused_bias_geglu.py``) clamps outside the fused kernel, in eager
PyTorch, on the R x 2 f_e output of fc1:

    x_glu.clamp(max=c), x_linear.clamp(-c, c), cat(...)      3 kernels: B, B, 2B read + written
    linear_offset = torch.tensor(offset, device=cuda)       a host-to-device copy

bytes per element of the R x 2 f_e tensor, B the activations' bytes (each clamp runs over half of
it). ``torch.tensor`` of a Python number on the GPU copies it with ``memcpy_and_sync``: the host
waits for the stream to drain (pytorch/pytorch issues #120996 and #190217) before it issues the
activation, a device-to-host style synchronisation priced as the dispatchers' are
(:func:`tpsim.sim.schedule.run`, the template's ``syncs``): the activation waits on the cat's
end. Autograd's backward: each clamp's masked gradient (3B over its half) and the chunk's
gradient gathered into one tensor (2B): 5B. Every kernel is one bare torch call, priced on the
host as a launch (:mod:`tpsim.sim.launches`). ``moe_act`` recomputation (:mod:`tpsim.layer.
recompute_modules`) re-runs the clamps, the cat and so the synchronisation before the
recomputed activation. What the clamps keep without that recomputation (their inputs, views of
fc1's output, beside the cat's copy the activation keeps: R x 2 f_e x B more) is not counted.
"""
from __future__ import annotations

from .moe import routed_rows
from .template import BARE_CALL

# (name, bytes per element of the R x 2 f_e tensor, in activation bytes)
FWD = (("clamp_glu", 1), ("clamp_linear", 1), ("cat", 2))
BWD = (("clamp_glu", 1.5), ("clamp_linear", 1.5), ("split", 2))
NAMES = tuple(f"fwd.experts.act.{k}" for k, _ in FWD)   # the ops moe_act re-runs with the act


def _chain(B, phase: str, kernels, dep) -> str:
    x = dep
    for kernel, units in kernels:
        def size(d, units=units):
            rows, cols = routed_rows(d), 2 * d.fe
            return rows, cols, units * rows * cols * d.bpe
        x = B.eltwise(f"{phase}.experts.act.{kernel}", size, (x,), **BARE_CALL)
    return x


def clamp_fwd(B, y) -> str:
    """The two clamps and the cat on fc1's output ``y``; returns the cat, the op whose end
    the host waits for before issuing the activation."""
    return _chain(B, "fwd", FWD, y)


def clamp_bwd(B, y) -> str:
    """The clamps' backward after the activation's: their masked gradients, then the two
    halves gathered."""
    return _chain(B, "bwd", BWD, y)
