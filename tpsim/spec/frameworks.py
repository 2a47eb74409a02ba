"""Presets of the training stacks a published run used: the :class:`~tpsim.spec.layout.Layout`
knobs whose values a stack fixed, so that ``--framework NAME`` prices a run as that stack ran
it. A preset fills only the knobs left at their defaults; a knob the user sets keeps the
user's value.

* ``megatron-core`` (Megatron-core, 2023 on; tpsim's defaults): the DP gradients reduced in
  buckets beside the backward (``distributed/param_and_grad_buffer.py``, overlap_grad_reduce),
  p2p of whole activations (SP: each rank its shard), the weight all-gather of the distributed
  optimizer after the optimizer unless ``--overlap-param-gather``; without gradient
  accumulation fusion, each weight gradient added into the fp32 main gradient by the DDP's
  hook (``distributed/distributed_data_parallel.py``, ``main_grad_add``).
* ``megatron-lm-2021`` (Megatron-LM as Narayanan et al. 2021, "Efficient Large-Scale Language
  Model Training on GPU Clusters Using Megatron-LM", ran it): the gradients all-reduced after
  the whole backward (``megatron/model/distributed.py``'s allreduce_gradients, called from
  train_step once the backward is done), the scatter/gather optimisation of the p2p
  activations (section 4.1: each TP rank sends 1/t, the next stage all-gathers), the
  backward's TP all-reduce after the weight-gradient GEMM (``mpu/layers.py``: the async one
  came in September 2021), each weight gradient written anew and added into the parameter's
  fp16 ``.grad`` by autograd (gradient accumulation fusion came in February 2022), no
  distributed optimizer (Megatron-LM added it in 2022) and no TP communication overlap
  (Transformer Engine, 2023), and Q K^T scaled by 1 / layer number with the softmax in fp32
  (``--no-query-key-layer-scaling`` to turn it off: on by default from January 2021,
  Megatron-LM commit 9acc895 "Change some arguments to default to on").
* ``megatron-deepspeed`` (Megatron-DeepSpeed on DeepSpeed's pipeline engine, as BLOOM and
  Megatron-Turing NLG ran): the gradients reduced after the backward (the engine's
  ``_exec_reduce_grads`` step of the schedule), activations partitioned over the TP ranks
  between stages (``pipe_partitioned`` / ``grad_partitioned``), 1F1B without interleaving
  (``deepspeed/runtime/pipe/schedule.py``'s TrainSchedule), no TP communication overlap, and
  the query-key layer scaling of Megatron-LM 2021 (``megatron/arguments.py``, to 2024);
  unfused weight gradients priced as autograd's adds into ``.grad`` (the engine's own
  gradient path, not Megatron-core's DDP hook: ``main_grad_add`` off).
* ``nemo-24.07`` (NeMo 24.07 on Megatron-core and Transformer Engine 1.8, as NVIDIA's 24.07
  performance summary ran GPT-3 and Llama 2/3, NVIDIA/NeMo-Framework-Launcher at tag 24.07):
  Megatron-core's defaults (delayed FP8 scaling, the only recipe of Transformer Engine 1.x)
  with attention by FlashAttention-2: the launcher's ``launcher_scripts/conf/config.yaml``
  sets ``NVTE_FUSED_ATTN: 0`` for every job ("Disable cudnn FA until we've tested it more"),
  so Transformer Engine 1.8 drops its cuDNN backend and runs flash-attn, which it accepts up
  to 2.5.8 (``transformer_engine/pytorch/attention.py``, ``_flash_attn_max_version``).
* ``torchtitan`` (torchtitan on PyTorch eager, its default ``compile = false``, as its
  December 2024 H100 benchmarks ran Llama 3.1, pytorch/torchtitan
  ``benchmarks/llama3_h100_202412_torchtitan.md``, commit 9dec370): PyTorch eager's
  elementwise kernels (``--eager-kernels``, :mod:`tpsim.layer.eager`), attention by
  ``F.scaled_dot_product_attention``, whose backend on H100 in that PyTorch (2.6 nightly,
  December 2024) was FlashAttention-2, not cuDNN (pytorch/pytorch issue #142132: SDPA "is not
  automatically choosing CUDNN impl" on H100, 329 TFLOP/s against cuDNN's 631); FSDP2 is
  ``--zero 3`` (its reduce-scatters beside the backward, tpsim's default), no Transformer
  Engine: no TP communication overlap (torchtitan's AsyncTP is not priced) and no fp8
  parameters. FSDP2 copies the gathered weights into the parameters and the gradients into the
  reduce-scatter input on the compute stream (``--fsdp2-copies``, :mod:`tpsim.training.fsdp_copies`);
  the optimizer is ``torch.optim.AdamW`` with ``foreach`` (``--adam foreach``: at 9dec370
  ``fused`` is a flag off by default) and ``optimizer.zero_grad()`` frees the gradients
  (``--no-grad-buffer``; :mod:`tpsim.training.optimizer_step`).
* ``torchtitan-compile`` (the same with ``compile = true``): torch.compile's Inductor fuses
  the elementwise kernels, priced as the fused ones; attention is still SDPA's
  FlashAttention-2.
* ``automodel`` (NVIDIA-NeMo/Automodel, the PyTorch-native stack, as its October 2025 H100
  pre-training benchmarks ran, ``examples/benchmark/configs/*_te_deepep.yaml`` at commit
  89e3a9fdd): FSDP2 (``fully_shard`` per transformer block, the embedding and the output
  layer, ``nemo_automodel/components/moe/parallelizer.py``: ``--zero 3``) with its copies on
  the compute stream (``--fsdp2-copies``), parameters gathered in bf16 and gradients
  reduce-scattered in fp32 (its ``MixedPrecisionPolicy``: tpsim's defaults); the model's
  attention, linears and RMSNorm are Transformer Engine's (``BackendConfig`` ``attn: te``:
  cuDNN's fused attention on Hopper, the device's flash3 class; the default); the optimizer is
  the recipes' ``torch.optim.Adam``, foreach on CUDA (``--adam foreach``), and
  ``optimizer.zero_grad()`` frees the gradients (``--no-grad-buffer``). The model is built in
  bf16 (``get_dtype(config.torch_dtype, torch.bfloat16)``), so Adam updates the bf16 weights,
  no master copy, and keeps its moments in their dtype (``torch.zeros_like(p)``):
  ``--main-params-dtype bf16 --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16``, 4 bytes of
  state a parameter (:mod:`tpsim.spec.optimizer_state`). The sharded gradients are bf16 too
  (FSDP2's ``foreach_reduce`` casts the fp32 reduce-scatter's output back to the parameter's
  dtype), 2 bytes, read so by Adam (:mod:`tpsim.training.shard_state`). The routed
  experts' ``fully_shard`` (over ``ep_shard``) takes no ``MixedPrecisionPolicy``: their
  gradients reduce-scatter in bf16 (``--expert-grad-reduce-in-bf16``). Its pipelines are
  torch 2.8's (``uv.lock``): interleaved, ``ScheduleInterleaved1F1B``'s table in lock-step
  (``--pp-runtime torch-multi``, :mod:`tpsim.training.torch_pipeline`); a stage's module is the
  causal-LM wrapper, not ``fully_shard``-ed itself (its inner model, blocks, embedding and
  output layer are), so torch's ``backward_maybe_with_nosync`` takes its "regular backward"
  branch and FSDP2's hooks reduce-scatter and reshard in every micro-batch's backward
  (``--fsdp-sync-every-micro-batch``; AutoModel's ``MoEFSDPSyncMixin``, 2c236e081 of
  2025-10-08, later deferred them). Its own DeepSeek-V3 MLA (``models/deepseek_v3/layers.py``
  at 89e3a9fdd, no ``compile`` in the benchmark recipes) applies the rotary embedding as
  fp32 complex products and concatenates q and k in eager PyTorch (``--mla-eager``,
  :mod:`tpsim.layer.mla_eager`; the preset's is ignored without MLA, ``--mla-eager`` given
  on such a model is refused: :func:`check_given`).
* ``llm-foundry`` (MosaicML's llm-foundry v0.3.0 on Composer 0.16 and PyTorch 2.1, as its
  October 2023 MPT benchmarks ran, mosaicml/llm-foundry ``scripts/train/benchmarking/``,
  commit b2a43a147: ``submit_benchmarks.py`` installs v0.3.0 with ``.[gpu]`` and sets
  ``attn_impl`` to its default ``triton``): attention by FlashAttention in Triton
  (``llmfoundry/models/layers/flash_attn_triton.py`` on triton-pre-mlir); PyTorch FSDP is
  ``--zero 3``. MPT's elementwise kernels are PyTorch's own fused ones (``F.layer_norm``, one
  GELU kernel, a residual add; dropout 0 runs no kernel), priced as tpsim's fused kernels, not
  as ``--eager-kernels``' Llama ones; layer_norm's backward pass for its weight and bias (a
  second read of x and dy) is not counted. The loss is flash-attn's fused cross-entropy
  (``--cross-entropy xentropy``): ``ComposerMPTCausalLM``'s default ``loss_fn:
  fused_crossentropy`` (``llmfoundry/models/mpt/modeling_mpt.py`` at v0.3.0), installed by
  ``.[gpu]`` (``xentropy-cuda-lib`` of flash-attn v1.0.9). Two training metrics
  (``--train-metrics 2``): ``ComposerMPTCausalLM``'s ``LanguageCrossEntropy`` and
  ``LanguagePerplexity`` (each a ``torch.nn.CrossEntropyLoss`` over the logits), which Composer
  0.16's ``Trainer._train_microbatch`` updates after every micro-batch's backward
  (``_eval_train_metrics``, under the autocast context). PyTorch FSDP is FSDP1, whose flat
  parameters copy each unit's gradients in every backward (``--fsdp-flat-params``:
  :mod:`tpsim.training.fsdp_flat`). No Transformer Engine in bf16. The optimizer is Composer's
  ``DecoupledAdamW`` (the MPT yamls' ``decoupled_adamw``), a per-tensor loop of torch ops
  (``--adam per-tensor``), and Composer's ``zero_grad(set_to_none=True)`` frees the gradients
  (``--no-grad-buffer``; :mod:`tpsim.training.optimizer_step`).

Not a knob of tpsim: the backward's TP all-reduce of the input gradient is asynchronous,
beside the weight-gradient GEMM, as in Megatron-core's
``LinearWithGradAccumulationAndAsyncCommunication`` (Megatron-LM from late 2021); the older
stacks ran it after the backward's GEMMs, so their TP exposure is priced low.
"""
from __future__ import annotations

from ..base.errors import ConfigError

# FSDP2's fp32 shards and copies, torch's foreach AdamW, gradients set to None
_TORCHTITAN = {"fsdp_fp32_params": True, "fsdp2_copies": True, "adam": "foreach",
               "grad_buffer": False}
FRAMEWORKS: dict[str, dict] = {
    "megatron-core": {},
    "megatron-lm-2021": {"overlap_grad_reduce": False, "scatter_gather_p2p": True,
                         "async_tensor_model_parallel_allreduce": False,
                         "gradient_accumulation_fusion": False, "main_grad_add": False,
                         "query_key_layer_scaling": True},
    "megatron-deepspeed": {"overlap_grad_reduce": False, "scatter_gather_p2p": True,
                           "query_key_layer_scaling": True, "main_grad_add": False},
    "nemo-24.07": {"attention": "flash2"},
    "torchtitan": {"attention": "flash2", "eager_kernels": True, **_TORCHTITAN},
    "torchtitan-compile": {"attention": "flash2", **_TORCHTITAN},
    "automodel": {"fsdp2_copies": True, "adam": "foreach", "grad_buffer": False,
                  "main_params_dtype": "bf16", "exp_avg_dtype": "bf16", "exp_avg_sq_dtype": "bf16",
                  "pp_runtime": "torch-multi", "fsdp_sync_every_micro_batch": True,
                  "expert_grad_reduce_in_bf16": True, "mla_eager": True},
    "llm-foundry": {"attention": "triton", "fsdp_fp32_params": True, "fsdp_flat_params": True,
                    "cross_entropy": "xentropy", "train_metrics": 2, "adam": "per-tensor",
                    "grad_buffer": False},
}
_NO_TE = (("tp_comm_overlap", False, "no Transformer Engine (AsyncTP is not priced)"),
          ("fp8_param_gather", False, "Transformer Engine's fp8 parameters"),
          ("distributed_optimizer", False, "FSDP2 shards the state: --zero 3"))
# what each stack could not run at all: (field, the one value it had, why)
LACKS: dict[str, tuple] = {
    "megatron-core": (),
    "megatron-lm-2021": (("distributed_optimizer", False, "no distributed optimizer before "
                          "2022"), ("overlap_param_gather", False, "no distributed optimizer"),
                         ("tp_comm_overlap", False, "no Transformer Engine"),
                         ("zero", 0, "no sharded data parallelism before the distributed "
                          "optimizer")),
    "megatron-deepspeed": (("virtual_stages", 1, "DeepSpeed's pipeline engine runs 1F1B "
                            "without interleaving"), ("overlap_param_gather", False,
                            "DeepSpeed's ZeRO, not Megatron's bucketed gather"),
                           ("tp_comm_overlap", False, "no Transformer Engine")),
    "nemo-24.07": (),
    "torchtitan": _NO_TE,
    "torchtitan-compile": _NO_TE + (("eager_kernels", False, "torch.compile fuses the "
                                     "elementwise kernels"),),
    "automodel": (("tp_comm_overlap", False, "no Transformer Engine userbuffers"),
                  _NO_TE[1], _NO_TE[2]),
    "llm-foundry": _NO_TE[:2] + (("distributed_optimizer", False, "FSDP shards the state: "
                                  "--zero 3"), ("eager_kernels", False, "MPT's kernels are "
                                  "PyTorch's fused layer_norm and GELU, not Llama's eager ones")),
}
FLAGS = {"distributed_optimizer": "--distributed-optimizer",
         "overlap_param_gather": "--overlap-param-gather", "tp_comm_overlap": "--tp-comm-overlap",
         "virtual_stages": "--virtual-stages", "fp8_param_gather": "--fp8-param-gather",
         "eager_kernels": "--eager-kernels", "zero": "--zero"}


def with_framework(name: str, settings: dict, defaults: dict) -> dict:
    """``settings`` (Layout field -> value) under framework ``name``: each preset knob still at
    its default in ``defaults`` takes the preset's value; a setting the stack could not run
    is a ConfigError naming its flag."""
    if name not in FRAMEWORKS:
        raise ConfigError("--framework", "", f"one of {', '.join(FRAMEWORKS)}", name)
    out = dict(settings)
    for field, value in FRAMEWORKS[name].items():
        if field in out and out[field] == defaults[field]:
            out[field] = value
    for field, only, why in LACKS[name]:
        if field in out and out[field] not in (only, None):
            raise ConfigError(FLAGS[field], "", f"{only} under --framework {name} ({why})",
                              out[field])
    return out


def runs_under(name: str | None, changes: dict) -> bool:
    """Whether framework ``name`` (None: any) can run the Layout ``changes`` (field -> value):
    none of them is a knob :data:`LACKS` pins away from its value."""
    return all(changes[field] in (only, None) for field, only, _ in LACKS.get(name, ())
               if field in changes)


# knobs a preset sets for every model but that act on one kind of layer only: the preset's
# value is ignored on a model without that layer, one the user gives is refused there
# (field -> (its flag, the model's property that has the layer, what the knob needs))
MODEL_KNOBS = {"mla_eager": ("--mla-eager", "mla", "a model with multi-head latent attention, such as "
                             "deepseek-v3")}


def check_given(model, given: dict, framework: str | None = None) -> None:
    """A ConfigError naming the flag of a :data:`MODEL_KNOBS` knob the user set in ``given``
    (Layout field -> value, before any preset fills it) on ``model`` (a
    :class:`~tpsim.spec.model.ModelConfig`) that lacks the layer the knob acts on; one that
    ``framework``'s preset sets to the same value is the preset's (a search's printed
    ``tpsim predict`` line spells the preset out beside ``--framework``)."""
    preset = FRAMEWORKS.get(framework, {})
    for field, (flag, has, needs) in MODEL_KNOBS.items():
        if given.get(field) and preset.get(field) != given[field] and not getattr(model, has):
            raise ConfigError(flag, "", f"{needs} ({model.name} has none)")
