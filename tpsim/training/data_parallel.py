"""Data parallelism and the optimizer step, as Megatron-core runs them: what crosses the DP group
and what the optimizer reads and writes, per parameter.

Gradients (Megatron-core ``distributed/param_and_grad_buffer.py``, ``distributed_data_parallel.py``):

* The main gradients live in one contiguous buffer in the main-gradient dtype
  (:class:`tpsim.spec.precision.Precision` ``grads``: fp32 for bf16 training, Megatron's default
  ``accumulate_allreduce_grads_in_fp32``), and that is what goes on the wire.
* The buffer is cut into buckets of ``max(40M, 1M x d)`` parameters, filled in the order the
  backward produces gradients (:func:`buckets`); with ``overlap_grad_reduce`` each bucket's
  collective starts as soon as its last gradient of the last micro-batch is final. Only the first
  pipeline stage buckets; the others reduce their whole buffer at once (their reduction is off the
  critical path). Without overlap (Megatron with ``overlap_grad_reduce`` off, DeepSpeed's pipeline
  engine as Megatron-DeepSpeed ran it in 2023) the reduction runs after the whole backward.
* Each bucket is first scaled by 1/d in place (read and write the gradient:
  :func:`scale_bytes`), then all-reduced, or with the distributed optimizer (ZeRO-1)
  reduce-scattered, each rank keeping the 1/d shard it updates; after the optimizer step the
  distributed optimizer all-gathers the updated 16-bit weights (:func:`sync_collectives`).
  A ring all-reduce puts 2(d-1)/d of the gradient bytes on each rank's links, reduce-scatter
  and all-gather (d-1)/d each (nccl-tests' bus factor).

The optimizer step: :mod:`tpsim.training.optimizer_step` (bytes per parameter of each stack's
kernels); its gradient norm reads the fp32 gradient (4 bytes, :data:`NORM_BYTES`), and the
norm's all-reduce of one fp32 number spans the model-parallel ranks.
"""
from __future__ import annotations

from ..base.record import record
from ..cost.collectives import CollectiveCost, bus_factor
from ..base.errors import ConfigError
from ..spec.precision import precision
from ..sim.price import group_collective

BUCKET_MIN_PARAMS = 40_000_000          # Megatron-core DistributedDataParallel: max(40M, 1M x d)
BUCKET_PARAMS_PER_DP_RANK = 1_000_000
FP32 = 4
NORM_BYTES = 4           # multi_tensor_l2norm reads the fp32 gradient


def bucket_params(dp: int) -> int:
    """Megatron-core's default bucket size in parameters: max(40,000,000, 1,000,000 x d)."""
    return max(BUCKET_MIN_PARAMS, BUCKET_PARAMS_PER_DP_RANK * dp)


def gradient_units(layers: int, layer_params: int, embedding_params: int | None = None,
                   output_params: int | None = None) -> list[tuple[str, int, int]]:
    """A chunk's gradient units in the order its backward makes them final, as runs
    (``"output"``, ``"layer"`` or ``"embedding"``, parameters per unit, units): the output layer
    first, the layers last to first, the embedding last; the ends only on the chunks that hold
    them (``None``: not this chunk's)."""
    return ([("output", output_params, 1)] if output_params is not None else []) + \
        ([("layer", layer_params, layers)] if layers else []) + \
        ([("embedding", embedding_params, 1)] if embedding_params is not None else [])


MAX_BUCKETS = 100_000     # gradient buckets one stage may have: each is an op of the step


def buckets(runs: list[tuple[int, int]], size: int | None) -> list[list[tuple[int, int]]]:
    """Megatron-core's gradient buckets over units whose gradients become final in order,
    given as runs ``(parameters per unit, units)``: a bucket closes once it holds at least
    ``size`` parameters (``size`` None: one bucket). Each bucket is a list of
    ``(run index, units taken from it)``. Arithmetic per bucket, not per unit, so a stage of
    2^31 layers costs what its buckets cost; more than MAX_BUCKETS is a ConfigError."""
    out, cur, n = [], [], 0
    for i, (params, count) in enumerate(runs):
        while count > 0:
            take = count
            if size is not None and params > 0:
                take = min(count, max(1, -(-(size - n) // params)))
            cur.append((i, take))
            n += params * take
            count -= take
            if size is not None and n >= size:
                out.append(cur)
                cur, n = [], 0
                if len(out) > MAX_BUCKETS:
                    raise ConfigError("--dp", "layers", f"at most {MAX_BUCKETS} gradient buckets "
                                      "per pipeline stage (Megatron-core's bucket size) to "
                                      "simulate", "more")
    if cur:
        out.append(cur)
    return out


def grad_bytes(params: float, dtype: str) -> float:
    """Main-gradient bytes of ``params`` parameters: what the DP collective carries."""
    return params * precision(dtype).grads


def gather_bytes(params: float, dtype: str) -> float:
    """The distributed optimizer's all-gather of ``params`` updated weights: params x the
    gathered (16-bit for bf16 and fp16) weight bytes."""
    return params * precision(dtype).gathered


def scale_bytes(params: float, dtype: str) -> float:
    """The 1/d pre-scale of a bucket, in place: read and write every main gradient."""
    return 2 * grad_bytes(params, dtype)


@record
class DPCollective:
    """One DP collective: its op, nccl-tests size, the bytes one rank puts on its links
    (bus_factor x size) and its priced cost."""
    op: str
    nbytes: float
    bus_bytes: float
    cost: CollectiveCost

    @property
    def time_s(self) -> float:
        return self.cost.time_s


def dp_collective(op: str, nbytes: float, group, topo) -> DPCollective:
    cost = group_collective(op, nbytes, group, topo)
    return DPCollective(op, nbytes, bus_factor(op, cost.ranks) * nbytes, cost)


def reduce_op(distributed_optimizer: bool) -> str:
    """The gradient collective: reduce-scatter into the rank's shard (distributed optimizer) or
    all-reduce."""
    return "reduce-scatter" if distributed_optimizer else "all-reduce"


def sync_collectives(params: float, dtype: str, group, topo,
                     distributed_optimizer: bool = False) -> tuple[DPCollective, ...]:
    """The DP traffic of one step for ``params`` parameters on ``group`` (unbucketed): the
    gradient all-reduce, or the reduce-scatter of the gradients and the all-gather of the
    updated 16-bit weights. A group of one rank moves nothing (time 0)."""
    out = [dp_collective(reduce_op(distributed_optimizer), grad_bytes(params, dtype), group, topo)]
    if distributed_optimizer:
        out.append(dp_collective("all-gather", gather_bytes(params, dtype), group, topo))
    return tuple(out)
