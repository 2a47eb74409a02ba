"""What one training precision stores per parameter, in bytes (Megatron-LM's mixed precision).

| dtype | weights | main gradients | optimizer state | optimizer step's copy | distributed optimizer all-gathers |
| --- | --- | --- | --- | --- | --- |
| bf16 | 2 | 4 (fp32: Megatron accumulates and reduces bf16 gradients in fp32) | 12 (fp32 master, Adam m, v) | 0 | 2 |
| fp16 | 2 | 2 (the param dtype) | 12 (fp32 master, m, v) | 4 (fp32 gradient copy) | 2 |
| fp32 | 4 | 4 | 8 (m, v: the weights are the master) | 0 | 4 |
| fp8 | 4 (bf16 + FP8 row-wise and transposed copies, Hopper) | 4 | 12 | 0 | 2 |
| mxfp8 | 2 + 2 x (1 + 1/32) (bf16 + MXFP8 row-wise and column-wise copies with their scales) | 4 | 12 | 0 | 2 |
| nvfp4 | 2 + 2 x (1/2 + 1/16) (bf16 + NVFP4 row-wise and column-wise copies with their scales) | 4 | 12 | 0 | 2 |

Megatron-LM docs/user-guide/features/dist_optimizer.md gives the totals 18 (bf16), 20 (fp16) and
16 (fp32) bytes per parameter, and 6 + 12/d, 4 + 16/d, 8 + 8/d with the distributed optimizer
(arguments.py: ``accumulate_allreduce_grads_in_fp32`` for bf16). The fp32 gradient copy of
16-bit main gradients lives only during the optimizer step (the step's copy, sharded as the
optimizer state): Megatron-core's ``_copy_model_grads_to_main_grads`` makes it
(``shard_main_param.grad = shard_model_grad.float()``, core/optimizer/distrib_optimizer.py;
optimizer.py for the unsharded optimizer) after the backward, when the activations are freed,
and ``optimizer.zero_grad(set_to_none=True)`` at the start of the next ``train_step``
(megatron/training/training.py) frees it before the forward. A stage's peak is then
max(activations, step's copy) above the persistent state (:mod:`tpsim.sim.memory`), the
tables' totals when no activation is held. FP8 training keeps the
parameters in bf16 (FP8 is a compute dtype: Transformer Engine casts each weight per GEMM) and
the same fp32 main gradients, master weights and moments as bf16; on top, Transformer Engine
caches each weight's FP8 cast across the micro-batches of a step, row-wise and (Hopper's FP8
GEMMs take only TN layouts) transposed: +2 bytes (Megatron-core passes ``is_first_microbatch``
unless ``--disable-parameter-transpose-cache``, megatron/core/extensions/transformer_engine.py).
Only Transformer Engine's linears hold these copies (``get_fp8_workspace`` in
transformer_engine/pytorch/module/base.py, called by Linear, LayerNormLinear and GroupedLinear):
the token embedding (Megatron-core's VocabParallelEmbedding), the output layer (its
tensor_parallel ColumnParallelLinear, outside Transformer Engine) and the norms keep their
16-bit copy alone, 2 bytes (:func:`weights_bytes`; with quantized parameters too: ``fp8_model_init``
reaches only Transformer Engine's modules). The layers' biases and MoE routers (a few MB) are
counted with the linears.

The optimizer state's dtypes (Megatron-core's ``--main-params-dtype``, ``--exp-avg-dtype``,
``--exp-avg-sq-dtype``; PyTorch's Adam on a bf16 model) change its column:
:mod:`tpsim.spec.optimizer_state`.

Two options of Megatron-core change the table (:func:`precision_key` names a run's choice):

* ``--grad-reduce-in-bf16`` (Megatron-Bridge's and NeMo's performance recipes:
  ``grad_reduce_in_fp32=False``): the main gradients are kept and reduced in bf16, 2 bytes;
  the distributed optimizer copies each shard into fp32 for Adam, the step's 4-byte copy, as
  fp16's row (PyTorch's FSDP instead keeps its reduced shard in the parameter's dtype, no
  copy: :mod:`tpsim.training.shard_state`).
* ``--fp8-param-gather`` (FP8 only; Megatron-Bridge's FP8 recipes, ``fp8_param_gather=True``):
  the parameters themselves are fp8 (Transformer Engine's Float8Tensor, the fp32 master in the
  optimizer): the fp8 copy and its transpose, 1 + 1 bytes, no bf16 copy; the distributed
  optimizer all-gathers 1 byte per parameter. MXFP8 and NVFP4 take the same option
  (Megatron-Bridge's bf16_with_mxfp8_mixed: ``fp8_param_gather=True``; bf16_with_nvfp4_mixed:
  ``fp4_param_gather=True``, Megatron-LM's --fp4-param-gather: "keep the compute param in fp4 (do
  not use any other intermediate dtype) and perform the param all-gather in fp4",
  core/distributed/distributed_data_parallel_config.py): the row-wise and column-wise quantized
  copies, 2 x QUANTIZED_BYTES, no bf16 copy. MXFP8 all-gathers both copies into the gradient
  buffer (``reuse_grad_buf_for_mxfp8_param_ag``: 2 bytes a parameter; Transformer Engine's
  ``post_all_gather_processing`` has nothing left to do for an MXFP8Tensor); NVFP4 the packed
  row-wise 4-bit data, 1/2 byte, and builds the column-wise copy by a 2D transpose
  (``_nvfp4_2d_multi_tensor_transpose``, transformer_engine/pytorch/tensor/utils.py). The
  block scales' share of the all-gather is not counted.

* on a device whose FP8 GEMMs take any operand layout (Blackwell, compute capability 10.x:
  the topology's ``fp8_any_layout``; Transformer Engine's ``is_non_tn_fp8_gemm_supported``,
  transformer_engine/pytorch/utils.py) an fp8 tensor is one copy serving both GEMM directions,
  no transpose (Float8Tensor's quantizer allocates ``_data`` only, tensor/float8_tensor.py):
  ``+any-layout`` takes the transpose's 1 byte off fp8's weights (3; 1 with fp8 parameters).

Blackwell's block-scaled formats (OCP Microscaling spec v1.0; NVIDIA, "Pretraining large language
models with NVFP4", 2025; Transformer Engine's MXFP8BlockScaling and NVFP4BlockScaling recipes)
keep the same bf16 parameters and fp32 state and quantize each GEMM operand with a scale per
block: MXFP8 one E8M0 byte per 32 fp8 elements (1 + 1/32 bytes each), NVFP4 one E4M3 byte per 16
4-bit elements (1/2 + 1/16 bytes each) and one fp32 scale per tensor (negligible)
(:data:`QUANTIZED_BYTES`). A block scale runs along the GEMM's reduction dimension, so the
transposed operand of the backward GEMMs is quantized anew along the other direction:
Transformer Engine keeps a row-wise and a column-wise copy of each weight (the table), and its
quantize kernel writes both of every cast operand (:func:`cast_write_bytes`).

How fp8's per-tensor scale is found is Megatron-core's ``--fp8-recipe`` (:func:`quantizer`;
Transformer Engine's recipes, transformer_engine/pytorch/csrc/quantizer.cpp and
extensions/normalization.cpp): ``delayed`` (DelayedScaling, Megatron-core's default) takes the
scale from the amax history and records the new amax as the cast runs, one pass over the 16-bit
tensor; ``tensorwise`` (Float8CurrentScaling, Megatron-Bridge's ``fp8_cs`` recipes)
computes this tensor's amax first (``Float8CurrentScalingQuantizer::quantize_impl``:
``nvte_compute_amax``, then the scale, then ``nvte_quantize_v2``): the 16-bit input read twice,
for every activation before a linear, every output gradient in backward and each weight's
per-step cast (:data:`AMAX_PASS_BYTES`). NVFP4's per-tensor scale needs the same pass; MXFP8's
and the ``blockwise`` recipe's block scales (Float8BlockScaling: 1 x 128 activation and
128 x 128 weight tiles, DeepSeek-V3's) are found inside the cast kernel; the blockwise recipe's
fp32 scales (4 bytes per 128 elements) and its block-scaled GEMMs' own speed on Hopper are not
priced (its GEMMs run at fp8's). Only delayed fp8's
fused norm writes the quantized copy itself (``FULLY_FUSED``); under every other quantizer the
norm before a linear writes its 16-bit output (current scaling with its amax,
``FUSED_NORM_AMAX_FP8``, :data:`NORM_AMAX`; MXFP8 without cuDNN's norm,
``NVTE_NORM_FWD_USE_CUDNN`` unset, and NVFP4, ``UNFUSED``) and a cast kernel of its own
quantizes it (:data:`NORM_QUANTIZES`).

NVFP4 as Transformer Engine's ``NVFP4BlockScaling`` recipe runs it (transformer_engine/common/
recipe/__init__.py; Megatron-Bridge's ``bf16_with_nvfp4_mixed``, Transformer Engine 2.14 as
Megatron-Bridge 0.4 pins it; NVIDIA, arXiv 2509.25149): every linear's three GEMMs (fprop,
dgrad, wgrad) in NVFP4; the weights scaled per 16 x 16 block (no Hadamard transform, no
stochastic rounding); the inputs and output gradients per 1 x 16 block, their column-wise copy
(the wgrad GEMM's operand) through a 16 x 16 random Hadamard transform (RHT), and the gradients
rounded stochastically (:data:`STOCHASTIC_ROUNDING`). A transformed copy's per-tensor scale is
the amax of RHT(x^T): ``NVFP4Quantizer::quantize_impl`` (pytorch/csrc/quantizer.cpp) first runs
``nvte_hadamard_transform_amax`` (one read of the 16-bit tensor, both amaxes), then
``nvte_quantize_with_hadamard_transform`` (Transformer Engine PR #2555: the row-wise cast and
the RHT, transpose and column-wise cast in one kernel, the input read once), and
``layernorm_fwd`` runs the norm ``UNFUSED`` for such a quantizer (extensions/normalization.cpp:
"Post-RHT amax is handled within NVFP4 quantizer"), so the norm's output has an amax pass of
its own too. Megatron-Bridge's Llama 3 NVFP4 recipes keep no layer in bf16
(``first_last_layers_bf16`` False, its default); attention and the output layer stay bf16.

A per-tensor scale found from this tensor must be the same on every rank that gathers it:
under sequence parallelism Transformer Engine quantizes the rank's shard before the TP
all-gather, so the quantizers of a column-parallel linear's input (QKV, FC1) and of a
row-parallel linear's output gradient (proj, FC2) are given the TP group
(``set_quantizer_amax_reduction_group``, module/linear.py, layernorm_linear.py, with or
without userbuffers overlap) and all-reduce their amax with MAX between the amax and the cast
(``Float8CurrentScalingQuantizer::quantize_impl``: ``amax_reduction_group->allreduce(...)
->wait()``; ``NVFP4Quantizer::quantize_impl``: ``allreduce_coalesced`` of the row-wise and
column-wise amaxes; pytorch/csrc/quantizer.cpp, Transformer Engine 2.18, commit e7c550c5, as
Megatron-Bridge's main branch pins it; 0.4 pins 2.14). ProcessGroupNCCL's ``wait`` makes the compute stream wait for the NCCL stream: the
scale and the cast, hence the gather and the GEMM, start after it (:data:`AMAX_REDUCED_BYTES`).
MXFP8's and the blockwise recipe's scales are per block, found in the cast: no reduction.
Delayed scaling reduces its amax history once per autocast region, not per tensor (not
priced).
Kernels that find the amax while they compute (Transformer Engine's activation and dbias
kernels, ``FUSED_ACTIVATION_AMAX_FP8``) run only where Transformer Engine computes the
activation; Megatron-core's MLP runs its own (``bias_swiglu_impl``), so the second linear's
input is a tensor of its own, read twice.
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from ..base.record import record
from ..base.errors import ConfigError
from .optimizer_state import AdamState, adam_state, state_options


@record
class Precision:
    """Bytes per parameter (table in the module docstring); ``gathered``: what the distributed
    optimizer all-gathers per parameter after its step (the 16-bit model weights);
    ``step_copy``: the fp32 gradient copy held only during the optimizer step."""
    weights: float
    grads: int
    optimizer: int
    gathered: float
    step_copy: int = 0


PRECISION = {"bf16": Precision(2, 4, 12, 2), "fp16": Precision(2, 2, 12, 2, 4),
             "fp32": Precision(4, 4, 8, 4), "fp8": Precision(4, 4, 12, 2)}

# bytes per element of each quantized GEMM dtype, its block scales included (module docstring)
QUANTIZED_BYTES = {"fp8": 1, "mxfp8": 1 + 1 / 32, "nvfp4": 1 / 2 + 1 / 16}
LOW_PRECISION = tuple(QUANTIZED_BYTES)       # the linears' GEMMs quantized, activations bf16
PRECISION |= {q: Precision(2 + 2 * QUANTIZED_BYTES[q], 4, 12, 2) for q in ("mxfp8", "nvfp4")}
# Megatron-core's --fp8-recipe values tpsim prices (transformer_config.py ``fp8_recipe``,
# default "delayed"; "tensorwise" is Transformer Engine's Float8CurrentScaling, "blockwise" its
# Float8BlockScaling): module docstring
FP8_RECIPES = ("delayed", "tensorwise", "blockwise")
# the 16-bit tensor's amax read before its cast, bytes per element, by quantizer (docstring;
# :func:`amax_pass_bytes`)
AMAX_PASS_BYTES = {"nvfp4": 2, "fp8:tensorwise": 2}
# bytes a sequence-parallel operand's quantizer all-reduces (MAX) over the TP group before
# its cast, by quantizer (docstring): one fp32 amax; NVFP4's row-wise and column-wise ones
AMAX_REDUCED_BYTES = {"fp8:tensorwise": 4, "nvfp4": 8}
NORM_QUANTIZES = ("fp8:delayed",)   # whose fused norm writes the quantized copy itself
NORM_AMAX = ("fp8:tensorwise",)     # whose norm finds the amax its output's cast needs
# whose gradients' casts round stochastically (NVFP4BlockScaling's fp4_quant_bwd_grad; the
# kernel's rate: tpsim.cost.compute.stochastic_cast_time)
STOCHASTIC_ROUNDING = ("nvfp4",)


def quantizer(dtype: str, fp8_recipe: str = "delayed") -> str:
    """The quantizer a linear's operands are cast with: fp8's names its scaling
    (``fp8:delayed``, ``fp8:tensorwise``); MXFP8 and NVFP4 are recipes of their own."""
    return f"{dtype}:{fp8_recipe}" if dtype == "fp8" else dtype


# kernels one tensor's quantize launches, by quantizer (current scaling's quantize_impl: amax,
# scale, cast); 1 where not listed
QUANTIZE_KERNELS = {"fp8:tensorwise": 3}
# whose split_quantize is one multi-tensor kernel for every split (nvte_multi_cast_transpose)
MULTI_TENSOR_CASTS = ("fp8:delayed",)


def quantize_launches(q: str, splits: int) -> int:
    """Kernels Transformer Engine's ``split_quantize`` launches to quantize ``splits`` tensors
    (a grouped GEMM's experts) by quantizer ``q`` (extensions/cast.cpp,
    ``multi_tensor_quantize_impl``):

        1 (delayed fp8: one fused ``nvte_multi_cast_transpose`` for all)  |  splits x QUANTIZE_KERNELS(q)

    current scaling's three per split (``quantize_impl``: ``nvte_compute_amax``, the scale,
    the cast), MXFP8's and blockwise's one per split; NVFP4 counted one per split (its fused
    split kernel, ``split_quantize_nvfp4_impl``, not modelled)."""
    return 1 if q in MULTI_TENSOR_CASTS else splits * QUANTIZE_KERNELS.get(q, 1)


def cast_write_bytes(q: str) -> float:
    """Bytes a linear's cast kernel writes per element of a 16-bit operand, for quantizer
    ``q`` (:func:`quantizer`; a dtype alone: fp8's delayed scaling):

        2 x QUANTIZED_BYTES

    the row-wise and column-wise (fp8: transposed) quantized copies; the amax pass a
    per-tensor scale found from this tensor needs is a kernel of its own
    (:func:`amax_pass_bytes`)."""
    return 2 * QUANTIZED_BYTES[q.split(":")[0]]


def amax_pass_bytes(q: str, amax_fused: bool = False) -> float:
    """Bytes per element of a 16-bit operand the amax kernel before its cast reads, for
    quantizer ``q``: AMAX_PASS_BYTES(q), 0 where ``amax_fused``. NVFP4 and fp8's current
    scaling find the tensor's amax in a reduction kernel of their own before the cast
    (Transformer Engine's ``Float8CurrentScalingQuantizer::quantize_impl`` calls
    ``nvte_compute_amax``, then ``nvte_compute_scale_from_amax``, then ``nvte_quantize_v2``):
    it streams the 16-bit input once, 2 bytes, and writes nothing but the amax, so it runs as
    a plain memory-bound kernel (:class:`tpsim.layer.ops.MemoryBound`), not at the
    cast-transpose's rate. fp8's delayed scaling and MXFP8's per-block scales need none (the
    cast kernel finds them), nor does a cast whose amax the kernel before it found
    (``amax_fused``: a norm's, module docstring)."""
    return 0.0 if amax_fused else AMAX_PASS_BYTES.get(q, 0.0)


BF16_GRADS, FP8_PARAMS, ANY_LAYOUT = "bf16-grads", "fp8-params", "any-layout"  # key options
HALF = 2            # the 16-bit copy quantized parameters do without
FP32_COPY = 4       # the optimizer step's fp32 copy of 16-bit main gradients
# bytes per parameter the distributed optimizer all-gathers of quantized parameters (docstring)
PARAM_GATHERED = {"fp8": 1, "mxfp8": 2, "nvfp4": 1 / 2}


def weights_bytes(key: str, params: float, plain: float = 0.0) -> float:
    """Bytes of the weights of ``params`` parameters under precision ``key``, ``plain`` of them
    outside Transformer Engine's linears (embedding, output layer, norms: module docstring):

        params x weights  +  plain x (HALF - weights)     (quantized dtypes; else params x weights)
    """
    p = precision(key)
    if key.split("+")[0] not in LOW_PRECISION:
        return params * p.weights
    return params * p.weights + plain * (HALF - p.weights)


def precision_key(dtype: str, grad_reduce_in_bf16: bool = False,
                  fp8_param_gather: bool = False, any_layout: bool = False,
                  fp8_recipe: str = "delayed", adam_dtypes: tuple[str, ...] = ()) -> str:
    """The run's precision as one name: ``dtype``, then ``+bf16-grads``, ``+fp8-params``,
    (fp8 on a device of ``any_layout``) ``+any-layout``, (fp8) ``+`` a recipe other than
    delayed and the optimizer state's (main params, exp_avg, exp_avg_sq) ``adam_dtypes`` not
    fp32 (:func:`~tpsim.spec.optimizer_state.state_options`) for the options taken (module
    docstring); ``dtype`` alone without them."""
    fp8 = dtype == "fp8"
    return "+".join([dtype] + [BF16_GRADS] * grad_reduce_in_bf16
                    + [FP8_PARAMS] * fp8_param_gather
                    + [ANY_LAYOUT] * (any_layout and fp8)
                    + [fp8_recipe] * (fp8 and fp8_recipe != FP8_RECIPES[0])
                    + state_options(adam_dtypes))


def layout_key(lay, any_layout: bool = False, dtype: str | None = None) -> str:
    """The :func:`precision_key` of Layout ``lay``'s dtype (or ``dtype``) and options
    (``any_layout``: the device's)."""
    return precision_key(dtype or lay.dtype, lay.grad_reduce_in_bf16, lay.fp8_param_gather,
                         any_layout, lay.fp8_recipe,
                         (lay.main_params_dtype, lay.exp_avg_dtype, lay.exp_avg_sq_dtype))


def key_quantizer(key: str) -> str:
    """The quantizer of a :func:`precision_key`'s dtype and recipe (:func:`quantizer`)."""
    dtype, *options = key.split("+")
    return quantizer(dtype, next((o for o in options if o in FP8_RECIPES), FP8_RECIPES[0]))


@lru_cache(maxsize=256)      # a pure function of one string, asked at every prediction
def key_state(key: str) -> AdamState:
    """The optimizer state's :class:`~tpsim.spec.optimizer_state.AdamState` of a
    :func:`precision_key` (its ``held`` bytes are :func:`precision`'s ``optimizer``)."""
    dtype, *options = key.split("+")
    return adam_state(dtype, options)


@lru_cache(maxsize=256)      # a pure function of one string, asked at every prediction
def precision(key: str) -> Precision:
    """Bytes per parameter of a dtype, or of a :func:`precision_key`'s dtype and options."""
    dtype, *options = key.split("+")
    if dtype not in PRECISION:
        raise ConfigError("--dtype", "", f"one of {', '.join(PRECISION)}", dtype)
    p = PRECISION[dtype]
    if BF16_GRADS in options and p.grads > 2:     # fp16 keeps 2-byte gradients already
        p = Precision(p.weights, 2, p.optimizer, p.gathered, FP32_COPY)
    if ANY_LAYOUT in options:
        p = replace(p, weights=p.weights - QUANTIZED_BYTES[dtype])
    if FP8_PARAMS in options:
        if dtype not in PARAM_GATHERED:
            raise ConfigError("--fp8-param-gather", "", "--dtype fp8, mxfp8 or nvfp4", dtype)
        p = replace(p, weights=p.weights - HALF, gathered=PARAM_GATHERED[dtype])
    return replace(p, optimizer=key_state(key).held)
