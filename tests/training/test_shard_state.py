"""What a rank holds under ZeRO-2/3 (tpsim.training.shard_state): the gradient shard in the
dtype each stack keeps it in, closed forms of the bytes per parameter by framework and dtype."""
import pytest

import tpsim
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.precision import precision_key
from tpsim.training.optimizer_step import OptimizerStep, optimizer_bytes
from tpsim.training.shard_state import kept_grad_bytes, state_bytes
from tpsim.training.sharded_dp import Sharding, sharding

P, U, S = 10**9, 10**7, 8          # parameters, the largest unit's, shard ranks
PURE = precision_key("bf16", grad_reduce_in_bf16=True)       # llm-foundry's A100 40GB edition
AUTOMODEL = precision_key("bf16", adam_dtypes=("bf16",) * 3)  # a model built in bf16
FOUNDRY = Sharding(3, S, fp32_params=True, copies="flat")     # FSDP1, fp32 flat parameters
TITAN = Sharding(3, S, fp32_params=True, copies="fsdp2")      # FSDP2, fp32 shards
FSDP2_BF16 = Sharding(3, S, copies="fsdp2")                   # FSDP2 on bf16 parameters


@pytest.mark.parametrize("key, sh, want", [
    # (weights, gradients, optimizer, step copy) bytes: per parameter / S, plus two units
    ("bf16", Sharding(3, S), (2 * P / S + 4 * U, 4 * P / S + 8 * U, 12 * P / S, 0)),
    (PURE, Sharding(3, S), (2 * P / S + 4 * U, 2 * P / S + 4 * U, 12 * P / S, 4 * P / S)),
    ("bf16", FOUNDRY, (4 * U, 4 * P / S + 8 * U, 12 * P / S, 0)),
    (PURE, FOUNDRY, (4 * U, 4 * P / S + 4 * U, 12 * P / S, 0)),
    (PURE, TITAN, (4 * U, 4 * P / S + 4 * U, 12 * P / S, 0)),
    (AUTOMODEL, FSDP2_BF16, (2 * P / S + 4 * U, 2 * P / S + 8 * U, 4 * P / S, 0)),
    ("fp16", FOUNDRY, (4 * U, 4 * P / S + 4 * U, 12 * P / S, 0)),
    ("fp16", Sharding(3, S), (2 * P / S + 4 * U, 2 * P / S + 4 * U, 12 * P / S, 4 * P / S))])
def test_the_gradient_shard_is_kept_as_each_stack_keeps_it(key, sh, want):
    """Megatron-FSDP keeps the precision's main gradients (bf16: 4; bf16 reduce: 2 and a 4-byte
    step copy); PyTorch's FSDP casts each reduced shard to the sharded parameter's dtype, fp32
    (4, llm-foundry's PURE and fp16 too) or bf16 for a bf16 model (2), and steps it as it is;
    the two units awaiting their reduce-scatter are in the reduce dtype either way."""
    assert state_bytes(P, key, sh, S, True, U) == pytest.approx(want, rel=1e-12)


def test_only_pytorch_fsdp_at_zero_2_or_3_keeps_its_own_dtype():
    assert (kept_grad_bytes(PURE, FOUNDRY), kept_grad_bytes(AUTOMODEL, FSDP2_BF16)) == (4, 2)
    assert kept_grad_bytes(PURE, Sharding(3, S)) == 0 == kept_grad_bytes(PURE, Sharding())
    assert kept_grad_bytes("bf16", Sharding(2, S, copies="fsdp2")) == 4


@pytest.mark.parametrize("name, torch_fsdp", [("llm-foundry", True), ("torchtitan", True),
                                              ("automodel", True), ("megatron-core", False)])
def test_each_frameworks_preset_names_its_fsdp(name, torch_fsdp):
    knobs = {k: FRAMEWORKS[name].get(f, False) for k, f in (
        ("fp32_params", "fsdp_fp32_params"), ("flat_params", "fsdp_flat_params"),
        ("fsdp2_copies", "fsdp2_copies"))}
    assert sharding(3, S, None, True, False, **knobs).torch_fsdp is torch_fsdp


def test_the_step_reads_the_kept_shard_without_a_copy():
    """PURE under FSDP: the fp32 shard read as is (no 2 + 4 copy, no unscale: bf16 has no
    loss scale); a bf16 model's shard read at 2 bytes: norm 2, clip 4, per-tensor Adam
    2p + 2g + 5m + 11v = 40; Megatron's 16-bit main gradients still copied, not unscaled
    (no grad scaler in bf16)."""
    b = optimizer_bytes(PURE, 1.0, 0.0, OptimizerStep("per-tensor", False, False, grads=4))
    assert b == {"grad-norm": 4, "clip": 8, "adam": 80, "zero-grads": 0.0}
    b = optimizer_bytes(AUTOMODEL, 1.0, 0.0, OptimizerStep("per-tensor", False, False, grads=2))
    assert b == {"grad-norm": 2, "clip": 4, "adam": 40, "zero-grads": 0.0}
    b = optimizer_bytes(PURE, 1.0, 0.0, OptimizerStep())
    assert b["grads-to-fp32"] == 6 and "unscale" not in b


def test_a_pure_llm_foundry_step_holds_the_fp32_shard_and_no_copy():
    """MPT-style 350M as llm-foundry's PURE edition: no step copy; against the fp32 reduce,
    2 bytes less for each parameter of the two units awaiting their reduce-scatter only."""
    kw = dict(tp=1, dp=8, global_batch=16, micro_batch=1, zero=3, seq_len=1024,
              **FRAMEWORKS["llm-foundry"])
    pure = tpsim.predict("gpt3-350m", "dgx-a100", grad_reduce_in_bf16=True, **kw).memory
    fp32 = tpsim.predict("gpt3-350m", "dgx-a100", **kw).memory
    assert pure.step_copy_bytes == 0 == fp32.step_copy_bytes
    assert pure.gradients_bytes < fp32.gradients_bytes
    assert pure.gradients_bytes > 4 * pure.params_per_gpu / 8
