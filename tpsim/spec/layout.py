"""One training run's layout: how the job is split over GPUs and run, in one frozen type.

:class:`Layout` holds every parallel and run setting :func:`tpsim.predict` takes (the keyword
form ``predict(model, topology, tp=8, pp=2, ...)`` builds one). Each field is a
:func:`~tpsim.spec.settings.setting`: its meaning, flag and values are declared once, and both
the checks below and the command line's flags (:mod:`tpsim.cli.layout_args`) are read from
them; ``nccl`` it inherits (:mod:`tpsim.spec.release`, as ServingLayout does). What needs the
model or the topology (tp, the dtype, the NCCL release, the stages' layers) ``predict`` checks.

Fields set to None take the run's default: ``global_batch`` micro_batch x dp, ``seq_len``,
``dropout``, ``attention`` the model's, ``dtype`` the device's first of bf16, fp16, fp32,
``expert_tp`` tp.
"""
from __future__ import annotations

from dataclasses import dataclass

from .run_checks import MAX_MICRO_BATCHES, check_batch, check_run
from .cp_checks import check_cp_settings
from .model import ATTENTION_KERNELS, ATTENTIONS
from .moe_checks import check_moe
from .optimizer_state import MAIN_PARAMS_DTYPES, MOMENT_DTYPES, check_state
from .precision import FP8_RECIPES, PRECISION
from .recompute_checks import check_recompute
from .release import Released
from .router_dtype import RouterDtype
from .settings import changed, check, declared, defaults, made, setting
from .sharding import check_sharding

CP_COMMS = ("p2p", "all-gather", "a2a", "a2a+p2p")   # Transformer Engine's cp_comm_type
MOE_DISPATCHERS = ("alltoall", "allgather", "flex")  # Megatron-core's moe_token_dispatcher_type
FLEX_BACKENDS = ("deepep", "hybridep")   # Megatron-core's moe_flex_dispatcher_backend
MOE_ROUTINGS = ("uniform", "round-robin")   # tpsim.cost.all_to_all's fan-outs
CROSS_ENTROPIES = ("unfused", "te", "xentropy")                   # tpsim.layer.embedding.CROSS_ENTROPY
RECOMPUTE = ("none", "selective", "full")      # activation recomputation (tpsim.layer.recompute)
RECOMPUTE_MODES = RECOMPUTE + ("op",)          # and torchtitan's by operation (not searched)
# Megatron-core's --recompute-modules (transformer_config.py) and --recompute-method
RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe",
                     "shared_experts")
RECOMPUTE_METHODS = ("uniform", "block")
DTYPES = tuple(PRECISION)                      # the dtypes training memory is defined for
ZERO_STAGES = (0, 1, 2, 3)
ADAM_KERNELS = ("fused", "foreach", "per-tensor")   # tpsim.training.optimizer_step.ADAM_TERMS


def _count(default, doc, flag, lists=False, **kw):
    return setting(default, doc, flag=flag, kind="count", lists=lists, **kw)


def _flag(default, doc, flag, **kw):
    return setting(default, doc, flag=flag, kind="flag", **kw)


@dataclass(frozen=True, kw_only=True)
class Layout(Released, RouterDtype):
    """One way to run a training job (module docstring); frozen, keyword-only, checked when
    made (``dataclasses.replace`` checks the new one)."""
    # the layer's settings
    tp: int = _count(8, "tensor-parallel degree (consecutive ranks)", "--tp", lists=True,
                     megatron="--tensor-model-parallel-size")
    micro_batch: int = _count(1, "sequences per micro-batch", "--micro-batch", lists=True,
                              megatron="--micro-batch-size")
    seq_len: int | None = setting(None, "sequence length, tokens (default: the model's)",
                                  flag="--seq", kind="tokens", lists=True,
                                  megatron="--seq-length")
    dtype: str | None = setting(None, "training dtype (default: the first of these the device "
                                "lists)", flag="--dtype", kind="choice", choices=DTYPES, lists=True)
    sequence_parallel: bool = _flag(False, "Megatron sequence parallelism (all-gather + reduce-"
                                    "scatter)", "--sequence-parallel")
    dropout: float | None = setting(None, "the probability of every dropout: embedding, "
                                    "residual, attention (0: none; default: the model's); a fused "
                                    "attention kernel pays its draws (tpsim.cost.attention_dropout)",
                                    flag="--dropout", kind="probability")
    attention: str | None = setting(
        None, "fused (the device's flash kernel), a flash kernel by name, or unfused "
        "(Megatron's separate kernels) (default: the model's)", flag="--attention", kind="name",
        choices=ATTENTIONS + ATTENTION_KERNELS,
        expected="fused, unfused or the name of a kernel the device lists")
    cross_entropy: str = setting(
        "unfused", "the loss's cross-entropy kernels: unfused (Megatron-core's vocab-parallel "
        "cross-entropy over fp32 logits) or te (Transformer Engine's fused kernels, Megatron-"
        "core's --cross-entropy-loss-fusion with --cross-entropy-fusion-impl te, as Megatron-"
        "Bridge's recipes run) or xentropy (flash-attn's fused kernel, llm-foundry's "
        "fused_crossentropy; tpsim.layer.embedding)", flag="--cross-entropy", kind="choice",
        choices=CROSS_ENTROPIES)
    train_metrics: int = _count(
        0, "cross-entropies the trainer computes over each micro-batch's logits as training "
        "metrics, without gradient, after its backward (Composer 0.16 updates each train metric "
        "of the model every micro-batch; llm-foundry's MPT has two; tpsim.layer.embedding)",
        "--train-metrics", least=0)
    recompute: str = setting("none", "activation recomputation (selective: the modules of "
        "--recompute-modules, by default the unfused attention core; full: whole layers, see "
        "--recompute-method; op: torchtitan's by operation)", flag="--recompute", kind="choice",
        choices=RECOMPUTE_MODES, lists=True, megatron="--recompute-granularity")
    recompute_modules: tuple[str, ...] | None = setting(
        None, "what selective recomputation re-runs, Megatron-core's modules: core_attn, "
        "moe_act, layernorm, mla_up_proj, mlp, moe, shared_experts (tpsim.layer."
        "recompute_modules; default: core_attn; Megatron-LM's own flag)",
        flag="--recompute-modules", kind="names", choices=RECOMPUTE_MODULES)
    recompute_method: str | None = setting(
        None, "which layers full recomputation re-runs: uniform (every layer, the input of "
        "each group of --recompute-num-layers kept) or block (the first --recompute-num-layers "
        "of each virtual stage, the rest none) (default: every layer, its input kept; Megatron-"
        "LM's own flag)", flag="--recompute-method", kind="choice", choices=RECOMPUTE_METHODS)
    recompute_num_layers: int | None = _count(None, "layers per checkpointed group (uniform) or "
        "recomputed per virtual stage (block) (Megatron-LM's own flag)", "--recompute-num-layers")
    cpu_offload_layers: int = _count(
        0, "layers whose saved activations go to host memory after their forward and come back "
        "before their backward, on side streams (Transformer Engine's CPU offloading: "
        "tpsim.training.offload); needs --pp 1 and no --recompute", "--cpu-offload-layers",
        least=0, megatron="--cpu-offloading-num-layers")
    # the step's: pipeline, data parallelism, optimizer, the network's size
    pp: int = _count(1, "pipeline-parallel stages", "--pp", lists=True,
                     megatron="--pipeline-model-parallel-size")
    dp: int = _count(1, "data-parallel replicas", "--dp", lists=True)
    global_batch: int | None = _count(None, "sequences per optimizer step (default micro-batch x "
        "dp: one micro-batch)", "--global-batch", lists=True, megatron="--global-batch-size")
    virtual_stages: int = _count(1, "model chunks per pipeline stage: interleaved 1F1B when more "
        "than 1", "--virtual-stages", lists=True, megatron="--num-virtual-stages-per-pipeline-rank")
    distributed_optimizer: bool = _flag(False, "shard the optimizer state over DP (ZeRO-1): "
        "reduce-scatter + all-gather", "--distributed-optimizer",
        megatron="--use-distributed-optimizer")
    overlap_grad_reduce: bool = _flag(
        True, "reduce the DP gradients in buckets beside the backward, as Megatron-core "
        "(False: after the whole backward)", "--overlap-grad-reduce",
        help="reduce the gradients after the whole backward (older Megatron, "
             "Megatron-DeepSpeed; default: in buckets beside it, as Megatron-core)")
    overlap_param_gather: bool = _flag(
        False, "the distributed optimizer's weight all-gather bucket by bucket beside the next "
        "step's first forwards, as Megatron-core's --overlap-param-gather (False: after the "
        "optimizer; the flag is Megatron-LM's own name)", "--overlap-param-gather")
    grad_reduce_in_bf16: bool = _flag(
        False, "keep and reduce the main gradients in bf16, 2 bytes (default: fp32); the "
        "optimizer copies its shard to fp32 (Megatron-LM's own flag)", "--grad-reduce-in-bf16")
    fp8_param_gather: bool = _flag(
        False, "quantized parameters (Transformer Engine's Float8Tensor: the fp8 copy and its "
        "transpose, no bf16 copy; MXFP8, NVFP4: their row-wise and column-wise copies), "
        "all-gathered quantized by the distributed optimizer; needs --dtype fp8, mxfp8 or "
        "nvfp4 (Megatron-LM's own flag; --fp4-param-gather for NVFP4)", "--fp8-param-gather")
    fp8_recipe: str = setting(
        "delayed", "how --dtype fp8 finds each tensor's scale: delayed (from the amax history, "
        "the cast finding the new amax: one pass over the 16-bit tensor), tensorwise (current "
        "scaling, Megatron-Bridge's fp8_cs: an amax pass first, the norm's output cast apart) "
        "or blockwise (1 x 128 and 128 x 128 tiles, their scales found in the cast, the norm's "
        "output cast apart; its GEMMs priced as fp8's) (tpsim.spec.precision; Megatron-LM's own "
        "flag and default; MXFP8 and NVFP4 are dtypes of their own)", flag="--fp8-recipe",
        kind="choice", choices=FP8_RECIPES)
    async_tensor_model_parallel_allreduce: bool = _flag(
        True, "the backward's TP all-reduce of the input gradient runs beside the weight-gradient "
        "GEMM (False: after it, as Megatron-LM before September 2021; tpsim.layer.linears)",
        "--async-tensor-model-parallel-allreduce",
        help="the backward's TP all-reduce after the weight-gradient GEMM, not beside it "
             "(Megatron-LM's own flag; its default before September 2021)")
    gradient_accumulation_fusion: bool = _flag(
        True, "the weight-gradient GEMMs accumulate into the main gradient (False: each writes a "
        "new 16-bit gradient that autograd adds into the parameter's, as Megatron-LM before "
        "February 2022; tpsim.layer.linears)", "--gradient-accumulation-fusion",
        help="each weight-gradient GEMM writes a new gradient that a kernel of its own adds into "
             "the parameter's (Megatron-LM's own flag; its only way before February 2022)")
    main_grad_add: bool = _flag(
        True, "without --gradient-accumulation-fusion, Megatron-core's DDP hook adds each "
        "micro-batch's weight gradient into the fp32 main gradient, 10 bytes a weight (False: "
        "autograd into the 16-bit .grad on m - 1 of m micro-batches, as Megatron-LM 2021; "
        "ignored with the fusion or --zero 2, 3; tpsim.layer.linears)", "--main-grad-add",
        help="autograd adds the unfused weight gradients into the 16-bit .grad (Megatron-LM "
             "2021; default: Megatron-core's DDP hook, into the fp32 main gradient)")
    deterministic_mode: bool = _flag(
        False, "torch.use_deterministic_algorithms(True): PyTorch fills each new tensor "
        "Transformer Engine allocates with NaN, one more write of the layer's GEMM, attention "
        "and LayerNorm outputs (tpsim.sim.fill), and FlashAttention-2's backward loops over "
        "key blocks in a few CTAs a head (tpsim.sim.deterministic_attention; other kernels' "
        "as the default one) (Megatron-LM's own flag)", "--deterministic-mode")
    query_key_layer_scaling: bool = _flag(
        False, "Q K^T scaled by 1 / layer number, the softmax in fp32 (Megatron-DeepSpeed's and "
        "Megatron-LM 2021's default); it changes the unfused core's softmax where Megatron's "
        "fused kernel does not apply (tpsim.layer.unfused)", "--query-key-layer-scaling",
        megatron="--apply-query-key-layer-scaling")
    scatter_gather_p2p: bool = _flag(False, "without SP each TP rank sends 1/tp of an activation, "
        "the next stage all-gathers it (Megatron-LM 2021, DeepSpeed's pipeline engine)",
        "--scatter-gather-p2p")
    create_attention_mask: bool = _flag(
        False, "the data loader's b x s x s boolean mask copied to the GPU and broadcast over TP "
        "on the first and last stages a micro-batch (Megatron-LM's default; "
        "tpsim.training.data_mask)", "--create-attention-mask",
        megatron="--create-attention-mask-in-dataloader")
    tp_comm_overlap: bool = _flag(False, "Transformer Engine's TP communication overlap "
                                  "(userbuffers; needs --sequence-parallel)", "--tp-comm-overlap")
    eager_kernels: bool = _flag(
        False, "PyTorch eager's elementwise kernels, one per tensor operation, as torchtitan's "
        "Llama runs without torch.compile: RMSNorm in fp32, rope as an fp32 complex product, "
        "SwiGLU's silu and product, GQA's repeated K/V (tpsim.layer.eager; default: Megatron-"
        "core's and Transformer Engine's fused kernels)", "--eager-kernels")
    mla_eager: bool = _flag(False, "MLA's rope and q/k concatenations as eager PyTorch kernels, as "
        "NeMo AutoModel's DeepSeek-V3 (tpsim.layer.mla_eager; default: fused; without MLA the "
        "commands refuse it, predict() ignores it, as the automodel preset's)", "--mla-eager")
    nodes: int | None = _count(None, "size the topology's network to this many nodes", "--nodes")
    first_stage_layers: int | None = _count(
        None, "layers on the first pipeline stage, split evenly over its virtual stages (the "
        "rest split evenly over the middle stages)", "--first-stage-layers",
        megatron="--decoder-first-pipeline-num-layers")
    last_stage_layers: int | None = _count(
        None, "layers on the last pipeline stage, split evenly over its virtual stages (the "
        "rest split evenly over the middle stages)", "--last-stage-layers",
        megatron="--decoder-last-pipeline-num-layers")
    pipeline_layout: str | None = setting(
        None, "the layers of each virtual stage, as Megatron-core's layout string: per virtual "
        "stage E (embedding), t (transformer layer), m (multi-token prediction, in the last), "
        "L (output layer), stages separated by |, (...)*n repeats (tpsim.spec.pipeline_layout)",
        flag="--pipeline-layout", kind="name", megatron="--pipeline-model-parallel-layout")
    pp_runtime: str = setting("megatron", "the interleaved pipeline's runtime: megatron, or "
        "torch-multi (torch 2.8's ScheduleInterleaved1F1B: a blocking exchange after every step of "
        "its table, the ranks in lock-step; tpsim.training.torch_pipeline)", flag="--pp-runtime",
        kind="choice", choices=("megatron", "torch-multi"))
    mtp_layers: int | None = _count(
        None, "multi-token-prediction layers trained, in the last virtual stage (default: the "
        "model's mtp_layers, DeepSeek-V3's 1; 0: none; a --pipeline-layout lists them as m)",
        "--mtp-layers", least=0, megatron="--mtp-num-layers")
    memory_headroom: float = setting(
        0.0, "share of the device memory left to the tensors (after the topology's reserve "
        "and fragmentation) that the run keeps free on top", flag="--memory-headroom",
        kind="probability")
    usd_per_gpu_hour: float | None = setting(
        None, "price of one GPU for an hour, USD: the step's cost_usd = GPUs x step time / "
        "3600 x this (None: no cost figures); it changes no time", flag="--usd-per-gpu-hour",
        kind="price")
    cp: int = _count(1, "context-parallel degree: each sequence split over this many GPUs "
                     "(tpsim.layer.context_parallel)", "--cp", lists=True,
                     megatron="--context-parallel-size")
    cp_comm: str = setting("p2p", "context parallelism's exchange: p2p (K/V ring), all-gather "
                           "(K/V), a2a (Ulysses), a2a+p2p (a2a inside a node, ring across)",
                           flag="--cp-comm", kind="choice", choices=CP_COMMS,
                           megatron="--cp-comm-type")
    # mixture of experts (tpsim.layer.moe_ep): Megatron-core's MoE parallel folding
    ep: int = _count(1, "expert-parallel degree: the routed experts split over ep ranks, the "
                     "tokens sent to them by all-to-all (mixture of experts)", "--ep",
                     megatron="--expert-model-parallel-size")
    expert_tp: int | None = _count(None, "tensor-parallel degree of the experts (default: --tp, "
                                   "as Megatron-core)", "--expert-tp",
                                   megatron="--expert-tensor-parallel-size")
    moe_imbalance: float = setting(
        1.0, "tokens of the busiest expert over the mean (max / mean, >= 1): the grouped GEMMs "
        "and all-to-alls run at its load", flag="--moe-imbalance", kind="rate",
        expected="a finite number >= 1")
    moe_capacity_factor: float | None = setting(
        None, "expert capacity over the balanced load: tokens beyond it are dropped (None: "
        "none dropped)", flag="--moe-capacity-factor", kind="rate",
        megatron="--moe-expert-capacity-factor")
    moe_dispatcher: str = setting(
        "alltoall", "how the MoE layers move tokens to their experts (tpsim.layer.moe_flex): "
        "alltoall (NCCL all-to-alls on the EP group), allgather (all-gather and reduce-scatter "
        "on the EP x TP group), flex (fused permute and two-level dispatch, --moe-flex-backend); "
        "Megatron-core's default is allgather, tpsim's alltoall; dense layers ignore it",
        flag="--moe-dispatcher", kind="choice", choices=MOE_DISPATCHERS,
        megatron="--moe-token-dispatcher-type")
    moe_flex_backend: str = setting(
        "deepep", "the flex dispatcher's kernels: deepep or hybridep (both priced as the "
        "two-level dispatch, tpsim.cost.all_to_all.hierarchical_dispatch_time)",
        flag="--moe-flex-backend", kind="choice", choices=FLEX_BACKENDS,
        megatron="--moe-flex-dispatcher-backend")
    overlap_moe_comm: bool = _flag(
        False, "the EP dispatch and combine of one micro-batch hidden behind another "
        "micro-batch's compute in the 1F1B steady state (Megatron-core's "
        "--overlap-moe-expert-parallel-comm; tpsim.training.moe_overlap)",
        "--overlap-moe-comm", megatron="--overlap-moe-expert-parallel-comm")
    moe_permute_fusion: bool = _flag(True, "the all-to-all dispatcher's permutation, chunk "
        "sorts and unpermutation as Transformer Engine's fused kernels, as Megatron-Bridge "
        "sets (Megatron-LM's --moe-permute-fusion)", "--moe-permute-fusion", help="permute the "
        "MoE tokens with PyTorch ops (Megatron-core's default; tpsim.layer.moe_permute)")
    moe_router_fusion: bool = _flag(True, "the router's top-k and auxiliary loss as fused kernels, "
        "as Megatron-Bridge sets (Megatron-LM's --moe-router-fusion)", "--moe-router-fusion",
        help="route with PyTorch ops (Megatron-core's default; tpsim.layer.moe_router)")
    moe_permute_fusion_into_hybridep: bool = _flag(False, "HybridEP's permutation inside its "
        "dispatch and combine kernels (else kernels of their own: tpsim.layer.moe_flex)",
        "--moe-permute-fusion-into-hybridep")
    moe_routing: str = setting("uniform", "a token's experts, for the flex dispatcher's fan-out: "
        "uniform (k at random: a balanced router) or round-robin (token t to experts kt..kt+k-1 "
        "mod E: NeMo AutoModel's fake_balanced_gate, in the router's place: tpsim.spec.fake_gate)",
        flag="--moe-routing", kind="choice", choices=MOE_ROUTINGS)
    # sharded data parallelism (tpsim.training.sharded_dp)
    zero: int = setting(0, "ZeRO stage: 1 shards the optimizer state over DP (as "
                        "--distributed-optimizer), 2 also the gradients (reduce-scatter per "
                        "micro-batch), 3 also the weights (FSDP: all-gathered unit by unit)",
                        flag="--zero", kind="choice", choices=ZERO_STAGES)
    reshard_after_forward: bool = _flag(
        True, "ZeRO-3 frees each gathered unit after its forward and gathers it again for the "
        "backward (FSDP2's reshard_after_forward; False: kept until the backward)", "--reshard-after-forward",
        help="keep each ZeRO-3 unit gathered from its forward to its backward (default: "
             "free it after the forward and all-gather it again, FSDP2's default)")
    fsdp_sync_every_micro_batch: bool = _flag(
        False, "with a pipeline, ZeRO-2/3 reduce-scatters each unit's gradients and reshards it in "
        "every micro-batch's backward, as without one (FSDP2's hooks when the stage module is not "
        "itself fully_shard-ed, as NeMo AutoModel's causal-LM wrapper; default: torch's pipeline "
        "defers both to the stage's last backward; tpsim.training.sharded_dp)",
        "--fsdp-sync-every-micro-batch")
    expert_grad_reduce_in_bf16: bool = _flag(
        False, "ZeRO-2/3 reduce-scatter the folded routed experts' gradients in bf16, 2 bytes "
        "(FSDP2 with no reduce_dtype for the experts' units, as NeMo AutoModel's MoE parallelizer; "
        "ignored below --zero 2; tpsim.training.sharded_dp)", "--expert-grad-reduce-in-bf16")
    shard_group: int | None = _count(None, "ZeRO-2/3 ranks the state is sharded over, the DP "
        "replicas all-reducing across groups (HSDP; default: all of dp)", "--shard-group")
    fp8_all_gather: bool = _flag(False, "ZeRO-3 all-gathers the weights in fp8, 1 byte each "
                                 "(torchtitan's enable_fsdp_float8_all_gather)", "--fp8-all-gather")
    fsdp_fp32_params: bool = _flag(
        False, "ZeRO-3's parameter shards are fp32, the optimizer's master weights themselves: "
        "no 16-bit shard is kept, the 16-bit weights exist only gathered (PyTorch FSDP's mixed "
        "precision, as torchtitan and llm-foundry run it; ignored below --zero 3; "
        "tpsim.training.shard_state.state_bytes)", "--fsdp-fp32-params")
    fsdp_flat_params: bool = _flag(
        False, "ZeRO-2/3 as PyTorch FSDP1 runs it: each unit's parameters are views of one flat "
        "tensor, so every micro-batch's backward copies the unit's 16-bit gradients into the "
        "flat gradient (llm-foundry's Composer FSDP; ignored below --zero 2; "
        "tpsim.training.fsdp_flat)", "--fsdp-flat-params")
    fsdp2_copies: bool = _flag(
        False, "ZeRO-2/3 as PyTorch FSDP2 runs it: each all-gather's output copied into the "
        "unit's parameters and each unit's gradients into the reduce-scatter input, on the "
        "compute stream (torchtitan; ignored below --zero 2; tpsim.training.fsdp_copies)",
        "--fsdp2-copies")
    # the optimizer step (tpsim.training.optimizer_step)
    log_params_norm: bool = _flag(
        False, "the fp32 main weights' L2 norm logged every step: one more read of the rank's "
        "shard (Megatron-LM's own flag; tpsim.training.optimizer_step)", "--log-params-norm")
    log_num_zeros_in_grad: bool = _flag(
        False, "the zeros of the fp32 main gradients counted every step: one more read of the "
        "rank's shard (Megatron-LM's own flag; tpsim.training.optimizer_step)",
        "--log-num-zeros-in-grad")
    adam: str = setting(
        "fused", "Adam's kernels: fused (one multi-tensor kernel, 28 bytes a parameter: "
        "Megatron-core's FusedAdam), foreach (torch.optim.AdamW's 8 multi-tensor kernels, 80 "
        "bytes: torchtitan), per-tensor (Composer's DecoupledAdamW, a Python loop of 8 torch "
        "ops a tensor, 80 bytes: llm-foundry)", flag="--adam", kind="choice", choices=ADAM_KERNELS)
    grad_buffer: bool = _flag(
        True, "the gradients live in a buffer zeroed by one memset every step (Megatron-core's "
        "zero_grad_buffer); off: PyTorch's zero_grad(set_to_none=True) frees them, no kernel",
        "--grad-buffer",
        help="no gradient buffer to zero each step (PyTorch's zero_grad(set_to_none=True))")
    main_params_dtype: str = setting(
        "fp32", "the optimizer's main weights: fp32, fp16 (a copy) or bf16 (the bf16 weights "
        "themselves, no copy: PyTorch's Adam on a bf16 model; tpsim.spec.optimizer_state)",
        flag="--main-params-dtype", kind="choice", choices=MAIN_PARAMS_DTYPES)
    exp_avg_dtype: str = setting("fp32", "Adam's first moment as stored (Megatron-LM's own flag)",
                                 flag="--exp-avg-dtype", kind="choice", choices=MOMENT_DTYPES)
    exp_avg_sq_dtype: str = setting("fp32", "Adam's second moment as stored (Megatron-LM's own "
        "flag)", flag="--exp-avg-sq-dtype", kind="choice", choices=MOMENT_DTYPES)

    def __post_init__(self):
        check(self)
        self._check_together()

    def _check_together(self) -> None:
        """What one setting allows of another (the model and topology aside)."""
        check_recompute(self)
        check_sharding(self)
        check_run(self)
        check_cp_settings(self)
        check_moe(self)
        check_state(self)
        check_batch(self)

    @property
    def per_step(self) -> int:               # sequences a micro-batch of every replica holds
        return self.micro_batch * self.dp

    @property
    def micro_batches(self) -> int:          # global_batch / (micro_batch x dp), 1 if not given
        return 1 if self.global_batch is None else self.global_batch // self.per_step

    @property
    def backward(self) -> tuple[bool, bool, float, bool]:
        """The linears' backward (tpsim.layer.linears): dX's TP all-reduce beside wgrad, the
        gradient accumulation fusion, without it the share of added weight gradients ((m-1)/m
        into the 16-bit .grad, every one into the fp32 main gradient) and whether into that."""
        fused, main = self.gradient_accumulation_fusion, self.main_grad_add and self.zero < 2
        return (self.async_tensor_model_parallel_allreduce, fused,
                1.0 if fused or main else 1 - 1 / self.micro_batches, main and not fused)

    def predict_kwargs(self) -> dict:
        """The fields set away from their defaults: ``tpsim.predict``'s keyword form."""
        return changed(self)

    @classmethod
    def of(cls, settings: dict) -> Layout:
        """``Layout(**settings)``, checked the same, made faster (predict's keyword form)."""
        return made(cls, defaults(cls), settings)

    def replace(self, **changes) -> Layout:
        """``dataclasses.replace(self, **changes)``, checked the same, made faster."""
        return made(type(self), self.__dict__, changes)

    @classmethod
    def unchecked(cls, **values) -> Layout:
        """Known-valid values (the search's), made unchecked; a test checks each passes."""
        return made(cls, defaults(cls), values, checked=False)

    @classmethod
    def flags(cls) -> dict[str, str]:        # each field's flag, by field name
        return {f.name: f.metadata["flag"] for f in declared(cls)}


__all__ = ["Layout", "RECOMPUTE", "RECOMPUTE_MODES", "RECOMPUTE_MODULES", "RECOMPUTE_METHODS", "DTYPES",
           "CP_COMMS", "MOE_DISPATCHERS", "FLEX_BACKENDS", "MOE_ROUTINGS", "CROSS_ENTROPIES", "MAX_MICRO_BATCHES"]
