"""What a communication kernel costs the compute kernel beside it: the SMs it holds, seen
through how the compute kernel spreads its work over the SMs.

A communication op holds ``s`` of the device's ``N`` SMs while it runs (its CTAs: NCCL's
collectives one CTA per channel, the device's ``collective_sms``; DeepEP's kernels
:data:`~tpsim.cost.all_to_all.DEEPEP_SMS`; HybridEP's :data:`HYBRIDEP_SMS`; Transformer
Engine's pipelined reduce-scatter its ``num_sm``, :data:`UB_PIPELINE_SMS`) or none (copies
on the copy engines: Transformer Engine's ring exchange, ``use_ce``; stream ``copy``, never
slowed here). The compute kernel beside it runs at 1 - loss of its speed:

    non-persistent kernel (a grid of many waves: elementwise, norms, FlashAttention-2,
    Triton; FlashAttention-3's backward, taken as one):      loss = s / N
    persistent kernel (one CTA per SM looping over tiles: cuBLAS/CUTLASS sm90 GEMMs,
    FlashAttention-3's forward):                loss = 1 - 1 / ceil(N / (N - s))
    a GEMM launched with an SM margin of s (cuBLAS's SM-count target; Transformer Engine's
    set_sm_margin beside its pipelined reduce-scatter):   loss = s / N

The persistent kernel's N CTAs cannot all be resident while s SMs are held: N - s run, the
other s wait for a free SM, which comes when a resident CTA has finished its whole share, so
the kernel runs ceil(N / (N - s)) passes: twice its time for any 1 <= s <= N/2 (PyTorch's
FSDP on H100, "matmuls take 2x as long" beside NCCL: pytorch/pytorch#143988, PR #144974;
CUTLASS's PersistentTileSchedulerSm90 launches min(tiles, SMs) CTAs; FlashAttention-3's
``UsePersistentScheduler`` is on for sm90 forwards, hopper/flash_fwd_launch_template.h). A
lower bound: a collective ending mid-kernel costs its whole overlap in the second pass, where
the slowed rate here gives back what it has not yet run. A kernel whose work goes to fewer
SMs from the start (an SM margin) only loses their share.
"""
from __future__ import annotations

import math

# Megatron-Bridge's performance harness gives HybridEP 32 SMs on H100
# (scripts/performance/utils/overrides.py); Megatron-core leaves it to the library.
HYBRIDEP_SMS = 32

# Transformer Engine's default num_sm for a "pipeline" (and "bulk") userbuffers overlap, with
# set_sm_margin on: the GEMM is launched on N - num_sm SMs (transformer_engine/pytorch/module/
# base.py, initialize_ub's get_default_config; NeMo's H100 Llama configs set 24 for proj_fprop
# and 16 for fc2_fprop, tp_overlap_configs/userbuffers.py).
UB_PIPELINE_SMS = 16


def compute_loss(held: int, sm_count: int, persistent: bool, margin: bool = False) -> float:
    """The share of its speed a compute kernel loses while a communication kernel holds
    ``held`` of the ``sm_count`` SMs (module docstring):

        held = 0                      -> 0
        persistent, no margin         -> 1 - 1 / ceil(N / (N - held))   (1 if held >= N)
        otherwise                     -> min(1, held / N)
    """
    if held <= 0:
        return 0.0
    if held >= sm_count:
        return 1.0
    if persistent and not margin:
        return 1.0 - 1.0 / math.ceil(sm_count / (sm_count - held))
    return held / sm_count


def is_persistent(op, device) -> bool:
    """Whether compute ``op`` runs as a persistent kernel on ``device``: its kind ("gemm",
    "attention") among the device's ``persistent_kernels``, an attention only forward (the
    persistent scheduler found is the forward's, hopper/flash_fwd_launch_template.h; the
    backward is priced as not persistent)."""
    kind = getattr(op, "kind", "")
    if kind not in device.persistent_kernels:
        return False
    return not (kind == "attention" and op.backward)
