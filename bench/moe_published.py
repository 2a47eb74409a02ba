"""tpsim's training step of mixture-of-experts models with expert parallelism against published
whole-step throughput, used in no fit.

Megatron-Bridge's performance summary (NVIDIA-NeMo/Megatron-Bridge,
``docs/performance-summary-archive.md``, DGX-H100 rows; the recipes in
``src/megatron/bridge/perf_recipes/qwen/h100/qwen3_moe.py``): Qwen3-30B-A3B pre-training on
16 H100s, FP8 (current scaling), sequence 4096, micro-batch 1, global batch 1024, the router
force-balanced and no token dropped (the summary's MoE note: ``--moe-imbalance`` 1, no
capacity factor), no recomputation. Two layouts:

* 26.04.01 container: TP 1, PP 1, EP 16 (the recipe's flex dispatcher with the HybridEP
  backend): 8,960 tokens/s per GPU, 206 model TFLOP/s per GPU;
* 26.02.01 container: TP 1, PP 2, 12 virtual stages, EP 8: 9,058 tokens/s, 208 TFLOP/s.

Both recipes use Megatron-Bridge's FP8 current-scaling precision (``_perf_precision`` /
``get_precision_config("fp8_cs")``: ``fp8_param_gather`` on, ``grad_reduce_in_fp32`` off:
``--fp8-param-gather --grad-reduce-in-bf16``) and the distributed optimizer with the gradient
reduction overlapped (tpsim's default overlap). tpsim prices CUDA graphs as none. The TFLOP/s
compared is Megatron-LM's count (``megatron_tflops_per_gpu``), as the summary's "Model
TFLOP/sec/GPU".

Each row runs its recipe's token dispatcher and EP overlap (``DISPATCH``): the EP 16 recipe's
flex dispatcher with HybridEP (``moe_token_dispatcher_type = "flex"``,
``moe_flex_dispatcher_backend = "hybridep"``, ``moe_a2a_overlap = False``:
``--moe-dispatcher flex --moe-flex-backend hybridep``), the EP 8 one's all-to-all dispatcher
with ``moe_a2a_overlap`` (``scripts/performance/utils/overrides.py``
``_set_moe_a2a_overlap_overrides``: ``overlap_moe_expert_parallel_comm``,
``--overlap-moe-comm``), Qwen3-235B's and DeepSeek-V3's as below. The script prints each
overlapped row without its overlap too.

What tpsim leaves out of the EP 8 row (its recipe: ``scripts/performance/configs/qwen/
qwen3_workload_base_configs.py`` ``QWEN3_30B_A3B_PRETRAIN_CONFIG_H100_FP8_CS_V1`` before
Megatron-Bridge commit 4a6450755, the all-to-all dispatcher, ``moe_a2a_overlap``): the
host. The same layout is published at 5,113 tokens/s in the 26.02 container and 9,058 in
26.02.01: the software stack alone moves it 1.8x, and Megatron-LM PR #2168 names the CPU
overhead of this overlap as leaving the GPU idle (partial CUDA graphs of the router and the
dispatcher's preprocessing to cut it). tpsim's host model (``host_dispatch_us`` per op, fitted on a
dense model) counts each Python-level op once; the kernels Transformer Engine's grouped GEMMs
launch from C++ (one cuBLAS GEMM, and under FP8 one quantize, per local expert: 5 us each,
:mod:`tpsim.sim.launches`) add 0.2-0.8 ms a layer and move no row, every MoE layer staying
GPU-bound (Qwen3-30B-A3B EP 16: the host's issue 1.34 ms forward against the GPU's 2.23 ms). It
prices the device-to-host
sync of the tokens per expert (``token_dispatcher.py`` ``_maybe_dtoh_and_synchronize``, waited
for before the all-to-all: :func:`tpsim.sim.schedule.run`), which here costs nothing, the
permutation issued before the wait outlasting the host's issue of the all-to-all. NVIDIA's blog "Boosting
MoE Training Throughput with Advanced Fusion Kernels" (2026-06-15) names the same CPU
synchronisation and boundedness of the MoE block, and reports sync-free fused expert kernels
(which allow whole-step CUDA graphs) worth 93% end to end on GPT-OSS and 8% on DeepSeek-V3.

DeepSeek-V3 on 1,024 H100, 25.09 container, dropless: 1,297 tokens/s and 338 model TFLOP/s per
GPU (the summary's 25.09 DGX-H100 table; FP8: the parenthesised 330 is the blockwise recipe).
Its recipe then (Megatron-Bridge commit bafab587b, ``scripts/performance/configs/deepseek/
deepseek_v3_llm_pretrain.yaml``): TP 2 PP 8 VP 4 EP 64 expert-TP 1, global batch 8192, the
layers placed by Megatron's pipeline layout ``Et|(tt|)*30mL`` (``--pipeline-layout``: one
layer beside the embedding, the multi-token-prediction layer beside the loss: the recipe's
``use_mtp``, ``mtp_num_layers`` 1, priced there as one more MoE layer, one more pass of the
output layer and loss, one more embedding lookup, the module's own ops (enorm, hnorm, eh_proj:
:mod:`tpsim.layer.mtp`) and the embedding copy the last stage holds, :mod:`tpsim.training.mtp`;
+35.6% without it), the
yaml's recomputation (``recompute_modules: [mlp, moe_act]``) overridden on H100 by the 25.09
release's ``scripts/performance/run_script.py`` (tag v0.1.0rc4): ``recompute_modules =
["mla_up_proj", "mlp"]`` and ``overlap_grad_reduce = False`` (``--recompute selective
--recompute-modules mla_up_proj,mlp --no-overlap-grad-reduce``,
:mod:`tpsim.layer.recompute_modules`), the shared expert overlapped with the dispatch (as
tpsim's all-to-all slot issues it), no CUDA graphs. Its
dispatcher: the 25.09 release's ``scripts/performance/run_script.py`` (Megatron-Bridge tags
v0.1.0rc3, v0.1.0rc4) sets, on H100, ``enable_deepep`` (``deepseek_v3.py``:
``moe_token_dispatcher_type = "flex"``, ``moe_enable_deepep``) with the router force-balanced,
and ``A2A_1F1B`` (``overlap_moe_expert_parallel_comm``, ``delay_wgrad_compute``, the shared
expert overlap off): ``--moe-dispatcher flex --overlap-moe-comm``. Its router runs in fp32
(``deepseek_provider.py`` at bafab587b: ``DeepSeekProvider.moe_router_dtype = "fp32"``, which
no performance script overrides: ``--moe-router-dtype fp32``), by the 25.09 container's
Megatron-core 0.14 ``RouterGatingLinearFunction`` (``moe_utils.py``: a 16-bit forward with
fp32 logits, TF32 dgrad and wgrad between four casts, :mod:`tpsim.layer.router_dtype`):
+113 us a MoE layer and micro-batch, the row -1.4% -> -1.8%.

Qwen3-235B-A22B on 256 H100, 26.04.01 container: 1,712 tokens/s and 253 model TFLOP/s per GPU
(FP8, global batch 8192, TP 2 PP 8 VP 4 EP 32). Its recipe
(``src/megatron/bridge/perf_recipes/qwen/h100/qwen3_moe.py``
``qwen3_235b_a22b_pretrain_256gpu_h100_fp8cs_config``, on ``recipes/qwen/h100/qwen3_moe.py``
``qwen3_235b_a22b_pretrain_256gpu_h100_bf16_config``): expert-TP 1, SP, no recomputation, the
all-to-all dispatcher with ``moe_a2a_overlap`` and ``overlap_moe_expert_parallel_comm``, the
parameter gather overlapped (``_enable_overlap_param_gather_with_optimizer_step``:
``--overlap-param-gather``), the 94 layers split with
``account_for_embedding_in_pipeline_split`` and ``..._loss_...``: 96 units over 32 chunks,
three each, the embedding and the loss taking one in the first and last
(``--pipeline-layout "Ett|(ttt|)*30ttL"``).

With each recipe's dispatcher and EP overlap priced, every row is fast (+25% to +68%); before,
NCCL's all-to-all at a token per expert (and no overlap) stood in for costs tpsim does not see.
The likeliest, by the sources above, are on the host. tpsim prices each dispatcher's
device-to-host sync (the all-to-all dispatcher's tokens per expert, DeepEP's normal dispatch's
"implicit CPU wait for GPU received count signal", deepseek-ai/DeepEP ``docs/legacy.md``,
HybridEP's dispatch sized on the host) as the GPU idle while the host, having waited, issues
the ops after it, at ``host_dispatch_us`` each: it moves the EP 16 row by 1.6 points and no
other (the all-to-all dispatcher's wait is hidden behind its permutation, DeepSeek-V3's
dispatch waits anyway for the shared experts' all-gather). The MoE layer's Python-level ops
beyond tpsim's one per kernel are counted from Megatron-core's and Transformer Engine's code
(:mod:`tpsim.layer.moe_host`: the router's auxiliary loss, the dispatchers' preprocessing and
device-to-host copies, Transformer Engine's permutation maps, DeepEP's indexing, FP8 padding),
each at ``host_dispatch_us``: 33-66 forward ops a layer where there were 19-33; they bring the
EP 8 row from +68% to +36% (its forward host-bound) and EP 16 from +60% to +56%. Left: the
per-expert Python of Transformer Engine and Megatron-core, HybridEP's own Python, and the EP
overlap's CPU overhead (Megatron-LM PR #2168); no published per-op host figure for
Megatron-core with Transformer Engine on H100 was found. Nothing here is fitted to these rows.

The summary has no Mixtral row on H100; NeMo 2.0's Mixtral rows on B200 and GB200 are checked by
``bench/nemo_moe_published.py``.

Checked and ruled out as the gap's cause (none moves a row by more than a few points):

* load imbalance: every recipe here sets ``moe_router_force_load_balancing`` (Megatron-Bridge
  ``perf_recipes/*/h100``; ``scripts/performance/utils/overrides.py`` sets it for every dropless
  run; the ModelZoo's ``run_h100_235b.sh`` passes ``--moe-router-force-load-balancing``), which
  replaces the router's logits by normal noise drawn with a seed per rank (Megatron-core
  ``moe_utils.py`` ``RandomSTE``): random top-k routing, whose busiest EP rank receives 0.6-1.8%
  more rows than the mean at these rows' sizes (sampled: Qwen3-30B-A3B EP 16 1.009, EP 8 1.006,
  Qwen3-235B EP 32 1.015, DeepSeek-V3 EP 64 1.018, GPT-OSS EP 8 1.011; the busiest expert 1.04-1.09).
  ``--moe-imbalance`` at the busiest rank's figure moves the rows by 0 to -1.5 points, GPT-OSS's by
  -5.5: its 1,024 rows an expert sit on a tile boundary, and tpsim's ``--moe-imbalance`` gives every
  expert the busiest one's rows, where random routing leaves about half of them below the mean.
  (The ModelZoo's long-context table measures real, dropless routing at 8-24% below the
  force-balanced runs: not these rows' setting.)
* the optimizer step and the expert-DP reduction: 0.05 s and 0.01 s of Qwen3-30B-A3B EP 16's
  18.8 s step (expert DP 1; Adam over 1.9 billion parameters a GPU is ~50 GB of memory traffic).
* the model's ends and the pipeline: every row's gap is inside its MoE layers
  (``bench/moe_breakdown.py``); the PP 2 row's idle and transfers are 2.0 s of 22.2.
* the inter-node dispatch's bandwidth, now priced from HybridEP's H100 table (deepseek-ai/DeepEP
  branch ``hybrid-ep``, ``docs/README_Hybrid-EP.md``; ``bench/hybridep_published.py``). Its
  bytes count a token's own node (``tests/utils.py`` ``count_rdma_send_from_routing_map``), so
  at 16 ranks half of them stay in the node: read so, its kernels (16 SMs) run their NVLink
  stage at ~200 GB/s, which binds them on 2 nodes, not at the 43 GB/s a NIC that an earlier
  reading matched tpsim's network stage to. Fitted there (``efficiency.hybridep``), and with
  the routing probabilities the forward dispatch carries, they bring the EP 16 kernels from
  0.39 to 0.51-0.54 ms and the row from +52.2% to +40.1%.
* CUDA graphs: the EP 16 FP8 recipe captures ``attn``, ``moe_router`` and ``moe_preprocess``
  with Transformer Engine; Megatron-Bridge's ``docs/training/cuda-graphs.md`` reports such graphs
  "low-teens to low-20s percent faster" on launch-bound mid-sized MoE runs and neutral on PR
  #3868's: pricing them (the captured ops' host time removed) can only make tpsim faster.

Where the gap sits (``python bench/moe_breakdown.py``, each row's MoE layer by component beside
the time per layer its published step implies; ``python bench/moe_layer_published.py``, the MoE
layer alone against Megatron-LM's own MoE layer benchmark on H100): at large expert shapes
(Mixtral and DeepSeek proxies, EP 8 in a node, ``moe_perf/baseline.json``) tpsim's MoE layer is
not fast (mean |error| 12.7%, BF16 +7% to +32%, FP8 -12% to +15%), so the kernels' and
collectives' pricing at those shapes does not explain the rows here. Where the EP exchange
stays in a node or is small (Qwen3-30B-A3B EP 16 and EP 8, GPT-OSS, the ModelZoo's PP 32 EP 8
and TP 4 EP 8, Megatron-Bridge PR #3868), tpsim's layer is 2.3-4.9 ms short a layer and
micro-batch, as long as 0.65-1.6 times its expert GEMMs and MoE glue together; where the
all-to-all crosses nodes (Qwen3-235B EP 32, DeepSeek-V3 EP 64) tpsim's layer without the
overlap is longer than the published step implies and its overlap saves a third of the step
where the ModelZoo measures 11%. A host bound priced as tpsim prices it (the longer of the GPU's
and the host's issue, per phase and per merged pair) does not close it alone: three times the
host's issue of every MoE op (an experiment, not shipped) brings Qwen3-30B-A3B EP 8 from +68% to
+10% (its merged pair becomes host-bound) and EP 16 from +60% to +40%, the ModelZoo's TP 4 EP 8
from -45% to -33%, and moves the others by under 3 points.

Megatron-Bridge's own runs of Qwen3-30B-A3B (BF16, EP 16) with and without the overlap
(``bench/moe_overlap_published.py``) save 9.9 s (all-to-all) and 3.7 s (HybridEP) a step where
tpsim's overlap saves 11.6 and 3.7: within two nodes the overlap's saving is about right in
seconds, and its speed-up's excess is the short step without it; the HybridEP run's profile
puts most of that shortfall in the communication kernels (8.25 s a step against tpsim's 6.70 s
at HybridEP's measured kernel rates, 5.04 s at NCCL's before). Qwen3's QK-norm is priced (:mod:`tpsim.layer.qk_norm`).
The same profile's other numbers split the BF16 HybridEP run's 24.71 s (tpsim 20.68 s): the
communication kernels 8.25 s (tpsim 6.70 s), the other kernels 14.4-14.6 s (tpsim's MoE-layer
compute 12.9 s and ~0.7 s of the model's ends and optimizer), the GPU idle 1.89 s (tpsim's host
wait 0.72 s): the gap is spread over all three, none alone. Set beside the EP 16 FP8 row above
(the same model, layout, dispatcher, no overlap: 29.26 s a step at 8,960 tokens/s, the 26.04.01
container), the BF16 run is 16% faster, where tpsim has the FP8 step 6% slower than the BF16
one (21.97 s against 20.68 s; 2%, 21.16 s, before each expert's quantize kernels were priced
one after the other on the GPU): about 3.3 s of the FP8 row's 7.3 s gap (1.1 ms a layer and
micro-batch) is on the FP8 path alone, the rest shared with BF16. The two runs are of
different dates and containers (the BF16 one 2026-05/07, router and preprocessing in CUDA
graphs, the FP8 one also the attention), so this points, it does not measure; and Megatron-
Bridge's BF16 recipe of this layout fuses the permutation into HybridEP
(``moe_permute_fusion_into_hybridep``, ``perf_recipes/qwen/h100/qwen3_moe.py`` at commit
067f987d) where the FP8 one does not: if the BF16 run had it, up to 1.27 s a step (tpsim's sort
and unsort) of the 3.3 s is that, not FP8.

The FP8 path as the recipe runs it, read from the code (Megatron-Bridge ``_perf_precision
("fp8_cs")``: Transformer Engine's Float8CurrentScaling, no bf16 first and last layers, FP8
parameters; Transformer Engine at the 26.04 pin f031cf87; Megatron-LM 15e07a2d, April 2026):
each grouped GEMM's input is quantized expert by expert (``split_quantize`` calls
``Float8CurrentScalingQuantizer::quantize_impl`` per split: amax, scale, cast-transpose, 24
kernels for 8 experts), priced with every kernel's launch on the GPU (0.26 ms a layer and
micro-batch; the row +38.3% -> +33.2%); HybridEP dispatches BF16 (``fused_a2a.py``: "HybridEP
dispatcher does not support fp8 dispatch now") and pads each expert's rows inside its dispatch
(``pad_multiple``), so TEGroupedMLP's ``Fp8Padding`` copies nothing here (it copies under the
all-to-all dispatcher and DeepEP: :mod:`tpsim.layer.moe_padding`); the attention core stays
BF16 (the recipe's ``fp8_dpa`` and ``fp8_mha`` off); the split accumulator on the dgrad and
wgrad GEMMs only (``fp8_gemm_dgrad``, ``fp8_gemm_wgrad``) is the dense FP8 runs' the H100 clock
is fitted on; the FP8 parameters' casts and transposes run once a step, not a micro-batch
(:mod:`tpsim.training.weight_cache`). Not found:
any published H100 time of FP8 per-expert cuBLAS GEMMs at these shapes (m 4,096 rows an
expert, k 2,048 and 768); tpsim prices the experts' FP8 GEMMs 1.67 times faster than BF16's
(0.85 against 1.42 ms a layer): at BF16's speed they would add 1.7 s a step.

GPT-OSS 120B on 64 H100, BF16, 26.04.01 container: 5,824 tokens/s and 158 model TFLOP/s per
GPU (the summary's one Megatron-core bf16 H100 whole-job row). Its recipe
(``src/megatron/bridge/perf_recipes/gpt_oss/h100/gpt_oss.py``
``gpt_oss_120b_pretrain_64gpu_h100_bf16_config``): TP 1, PP 4, EP 8, no sequence parallelism,
micro-batch 1, global batch 1280, sequence 4096, the router force-balanced, selective
recomputation of the norms and the experts' activation (``recompute_modules: [layernorm,
moe_act]``), Megatron-Bridge's bf16 precision with ``grad_reduce_in_fp32`` off
(``--grad-reduce-in-bf16``), the distributed optimizer. The model (``models/gpt_oss/
gpt_oss_bridge.py``): biases in every linear and expert (:mod:`tpsim.layer.moe_bias`), a
128-token window on alternate layers (``window_size`` (127, 0), ``window_attn_skip_freq`` 2),
learned attention sinks (``softmax_type`` learnable: Transformer Engine 2.14 then runs cuDNN's
fused attention, sinks and window inside the kernel, priced as the flash3 class; the sinks' few
FLOPs left out), YaRN RoPE (factor 32: its attention factor 1.347 makes Megatron-core apply
RoPE unfused, :mod:`tpsim.layer.rope`), the experts' GLU inputs clamped at 7 in eager PyTorch
with a host synchronisation before the activation (:mod:`tpsim.layer.moe_clamp`); together
these move the row from +49.8% to +32.0%, and the banded layers' attention priced at the
keys a query tile streams (``bench/window_attention_published.py``) to +33.7%. The recipe
overlaps the parameter all-gather (``recipes/gpt_oss/gpt_oss.py``: ``cfg.ddp.overlap_param_gather
= True``, ``--overlap-param-gather``). Its TFLOP/s are Megatron-Bridge's own count, not
Megatron-LM's: 158 / 5,824 = 27.13 GFLOP a token, which is Megatron-Bridge v0.4's
``training/utils/flop_utils.py`` (tags v0.4.0-v0.4.2, the 26.04 containers' era) to the digit,
27.16: its GLU multiplier is 3/2 only for ``activation_func == F.silu``, and gpt-oss's
``quick_gelu`` (``models/gpt_oss/gpt_oss_bridge.py``) gets 1, so each expert counts two GEMMs
(h f and f h), not three; every layer is counted full causal. (The 26.06 rows use v0.5's
count, three GEMMs for any GLU and the window's pairs: 1,081 / 33,166 = 32.6 GFLOP a token.) Megatron-LM's
count, which tpsim prints for every other row, has 34.33 (three expert GEMMs). The script
prints this row's TFLOP/s in the publication's count (``PUBLISHED_COUNT``: Megatron-LM's
formula, :func:`tpsim.training.flops.megatron_flops`, on the model with one MLP input GEMM), so
its two errors agree.

Read off the 26.04 code for this row and found priced as it runs (moving nothing): Transformer
Engine 2.14's backend filter (``attention/dot_product_attention/utils.py``: FlashAttention off
for ``softmax_type`` learnable; ``common/fused_attn/fused_attn.cpp``: cuDNN 9.13.1+ serves the
learnable softmax with the (127, 0) window, bshd or sbhd, on sm90 in training) picks cuDNN's
fused kernel, not the unfused fallback; the experts' grouped GEMMs are its multi-stream cuBLAS
loop (``nvte_multi_tensor_gemm``: the CUTLASS grouped kernel only under
``NVTE_USE_CUTLASS_GROUPED_GEMM``, which no recipe sets), fc1's bias in the GEMM's epilogue and,
in BF16, its gradient in the wgrad GEMM's (``grouped_linear.py``); fc2's bias (``skip_bias_add``)
and the clamps eager, the activation ``torch.compile``d (Megatron-core ``jit.py``); no CUDA
graphs (``cuda_graph_impl`` "none"), the all-to-all dispatcher without the EP overlap. Not found
published: a Hopper timing of cuDNN's attention with sink tokens (cudnn-frontend's gpt_oss
benchmark runs ``with_sink_token`` False) or of that grouped GEMM at 16 experts of 1,024 rows.
Counted from the same code since (Megatron-core 0.17.1, the 26.04 container's, and PyTorch's
autograd): the per-expert ``_apply_bias`` runs 2 E_l + 2 kernels forward and 6 E_l + 3
backward (autograd casts each gradient to its input's dtype), each timed with its launch; the
DDP hook adds each of the 2 E_l expert biases' gradients into the main gradient every
micro-batch (:mod:`tpsim.layer.moe_bias`); TEGroupedMLP refuses ``bias_dropout_fusion`` with
biases (the provider turns it off), so the attention's bias is added in a pass of its own;
the clamps' backward is ``clamp_backward``'s masks, ``logical_and_`` and ``where`` (3 and 5
kernels, :mod:`tpsim.layer.moe_clamp`); the unfused RoPE's backward zeroes and adds the empty
``t_pass`` slice's gradient (:mod:`tpsim.layer.rope`): together +38.5% to +31.0%.
Each expert weight's AccumulateGrad node and DDP post-hook (2 bare calls each, backward:
:mod:`tpsim.layer.moe_loops`) bring it to +29.7% (the backward waits for the host after the
recomputed activation's clamp sync). A sensitivity, not a fit: at 100 or 120 us a host op (the
preset's 58) the row is +23.2% or +16.7%.

NVIDIA's Megatron-MoE-ModelZoo (yanring/Megatron-MoE-ModelZoo, commit e8650517d,
``best_practice/qwen3/readme.md``, H100 table; each row names the Megatron-LM commit it ran):
Qwen3-235B-A22B on 256 H100 (InfiniBand 8 x 50 GB/s), BF16, sequence 4096, global batch 2048,
step seconds. The rows were published on 2025-05-27 (commit 8017e11, ``examples/qwen3/
readme.md``) with their commands (``examples/qwen3/run_235b.sh``) and the model's arguments
then (``model_configs/benchmarking/Qwen3-235B-A22B.yaml``: the distributed optimizer,
``--overlap-grad-reduce``, ``--overlap-param-gather``, SP, expert-TP 1, the flex dispatcher
with DeepEP, ``--moe-grouped-gemm``, ``--moe-permute-fusion``, no cross-entropy fusion, no
CUDA graphs, the embedding and the loss counted in the pipeline split: 96 units), every
command with ``--moe-router-force-load-balancing``, and the router in fp32 (the yaml's
``--moe-router-dtype: fp32``), which Megatron-LM then ran as ``F.linear`` on the input and
weight cast to fp32 (``router.py`` ``Router.gating`` at 1e057005: the forward too in TF32,
autograd's casts back; ``--no-moe-router-gating-linear``, :mod:`tpsim.layer.router_dtype`;
``RouterGatingLinearFunction`` reached the main branch on 2025-06-14, 0f058666, after the
table; f3e6c5 of the ``moe_dev`` branch, not found, is priced the same): +72 us a layer and
micro-batch at TP 2, +34 us at TP 4, +0.68 ms on the FSDP row's 16,384 tokens (its forward
twice), each row 0.1-0.7 points slower. The router is Megatron-core's PyTorch
top-k and auxiliary loss (``--no-moe-router-fusion``, :mod:`tpsim.layer.moe_router`): its
fused kernels came to Megatron-LM in August 2025 (c08d89be; the yaml gained
``--moe-router-fusion`` in 2026). The TP4 command's ``--moe-router-aux-loss-fusion`` is no
flag of Megatron-LM's main branch, then or since: that row is priced unfused too. Cross-node EP
(``moe_dev(f3e6c5)``): DeepEP, TP2 PP8 VP4 EP32, micro-batch 1, recomputation "norm, act"
(``--recompute selective --recompute-modules layernorm moe_act``), 19.7 s, and 17.6 s "+1f1b
overlap" (``--combined-1f1b --combined-1f1b-recipe ep_a2a``: ``--overlap-moe-comm``).
Intra-node EP (``main(1e057005)``): DeepEP EP8 with Megatron-FSDP (``--use-custom-fsdp
--data-parallel-sharding-strategy optim_grads_params``: parameters, gradients and optimizer
state sharded over DP, ``--zero 3``; ``--no-gradient-accumulation-fusion``), micro-batch 4,
full recomputation (``--recompute-method uniform --recompute-num-layers 1``), 17.6 s; the
all-to-all dispatcher TP2 PP32 VP3 EP8, "norm, act", 24.2 s; DeepEP TP4 PP8 VP4 EP8, no
recomputation, 29.0 s. The FSDP row's command runs TP 1 (DP 256) where the table's cells say
TP 2, DP 128 and 4 micro-batches: tpsim runs the command. At TP 2 the row could not reach
17.6 s on this network: each GPU's expert shards (16 experts of 94 layers, 28.4 billion
parameters) are gathered twice (forward, backward: Megatron-FSDP's ``_pre_forward_param_
unshard`` and ``_pre_backward``; the recomputed forward finds them gathered) and their
gradients reduce-scattered in fp32 (``accumulate_allreduce_grads_in_fp32`` for bf16) in every
micro-batch (``grad_reduce_every_bprop`` for ``optim_grads_params``), over expert DP (32
ranks, one a node: stride 8), through the GPU's own NIC: 8 bytes x 31/32 a parameter, 220 GB a
micro-batch, 880 GB in 4 micro-batches, 17.6 s at the NIC's 50 GB/s line rate with nothing
exposed; at TP 1 (2 micro-batches) 440 GB. The table gives no layout for the 94 layers: the
commands' ``--account-for-embedding-in-pipeline-split`` and ``..._loss_...`` with 96 / pp / vp
units a chunk split them as Megatron-Bridge's recipe above at VP 4, and at PP32 VP3 as the
embedding alone, a layer a chunk and the loss alone. The long-context table gives TFLOP/s only
(Megatron-LM's count at other sequence lengths): left out. ``best_practice/deepseek-v3/
readme.md`` gives no H100 step time.

Megatron-Bridge PR #3868 (2026-05-18, its comment and ``docs/training/cuda-graphs.md``, "Mid-sized
MoE pretrain"): Qwen3-30B-A3B pre-training, H100, BF16, 2 nodes (16 GPUs), EP 16, TP 1 PP 1 CP 1,
micro-batch 1, global batch 1024, the all-to-all dispatcher, no EP overlap and no delayed wgrad,
8 steps: eager 41.36 s a step (iterations 5-8), 42.00 s with Transformer Engine's CUDA graphs of
the attention, the router and the dispatcher's preprocessing: capturing them did not help, so
the host's issue of those parts is not what the step waits on. tpsim prices it with the
performance recipes' common settings (the distributed optimizer, ``--grad-reduce-in-bf16``,
Transformer Engine's cross-entropy), no recomputation (the run's "config variant v1" is not
spelt out further); the router force-balanced as in every performance recipe; the
permutation unfused (``--no-moe-permute-fusion``, :mod:`tpsim.layer.moe_permute`), as the runs
of the same shape and container the two days before set it (PRs #3862 and #3867:
``moe_permute_fusion=false``, Transformer Engine's fused permutation failing there): 32.72 ->
32.94 s, the PyTorch ops' kernels ~0.07 ms a layer and micro-batch and their host ops under
the GPU. Every other row's recipe fuses it (Megatron-Bridge's Qwen3, DeepSeek-V3 and GPT-OSS
recipes and model bridges set ``moe_permute_fusion``; every ModelZoo benchmarking config
passes ``--moe-permute-fusion``), as tpsim's default prices it.

    python bench/moe_published.py
"""
from __future__ import annotations

import dataclasses

from tpsim.spec.model import load_model
from tpsim.training.flops import megatron_flops
from tpsim.training.predict import predict

TOPOLOGY = "dgx-h100-ndr-cluster"
# the performance scripts' Transformer Engine fused cross-entropy (cross_entropy_fusion_impl
# "te": scripts/performance/utils/helpers.py, perf_recipes/_common.py's _benchmark_common)
COMMON = dict(dtype="fp8", seq_len=4096, micro_batch=1, global_batch=1024,
              distributed_optimizer=True, grad_reduce_in_bf16=True, fp8_param_gather=True,
              cross_entropy="te", fp8_recipe="tensorwise")

# DeepSeek-V3's recipe as the 25.09 release ran it on H100 (scripts/performance/run_script.py at
# Megatron-Bridge tag v0.1.0rc4): selective recomputation of the MLA up-projections and the
# dense MLPs, the gradient reduction not overlapped (``overlap_grad_reduce = False`` on H100)
RECOMPUTE_V3 = dict(recompute="selective", recompute_modules=("mla_up_proj", "mlp"),
                    overlap_grad_reduce=False)

# label, model, GPUs, layout, published tokens/s per GPU, published model TFLOP/s per GPU
ROWS = (
    ("Qwen3-30B-A3B, 16 H100, TP1 PP1 EP16 (26.04.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=1, dp=16, ep=16), 8960, 206),
    ("Qwen3-30B-A3B, 16 H100, TP1 PP2 VP12 EP8 (26.02.01)", "qwen3-30b-a3b", 16,
     dict(tp=1, pp=2, dp=8, virtual_stages=12, ep=8), 9058, 208),
    ("Qwen3-235B-A22B, 256 H100, TP2 PP8 VP4 EP32 (26.04.01)", "qwen3-235b-a22b", 256,
     dict(tp=2, pp=8, dp=16, virtual_stages=4, ep=32, expert_tp=1, sequence_parallel=True,
          global_batch=8192, pipeline_layout="Ett|(ttt|)*30ttL", overlap_param_gather=True),
     1712, 253),
    ("DeepSeek-V3, 1024 H100, TP2 PP8 VP4 EP64 (25.09)", "deepseek-v3", 1024,
     dict(tp=2, pp=8, dp=64, virtual_stages=4, ep=64, expert_tp=1, sequence_parallel=True,
          global_batch=8192, pipeline_layout="Et|(tt|)*30mL", moe_router_dtype="fp32",
          **RECOMPUTE_V3), 1297, 338),
)

# Each recipe's token dispatcher and EP overlap across micro-batches, by row (module docstring:
# Megatron-core's --moe-token-dispatcher-type, --moe-flex-dispatcher-backend and
# --overlap-moe-expert-parallel-comm as the recipe sets them)
DISPATCH = {
    "Qwen3-30B-A3B, 16 H100, TP1 PP1 EP16 (26.04.01)":
        dict(moe_dispatcher="flex", moe_flex_backend="hybridep"),
    "Qwen3-30B-A3B, 16 H100, TP1 PP2 VP12 EP8 (26.02.01)": dict(overlap_moe_comm=True),
    "Qwen3-235B-A22B, 256 H100, TP2 PP8 VP4 EP32 (26.04.01)": dict(overlap_moe_comm=True),
    "DeepSeek-V3, 1024 H100, TP2 PP8 VP4 EP64 (25.09)":
        dict(moe_dispatcher="flex", overlap_moe_comm=True),
}
# GPT-OSS 120B (26.04.01), BF16: the recipe's own precision, batch and recomputation
GPT_OSS_BF16 = ("GPT-OSS 120B, 64 H100, BF16, TP1 PP4 EP8 (26.04.01)", "gpt-oss-120b", 64,
                dict(tp=1, pp=4, dp=16, ep=8, dtype="bf16", global_batch=1280,
                     fp8_param_gather=False, recompute="selective", overlap_param_gather=True,
                     recompute_modules=("layernorm", "moe_act")), 5824, 158)
ROWS += (GPT_OSS_BF16,)

# Rows whose published TFLOP/s are not Megatron-LM's count, by label: the model as their count
# sees it (module docstring: Megatron-Bridge v0.4 counts gpt-oss's quick-GELU GLU experts as two
# GEMMs, the count of a model with one MLP input GEMM)
PUBLISHED_COUNT = {GPT_OSS_BF16[0]: lambda m: dataclasses.replace(m, activation="gelu")}


# Megatron-MoE-ModelZoo's Qwen3-235B-A22B rows (module docstring): label, layout, published
# step seconds; all BF16 on 256 H100, the flex dispatcher's DeepEP unless the row says A2A
ZOO_COMMON = dict(dtype="bf16", seq_len=4096, micro_batch=1, global_batch=2048,
                  distributed_optimizer=True, overlap_param_gather=True,
                  sequence_parallel=True, expert_tp=1, moe_router_fusion=False,
                  moe_dispatcher="flex", moe_flex_backend="deepep",
                  moe_router_dtype="fp32", moe_router_gating_linear=False)
NORM_ACT = dict(recompute="selective", recompute_modules=("layernorm", "moe_act"))
VP4 = dict(pp=8, virtual_stages=4, pipeline_layout="Ett|(ttt|)*30ttL")
ZOO_ROWS = (
    ("DeepEP TP2 PP8 VP4 EP32, norm+act (f3e6c5)",
     dict(tp=2, dp=16, ep=32, **VP4, **NORM_ACT), 19.7),
    ("  same, +1f1b overlap (f3e6c5)",
     dict(tp=2, dp=16, ep=32, **VP4, **NORM_ACT, overlap_moe_comm=True), 17.6),
    ("DeepEP TP1 EP8 FSDP MBS4, full recompute (1e057005)",
     dict(tp=1, dp=256, ep=8, zero=3, distributed_optimizer=False, overlap_param_gather=False,
          micro_batch=4, recompute="full", recompute_method="uniform", recompute_num_layers=1,
          gradient_accumulation_fusion=False), 17.6),
    ("A2A TP2 PP32 VP3 EP8, norm+act (1e057005)",
     dict(tp=2, pp=32, virtual_stages=3, dp=4, ep=8, moe_dispatcher="alltoall",
          pipeline_layout="E|(t|)*94L", **NORM_ACT), 24.2),
    ("DeepEP TP4 PP8 VP4 EP8 (1e057005)", dict(tp=4, dp=8, ep=8, **VP4), 29.0),
)


# Megatron-Bridge PR #3868 (module docstring): Qwen3-30B-A3B, BF16, 16 H100, the all-to-all
# dispatcher without the EP overlap, eager, seconds a step; the permutation unfused, as the
# runs of its container the day before (PRs #3862 and #3867: "moe_permute_fusion=false" for
# the container's Triton failure in Transformer Engine's fused permutation)
BRIDGE_BF16 = ("Qwen3-30B-A3B BF16 EP16 A2A, eager (Bridge #3868)", "qwen3-30b-a3b", 2,
               dict(dtype="bf16", seq_len=4096, micro_batch=1, global_batch=1024, tp=1, pp=1,
                    dp=16, ep=16, moe_dispatcher="alltoall", distributed_optimizer=True,
                    grad_reduce_in_bf16=True, cross_entropy="te", moe_permute_fusion=False),
               41.36)


def extra_rows():
    """(label, model, nodes, layout, published step seconds) of the step-time rows outside
    the two tables."""
    return (BRIDGE_BF16,)


def extra_main() -> None:
    print(f"\n{'Megatron-Bridge, step seconds':54s} {'step s':>7s} {'publ.':>5s} {'err':>6s}")
    for label, model, nodes, layout, pub in extra_rows():
        step = predict(model, TOPOLOGY, nodes=nodes, **layout).step.time_s
        print(f"{label:54s} {step:7.2f} {pub:5.2f} {step / pub - 1:+6.1%}")


def zoo_rows():
    """(label, predicted step seconds, published) of each ModelZoo row."""
    return [(label, predict("qwen3-235b-a22b", TOPOLOGY, nodes=32,
                            **{**ZOO_COMMON, **layout}).step.time_s, step)
            for label, layout, step in ZOO_ROWS]


def zoo_main() -> None:
    print(f"\nMegatron-MoE-ModelZoo, Qwen3-235B-A22B, 256 H100, BF16 {'step s':>7s} "
          f"{'publ.':>5s} {'err':>6s}")
    out = zoo_rows()
    for label, step, pub in out:
        print(f"{label:54s} {step:7.2f} {pub:5.1f} {step / pub - 1:+6.1%}")
    print(f"EP overlap speedup: tpsim {out[0][1] / out[1][1] - 1:+.1%}, "
          f"published {out[0][2] / out[1][2] - 1:+.1%}")


def rows():
    """(label, predicted tokens/s per GPU, published, predicted TFLOP/s, published, the
    prediction) of each row."""
    out = []
    for label, model, gpus, layout, tokens, tflops in ROWS:
        p = predict(model, TOPOLOGY, nodes=gpus // 8, **{**COMMON, **layout,
                                                          **DISPATCH.get(label, {})})
        out.append((label, p.step.tokens_per_s / gpus, tokens,
                    published_count_tflops(label, model, gpus, layout, p), tflops, p))
    return out


def published_count_tflops(label: str, model: str, gpus: int, layout: dict, p) -> float:
    """TFLOP/s per GPU of the prediction ``p`` of row ``label`` in the count its publication
    uses: Megatron-LM's (:func:`tpsim.training.flops.megatron_flops`) on the model as
    ``PUBLISHED_COUNT`` reads it, else the step's own Megatron-LM figure."""
    if label not in PUBLISHED_COUNT:
        return p.step.megatron_tflops_per_gpu
    run = {**COMMON, **layout}
    flops = megatron_flops(PUBLISHED_COUNT[label](load_model(model)), run["global_batch"],
                           run["seq_len"], run.get("tp", 1))
    return flops / gpus / p.step.time_s / 1e12


def without_overlap(label: str) -> float | None:
    """Tokens/s per GPU of row ``label`` with its dispatcher but without the EP overlap (None:
    the recipe runs none)."""
    settings = DISPATCH.get(label, {})
    if not settings.get("overlap_moe_comm"):
        return None
    _, model, gpus, layout, _, _ = next(r for r in ROWS if r[0] == label)
    p = predict(model, TOPOLOGY, nodes=gpus // 8,
                **{**COMMON, **layout, **settings, "overlap_moe_comm": False})
    return p.step.tokens_per_s / gpus


def main() -> None:
    print(f"{'case':56s} {'tokens/s/GPU':>22s} {'TFLOP/s/GPU':>20s}  exposed EP  fits  "
          f"no EP overlap")
    print(f"{'':56s} {'tpsim':>7s} {'published':>9s} {'err':>5s} {'tpsim':>6s} {'publ.':>5s} "
          f"{'err':>6s}")
    errors = []
    for label, tok, tok_pub, tf, tf_pub, p in rows():
        e1, e2 = tok / tok_pub - 1, tf / tf_pub - 1
        errors.append(abs(e1))
        share = p.step.ep_comm_exposed_s / p.step.time_s
        alone = without_overlap(label)
        alone = f"{alone:7,.0f} {alone / tok_pub - 1:+6.1%}" if alone else ""
        print(f"{label:56s} {tok:7,.0f} {tok_pub:9,} {e1:+5.1%} {tf:6.1f} {tf_pub:5} {e2:+6.1%}"
              f"  {share:9.1%}  {p.memory.fits!s:5s} {alone}")
    print(f"mean |error| tokens/s: {sum(errors) / len(errors):.1%}, max {max(errors):.1%}")
    zoo_main()
    extra_main()


if __name__ == "__main__":
    main()
