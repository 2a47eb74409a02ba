"""What one rank holds under ZeRO-2/3 (:mod:`tpsim.training.sharded_dp`): weights, main
gradients, optimizer state and the optimizer step's gradient copy, and the dtype its gradient
shard is kept in.

The gradient shard's dtype (:func:`kept_grad_bytes`), one rule by the stack that shards:

* Megatron-FSDP (tpsim's ``--zero 2/3`` by default) keeps its sharded main-gradient buffer in
  the reduce dtype, as Megatron-core's distributed optimizer does: the precision's main
  gradients (fp32, 4 bytes; 2 with ``--grad-reduce-in-bf16``, copied into fp32 for the step:
  the precision's step copy, :mod:`tpsim.spec.precision`).
* PyTorch's FSDP (``Sharding.torch_fsdp``: FSDP1's flat parameters, FSDP2's ``fully_shard``,
  or either's fp32 sharded parameters) casts each reduced shard to the sharded parameter's
  dtype and accumulates it there across micro-batches, whatever the reduce dtype:
  FSDP1's ``_post_backward_hook`` -> ``_cast_grad_to_param_dtype`` ("so that the optimizer
  step runs with that dtype", unless ``keep_low_precision_grads``), then
  ``flat_param._saved_grad_shard += sharded_grad`` (torch/distributed/fsdp/_runtime_utils.py,
  PyTorch 2.0 on); FSDP2's ``foreach_reduce``: ``reduce_output =
  _to_dtype_if_needed(reduce_output, orig_dtype)``, then ``sharded_param.grad +=`` it
  (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py, the ``_composable/fsdp`` path
  before 2.6). The sharded parameter is the one the optimizer steps, its main weight: fp32
  (torchtitan's and llm-foundry's fp32 shards, 4 bytes, also under llm-foundry's ``PURE``
  bf16 reduce), bf16 for a model built in bf16 (NeMo AutoModel: ``--main-params-dtype
  bf16``, 2 bytes, its fp32 reduce-scatter's output cast back). No step copy: PyTorch's Adam
  reads that gradient as it is.

The whole gradients of the units in flight before their reduce-scatter are in the reduce
dtype (the precision's main-gradient bytes), as the reduce-scatter moves them.
"""
from __future__ import annotations

from ..spec.precision import key_state, precision

FP8_GATHERED = 1            # bytes per weight all-gathered in fp8 (torchtitan's float8 all-gather)
UNITS_IN_FLIGHT = 2         # a unit computing and the next one prefetched


def kept_grad_bytes(key: str, sh) -> int:
    """Bytes per parameter of the gradient shard a rank keeps and its optimizer reads under
    Sharding ``sh`` with precision ``key`` (module docstring): PyTorch's FSDP at ZeRO-2/3, the
    main weights' bytes (:func:`tpsim.spec.precision.key_state`); 0 where the precision's main
    gradients hold (Megatron-FSDP, below ZeRO-2)."""
    return key_state(key).main if sh.stage >= 2 and sh.torch_fsdp else 0


def largest_unit(units) -> int:
    """The most parameters one unit of ``units`` (runs ending (parameters, count)) holds."""
    return max((u[-2] for u in units if u[-1]), default=0)


def state_bytes(params: int, dtype: str, sh, dp: int, distributed_optimizer: bool,
                unit_params: int, experts: int = 0) -> tuple[float, float, float, float]:
    """(weights, main gradients, optimizer state, step copy) bytes one rank holds of
    ``params``: params x each precision's bytes / its :meth:`Sharding.state_shards` (of them
    ``experts`` folded routed-expert parameters / ``expert_shard`` instead), the gradient
    shard in :func:`kept_grad_bytes` and no step copy under PyTorch's FSDP; ZeRO-3 adds the
    gathered weights (16-bit; 1 byte with fp8_all_gather), UNITS_IN_FLIGHT units of
    ``unit_params`` (the stage's largest), or every parameter of the stage without resharding
    after the forward; ZeRO-2/3 add UNITS_IN_FLIGHT units of whole gradients (reduce dtype)
    before their reduce-scatter. With ``fp32_params`` (PyTorch FSDP's mixed precision) ZeRO-3
    keeps no 16-bit shard: the fp32 shard is the optimizer's master weight (in its 12 bytes),
    the 16-bit copy made per unit by the all-gather and freed after it (FSDP2's FSDPParam
    keeps ``_sharded_param_data`` in the original dtype; FSDP1's
    ``_free_low_precision_sharded_param``, torch/distributed/fsdp/_flat_param.py): sharded
    weights 0, as 16 / s bytes a parameter."""
    prec, kept = precision(dtype), kept_grad_bytes(dtype, sh)
    shard_grads, copy = (kept, 0) if kept else (prec.grads, prec.step_copy)
    ws, gs, os_ = sh.state_shards(dp, distributed_optimizer)
    es = sh.expert_shard if experts else 0      # the experts' part over expert_shard instead
    dense = params - experts if es else params

    def split(per: float, shards: int, expert_shards: int) -> float:
        return dense * per / shards + (experts * per / expert_shards if es else 0)
    weights = split(prec.weights, ws, es if sh.stage == 3 else 1)
    grads, optimizer = split(shard_grads, gs, es), split(prec.optimizer, os_, es)
    copy = split(copy, os_, es)
    sharded = max(sh.shard, sh.expert_shard) > 1
    if sh.fp32_params and sh.stage == 3:
        weights = 0.0
    if sh.pipelined:    # whole gradients accumulate; ZeRO-3 keeps every unit gathered
        held = params * prec.gathered if sh.stage == 3 and sharded else 0
        return float(weights + held), float(params * prec.grads), optimizer, copy
    if sh.stage == 3 and sharded:
        held = UNITS_IN_FLIGHT * unit_params if sh.reshard_after_forward else params
        weights += min(held, params) * (FP8_GATHERED if sh.fp8_all_gather else prec.gathered)
    if sh.stage >= 2 and sharded:
        grads += min(UNITS_IN_FLIGHT * unit_params, params) * prec.grads
    return float(weights), float(grads), optimizer, copy


__all__ = ["FP8_GATHERED", "UNITS_IN_FLIGHT", "kept_grad_bytes", "largest_unit",
           "state_bytes"]
