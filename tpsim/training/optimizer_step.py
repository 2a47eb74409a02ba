"""The optimizer step after the gradient norm, as each training stack runs it: the bytes its
kernels move per parameter (:func:`optimizer_bytes`) and their time (:func:`optimizer_s`).

Per parameter the rank updates (``owned``: 1/d of the stage's with a sharded optimizer,
:func:`tpsim.training.terms.optimizer_shards`), fp32 state and gradients:

| kernel | ``fused`` (Megatron-core) | ``foreach`` (torchtitan) | ``per-tensor`` (llm-foundry) |
| --- | --- | --- | --- |
| gradient norm (read g) | 4 | 4 | 4 |
| clip (g x min(1, max / norm): read, write) | 8 | 8 | 8 |
| Adam | 28 | 80 | 80 |
| fp32 master -> 16-bit weights (read 4, write 2) | 6 | none: fp32 FSDP params | none |

* ``fused``: one multi-tensor kernel reads g, p, m, v and writes p, m, v (7 x 4 = 28):
  Megatron-core's TE / apex ``FusedAdam`` (``multi_tensor_adam``), as torch's ``fused=True``.
* ``foreach``: ``torch.optim.AdamW(foreach=True)`` (``_multi_tensor_adam(w)``,
  torch/optim/adam(w).py), as torchtitan at its December 2024 benchmarks' commit 9dec370 builds
  it (``torchtitan/optimizer.py``: ``fused = job_config.optimizer.fused``, a store_true flag
  off by default, ``foreach = not fused``; weight decay 0.1): 8 multi-tensor kernels, read +
  write per element: ``_foreach_mul_(params, 1 - lr wd)`` 8, ``_foreach_lerp_(m, g)`` 12,
  ``_foreach_mul_(v, beta2)`` 8, ``_foreach_addcmul_(v, g, g)`` 12, ``_foreach_sqrt(v)`` 8,
  ``_foreach_div_`` 8, ``_foreach_add_(eps)`` 8, ``_foreach_addcdiv_(p, m, denom)`` 16 = 80
  (the step counters are CPU tensors: no kernel; addcmul's g read once).
* ``per-tensor``: Composer 0.16's ``DecoupledAdamW.adamw`` (composer/optim/
  decoupled_weight_decay.py), a Python loop over the tensors of torch ops, at llm-foundry's
  ``weight_decay: 0.0`` (scripts/train/yamls/pretrain/mpt-*.yaml, commit b2a43a147: the decay's
  ``param.mul_`` skipped): ``exp_avg.mul_`` 8, ``.add_(grad)`` 12, ``exp_avg_sq.mul_`` 8,
  ``.addcmul_(grad, grad)`` 12, ``.sqrt()`` 8, ``/ sqrt(bc2)`` 8, ``.add_(eps)`` 8,
  ``param.addcdiv_`` 16 = 80; besides, per tensor, ``state['step'] += 1`` (a one-element
  kernel) and ``state_steps[i].item()`` (a device-to-host copy: the host waits for the
  tensor before's kernels). Not priced: those per-tensor launches and syncs (tens of
  microseconds a tensor; with FSDP1's ``use_orig_params``, Composer's default, a rank steps
  the parameters of its shard, a few a block).

In the state's own dtypes (:func:`tpsim.spec.optimizer_state.adam_state`: p the main weights,
m, v the moments, bytes per element; g the fp32 gradient, 4; the foreach kernels' temporary
sqrt(v) in v's dtype) the same kernels move

    fused: g + 2 (p + m + v)      foreach: 4p + 2g + 3m + 11v      per-tensor: 2p + 2g + 5m + 11v

the table's 28, 80, 80 at fp32 (:data:`ADAM_TERMS`), and the copy to the 16-bit weights reads
the main weights' p where they are a copy of their own (none where the weights are them).

Zeroing the gradients for the next step (``grad_buffer``): Megatron-core's
``zero_grad_buffer`` memsets its contiguous gradient buffer (``_ParamAndGradBuffer.reset``:
``grad_data.zero_()``, distributed/param_and_grad_buffer.py), the whole stage's gradients, or
under ZeRO-2/3 the rank's shard (Megatron-FSDP's ``zero_grad``: ``main_grad_buffer.data.zero_()``
of its sharded buffer, megatron_fsdp/param_and_grad_buffer.py): main-gradient bytes written per
gradient held. PyTorch's ``optimizer.zero_grad()`` sets them to None (``set_to_none=True``, the
default since PyTorch 2.0: torchtitan's ``train.py``; Composer's trainer passes it): no kernel.

Logging (``log_params_norm``, ``log_num_zeros_in_grad``, Megatron-LM's ``--log-params-norm``
and ``--log-num-zeros-in-grad``, off by default): ``calc_params_l2_norm``
(megatron/training/utils.py) takes the L2 norm of the main weights every step, the rank's
shard of them with the distributed optimizer (``main_param``), a read of p bytes a parameter
owned; the optimizer's ``count_zeros`` (``count_zeros_fp32``, megatron/core/optimizer/
clip_grads.py) counts the zeros of the fp32 main gradients it steps, a read of 4 bytes a
parameter owned. Their all-reduces move one number each: not priced.

The 16-bit copy: with fp32 sharded parameters (ZeRO-3 ``fp32_params``: PyTorch FSDP's mixed
precision) Adam updates the fp32 shard in place and no 16-bit shard exists; the 16-bit weights
are cast as each all-gather's input is made (FSDP2's ``foreach_all_gather`` copy-in,
``_foreach_copy_`` of the fp32 shards into the bf16 buffer; FSDP1's ``_use_low_precision_shard``),
4 + 2 bytes over the 1/s shard per gather, on the all-gather's own stream beside the compute:
not priced.

16-bit main gradients (fp16's, bf16's under ``--grad-reduce-in-bf16``) are copied into fp32
for Adam (2 + 4). The unscale by the loss scale with its inf/nan check
(``torch._amp_foreach_non_finite_check_and_unscale_``: read, write g, 8) runs only where a loss
scale exists, fp16 (:func:`loss_scaled`), as each stack builds its scaler:

* Megatron-core: ``_get_megatron_optimizer_based_on_param_groups`` builds a
  ``DynamicGradScaler`` for fp16 alone (a ``ConstantGradScaler`` under ``--loss-scale``, not
  priced); bf16, and FP8, MXFP8 and NVFP4, whose runs set ``bf16``, get none, and
  ``MixedPrecisionOptimizer.prepare_grads`` copies the gradients to the main gradients but
  unscales and checks them only ``if self.grad_scaler`` (megatron/core/optimizer/__init__.py,
  optimizer.py, NVIDIA/Megatron-LM commit d98e8a6).
* Megatron-LM 2021: the same rule (megatron/optimizer/__init__.py: ``grad_scaler = None``
  unless ``args.loss_scale`` or ``args.fp16``; optimizer.py's ``step``: ``if
  self.grad_scaler``; commit f2c35bb, September 2021); its runs are fp16: kept.
* Megatron-DeepSpeed: fp16 through DeepSpeed's loss-scaled fp16 optimizer (kept); bf16 through
  DeepSpeed's ``BF16_Optimizer`` (deepspeed/runtime/bf16_optimizer.py), which has no loss
  scale. Its fp16 ``FP16_Optimizer`` (deepspeed/runtime/fp16/fused_optimizer.py, v0.10.0) moves
  70 bytes a parameter in kernels of its own; priced with Megatron's count, since vTrain's
  measured A100 steps fit neither (docs/training-step.md, "vTrain's A100 rows").
* PyTorch's FSDP stacks: only an fp16 run builds a ``GradScaler`` (Composer's ``amp_fp16``
  precision; ``unscale_`` runs the same kernel over the kept shard); llm-foundry's MPT runs
  are ``amp_bf16``; torchtitan (bf16 or fp32 ``mixed_precision_param``) and AutoModel (a bf16
  model) build no scaler: none.

Priced as one memory-bound pass (:func:`tpsim.cost.compute.elementwise_time`), plus Transformer
Engine's per-step weight casts (:func:`~.weight_cache.weight_cast_s`).

Under PyTorch's FSDP the step reads the gradient shard as FSDP keeps it, in the parameter's
dtype (``grads``, :func:`~.shard_state.kept_grad_bytes`: fp32 for torchtitan's and
llm-foundry's fp32 shards, bf16 for AutoModel's bf16 model): g is its bytes in every kernel
above (the norm, clip, Adam, the zeros' count, a memset), with no copy into fp32 even where the
reduce-scatter ran in bf16 (llm-foundry's ``PURE``) and an unscale only under fp16 (above).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..cost.compute import elementwise_time
from ..spec.optimizer_state import AdamState
from ..spec.precision import key_state, precision
from .data_parallel import FP32
from .shard_state import kept_grad_bytes
from .weight_cache import weight_cast_s

# Adam's bytes per owned parameter as coefficients of (p, g, m, v) bytes (above)
ADAM_TERMS = {"fused": (2, 1, 2, 2), "foreach": (4, 2, 3, 11), "per-tensor": (2, 2, 5, 11)}
IN_PLACE = 2   # clip's multi_tensor_scale, fp16's unscale (inf/nan check): read, write g
LOSS_SCALED = ("fp16",)    # the dtypes whose runs scale the loss (module docstring)


@dataclass(frozen=True)
class OptimizerStep:
    """How a stack runs the step: ``adam``'s kernels (a key of ADAM_TERMS), whether a
    ``grad_buffer`` is memset every step, whether a ``master_copy`` writes 16-bit weights,
    whether the weights' norm and the gradients' zeros are ``logged``, the ``grads`` bytes of
    the gradient shard PyTorch's FSDP keeps (:func:`~.shard_state.kept_grad_bytes`; 0:
    Megatron's main gradients, fp32 or copied into fp32) (module docstring)."""
    adam: str = "fused"
    grad_buffer: bool = True
    master_copy: bool = True
    logged: tuple[bool, bool] = (False, False)
    grads: int = 0

    @property
    def grad_read(self) -> int:
        """Bytes per parameter of the gradient the step's kernels read: ``grads``, else fp32."""
        return self.grads or FP32


MEGATRON = OptimizerStep()


def optimizer_step(lay, sh, key: str = "bf16") -> OptimizerStep:
    """The :class:`OptimizerStep` of Layout ``lay`` with Sharding ``sh`` and precision ``key``
    (:func:`tpsim.spec.precision.layout_key`): no master copy with
    ZeRO-3's fp32 parameters, PyTorch FSDP's kept gradient shard (module docstring)."""
    return OptimizerStep(lay.adam, lay.grad_buffer, not (sh.fp32_params and sh.stage == 3),
                         (lay.log_params_norm, lay.log_num_zeros_in_grad),
                         kept_grad_bytes(key, sh))


def adam_bytes(kernel: str, state: AdamState, grad: int = FP32) -> float:
    """Adam's bytes per owned parameter by ``kernel`` (a key of ADAM_TERMS) over the main
    weights, ``grad`` gradient bytes (fp32) and moments of ``state`` (module docstring):
    sum of ADAM_TERMS[kernel] x (p, g, m, v)."""
    sizes = (state.main, grad, state.exp_avg, state.exp_avg_sq)
    return float(sum(c * b for c, b in zip(ADAM_TERMS[kernel], sizes)))


def loss_scaled(dtype: str) -> bool:
    """Whether a run of precision key ``dtype`` (:func:`tpsim.spec.precision.precision_key`)
    scales its loss, so that the step unscales the gradients and checks them for inf/nan:
    its dtype in LOSS_SCALED (fp16; module docstring)."""
    return dtype.split("+")[0] in LOSS_SCALED


def optimizer_bytes(dtype: str, owned: float, zeroed: float,
                    step: OptimizerStep = MEGATRON) -> dict[str, float]:
    """Device-memory bytes of the optimizer step, by kernel: ``owned`` parameters the rank
    updates, ``zeroed`` gradients its buffer memsets (module docstring)."""
    prec, state, g = precision(dtype), key_state(dtype), step.grad_read
    per = {"grad-norm": g, "clip": IN_PLACE * g, "adam": adam_bytes(step.adam, state, g)}
    copied = prec.grads < FP32 and not step.grads   # 16-bit main gradients copied into fp32
    if copied:
        per["grads-to-fp32"] = prec.grads + FP32
    if loss_scaled(dtype):                    # the loss scale's unscale and inf/nan check
        per["unscale"] = IN_PLACE * g
    if state.copy and step.master_copy:       # copy the main weights into the 16-bit weights
        per["copy-to-weights"] = state.main + prec.gathered
    norm, zeros = step.logged                 # the log passes: read p, read g
    per |= ({"params-norm": state.main} if norm else {}) | ({"zeros-in-grad": g} if zeros else {})
    out = {k: v * owned for k, v in per.items()}
    out["zero-grads"] = (step.grads or prec.grads) * zeroed if step.grad_buffer else 0.0
    return out


def optimizer_s(params: float, shards: float, dtype: str, device,
                step: OptimizerStep = MEGATRON, grads_sharded: bool = False) -> float:
    """After the gradient norm, one memory-bound pass over the other kernels' bytes (clip,
    Adam, master copy, fp16's unscale, the buffer's memset, the log passes), plus the weights'
    casts:

        t = elementwise_time(sum of optimizer_bytes(dtype, owned, zeroed) but the norm's)
            + weight_cast_s(params)
        owned = params / shards;  zeroed = owned if grads_sharded else params

    ``grads_sharded``: ZeRO-2/3 unit by unit, whose buffer holds the rank's gradient shard
    (beside a pipeline the whole gradients accumulate, :mod:`.sharded_dp`); ``step``: the
    stack's kernels (module docstring, :func:`~.weight_cache.weight_cast_s`)."""
    owned = params / shards
    by_kernel = optimizer_bytes(dtype, owned, owned if grads_sharded else params, step)
    return elementwise_time(sum(x for k, x in by_kernel.items() if k != "grad-norm"),
                            device) + weight_cast_s(params, dtype, device)


__all__ = ["ADAM_TERMS", "adam_bytes", "OptimizerStep", "MEGATRON", "optimizer_step",
           "LOSS_SCALED", "loss_scaled", "optimizer_bytes", "optimizer_s"]
