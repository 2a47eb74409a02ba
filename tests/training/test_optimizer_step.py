"""The optimizer step as each stack runs it (tpsim.training.optimizer_step): bytes per parameter
of its kernels, what zeroes the gradients, whether a 16-bit copy is written."""
import pytest

import tpsim
from tpsim.base.errors import TpsimError
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.layout import ADAM_KERNELS, Layout
from tpsim.training import terms
from tpsim.spec.precision import precision_key
from tpsim.training.optimizer_step import (ADAM_TERMS, MEGATRON, OptimizerStep, optimizer_bytes,
                                           optimizer_s, optimizer_step)
from tpsim.training.sharded_dp import Sharding

DEV = load_topology("dgx-h100").device
TORCH = OptimizerStep("foreach", grad_buffer=False, master_copy=False)


def test_the_layouts_choices_are_the_priced_kernels():
    assert ADAM_KERNELS == tuple(ADAM_TERMS)


@pytest.mark.parametrize("main, m, v, fused, foreach, per_tensor, copy", [
    ("fp32", "fp32", "fp32", 28, 80, 80, 6),
    ("bf16", "bf16", "bf16", 4 + 2 * 6, 8 + 8 + 6 + 22, 4 + 8 + 10 + 22, None),
    ("fp32", "bf16", "bf16", 4 + 8 + 8, 16 + 8 + 6 + 22, 8 + 8 + 10 + 22, 6),
    ("fp16", "fp8", "bf16", 4 + 4 + 2 + 4, 8 + 8 + 3 + 22, 4 + 8 + 5 + 22, 4)])
def test_adam_moves_its_state_in_the_state_dtypes(main, m, v, fused, foreach, per_tensor, copy):
    """fused g + 2(p + m + v), foreach 4p + 2g + 3m + 11v, per-tensor 2p + 2g + 5m + 11v with
    g = 4; the copy to the bf16 weights reads p and writes 2, none where p are the weights."""
    key = precision_key("bf16", adam_dtypes=(main, m, v))
    for adam, want in (("fused", fused), ("foreach", foreach), ("per-tensor", per_tensor)):
        b = optimizer_bytes(key, owned=1.0, zeroed=0.0, step=OptimizerStep(adam))
        assert b["adam"] == want and b.get("copy-to-weights") == copy


def test_torch_adamw_moves_norm_clip_and_eight_passes_and_nothing_else():
    """foreach AdamW over fp32 shards: norm 4 + clip 8 + 80 = 92 bytes per owned parameter;
    no memset (set_to_none), no 16-bit copy (fp32 FSDP parameters)."""
    for adam in ("foreach", "per-tensor"):
        b = optimizer_bytes("bf16", owned=1.0, zeroed=1.0, step=OptimizerStep(adam, False, False))
        assert sum(b.values()) == 92 and b["zero-grads"] == 0 and "copy-to-weights" not in b


MEGATRON_KEYS = {"fp16": "fp16", "bf16": "bf16", "bf16-grads": precision_key("bf16", True),
                 "fp8": precision_key("fp8", True, True), "mxfp8": precision_key("mxfp8", True, True),
                 "nvfp4": precision_key("nvfp4", True, True), "fp32": "fp32"}


@pytest.mark.parametrize("name, total", [
    ("fp16", 4 + 8 + 28 + (2 + 4) + 8 + (4 + 2)),       # Megatron-core, -LM 2021, -DeepSpeed
    ("bf16", 4 + 8 + 28 + (4 + 2)),                     # fp32 main gradients: no copy
    ("bf16-grads", 4 + 8 + 28 + (2 + 4) + (4 + 2)),     # copied into fp32, not unscaled
    ("fp8", 4 + 8 + 28 + (2 + 4) + (4 + 1)),            # fp8 parameters: the copy writes 1
    ("mxfp8", 4 + 8 + 28 + (2 + 4) + (4 + 2)),
    ("nvfp4", 4 + 8 + 28 + (2 + 4) + (4 + 0.5)),
    ("fp32", 4 + 8 + 28)])
def test_megatron_unscales_only_under_fp16s_loss_scale(name, total):
    """Megatron's step per owned parameter: norm 4 + clip 8 + fused Adam 28, the 16-bit main
    gradients' copy into fp32 (2 + 4), the main weights' copy into the model's (4 + the
    gathered bytes), and the unscale with its inf check (read, write the fp32 main gradient:
    8) only for fp16, the one dtype with a grad scaler (megatron/core/optimizer/__init__.py)."""
    b = optimizer_bytes(MEGATRON_KEYS[name], owned=1.0, zeroed=0.0)
    assert sum(b.values()) == total and ("unscale" in b) is (name == "fp16")
    assert b.get("unscale", 8) == 8


@pytest.mark.parametrize("dtype, step, total", [
    ("fp16", OptimizerStep("per-tensor", False, False, grads=2), 2 + 4 + 76 + 4),  # GradScaler
    ("bf16", OptimizerStep("per-tensor", False, False, grads=4), 4 + 8 + 80),      # llm-foundry
    ("bf16", OptimizerStep("foreach", False, False, grads=4), 4 + 8 + 80),         # torchtitan
    (precision_key("bf16", adam_dtypes=("bf16",) * 3),                             # automodel
     OptimizerStep("foreach", False, False, grads=2), 2 + 4 + (8 + 4 + 6 + 22))])
def test_pytorch_fsdp_unscales_only_under_fp16s_grad_scaler(dtype, step, total):
    """The kept shard's bytes g in every kernel: norm g, clip 2g, Adam (per-tensor 2p + 2g +
    5m + 11v, foreach 4p + 2g + 3m + 11v), and GradScaler's unscale 2g only under fp16."""
    b = optimizer_bytes(dtype, owned=1.0, zeroed=0.0, step=step)
    assert sum(b.values()) == total and ("unscale" in b) is (dtype == "fp16")


def test_megatron_memsets_the_gradients_it_holds():
    """Megatron-core: 46 bytes per owned parameter, the buffer's 4-byte memset per held
    gradient; under ZeRO-2/3 the held gradients are the rank's shard."""
    P, d = 8e9, 8
    whole = elementwise_time(42 * P / d + 4 * P, DEV)
    assert optimizer_s(P, d, "bf16", DEV) == whole == terms.optimizer_s(P, d, "bf16", DEV)
    assert optimizer_s(P, d, "bf16", DEV, MEGATRON, grads_sharded=True) == \
        elementwise_time(46 * P / d, DEV)
    assert optimizer_s(P, d, "bf16", DEV, TORCH, grads_sharded=True) == \
        elementwise_time(88 * P / d, DEV)


def test_only_zero3_fp32_params_drop_the_master_copy():
    lay = Layout(tp=1, dp=8, zero=3, fsdp_fp32_params=True)
    assert not optimizer_step(lay, Sharding(3, 8, fp32_params=True)).master_copy
    assert optimizer_step(lay, Sharding(2, 8, fp32_params=True)).master_copy
    assert optimizer_step(Layout(tp=1, dp=8), Sharding()) == MEGATRON


@pytest.mark.parametrize("name, adam", [("torchtitan", "foreach"), ("torchtitan-compile",
                                                                   "foreach"),
                                        ("llm-foundry", "per-tensor"), ("automodel", "foreach")])
def test_pytorch_stacks_free_their_gradients(name, adam):
    assert FRAMEWORKS[name]["adam"] == adam and FRAMEWORKS[name]["grad_buffer"] is False


def test_a_torchtitan_step_prices_its_optimizer_so():
    """Llama 3 8B, FSDP 8 as torchtitan runs it: the step's optimizer longer than with fused
    Adam: 92 bytes per owned parameter against 40 (norm apart), one memory-bound pass."""
    kw = dict(tp=1, dp=8, global_batch=8, micro_batch=1, zero=3, seq_len=2048,
              **FRAMEWORKS["torchtitan"])
    titan = tpsim.predict("llama3-8b", "dgx-h100", **kw)
    fused = tpsim.predict("llama3-8b", "dgx-h100", **{**kw, "adam": "fused"})
    owned = titan.memory.params_per_gpu / 8
    assert titan.step.optimizer_s - fused.step.optimizer_s == pytest.approx(
        elementwise_time(92 * owned, DEV) - elementwise_time(40 * owned, DEV), rel=1e-6)


@pytest.mark.parametrize("norm, zeros", [(True, False), (False, True), (True, True)])
def test_the_log_passes_read_the_owned_shard(norm, zeros):
    """--log-params-norm reads the fp32 main weights (4 bytes), --log-num-zeros-in-grad the
    fp32 main gradients (4 bytes), each over the 1/d shard the rank owns, once a step:
    elementwise_time(46 P / d + 4 (norm + zeros) P / d) with the gradients sharded."""
    P, d = 8e9, 8
    lay = Layout(tp=1, dp=d, distributed_optimizer=True, log_params_norm=norm,
                 log_num_zeros_in_grad=zeros)
    step = optimizer_step(lay, Sharding(1, d))
    assert step.logged == (norm, zeros)
    b = optimizer_bytes("bf16", owned=1.0, zeroed=0.0, step=step)
    assert (b.get("params-norm"), b.get("zeros-in-grad")) == (4 if norm else None,
                                                              4 if zeros else None)
    assert optimizer_s(P, d, "bf16", DEV, step, grads_sharded=True) == \
        elementwise_time((46 + 4 * (norm + zeros)) * P / d, DEV)


def test_the_log_passes_lengthen_the_step_and_refuse_non_flags():
    kw = dict(tp=2, dp=4, global_batch=8, distributed_optimizer=True)
    plain = tpsim.predict("gpt3-1.3b", "dgx-h100", **kw).step.time_s
    logged = tpsim.predict("gpt3-1.3b", "dgx-h100", log_params_norm=True,
                           log_num_zeros_in_grad=True, **kw).step.time_s
    assert logged > plain
    for field in ("log_params_norm", "log_num_zeros_in_grad", "main_grad_add",
                  "deterministic_mode"):
        with pytest.raises(TpsimError, match=f"^--{field.replace('_', '-')}"):
            Layout(**{field: "yes"})
