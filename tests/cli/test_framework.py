"""`--framework`: a training stack's knobs where the user left them at their defaults, the
user's value elsewhere, and one line and exit 2 for what the stack could not run."""
from __future__ import annotations

import json

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cli import main
from tpsim.spec.frameworks import FRAMEWORKS, with_framework
from tpsim.spec.layout import Layout
from tpsim.training.predict import predict

ARGS = ("predict", "--model", "gpt3-13b", "--topology", "dgx-a100-hdr-cluster", "--tp", "4",
        "--pp", "2", "--dp", "2", "--global-batch", "32", "--json")


def step(capsys, *extra):
    code = main([*ARGS, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_megatron_core_is_the_defaults(capsys):
    assert FRAMEWORKS["megatron-core"] == {}
    _, plain, _ = step(capsys)
    _, core, _ = step(capsys, "--framework", "megatron-core")
    assert json.loads(plain) == json.loads(core)


@pytest.mark.parametrize("name", ["megatron-lm-2021", "megatron-deepspeed"])
def test_older_stacks_are_their_knobs(capsys, name):
    """The preset prices the step as predict with the preset's knobs does."""
    code, out, _ = step(capsys, "--framework", name)
    assert code == 0
    want = predict("gpt3-13b", "dgx-a100-hdr-cluster", tp=4, pp=2, dp=2, global_batch=32,
                   **FRAMEWORKS[name])
    assert json.loads(out)["step"]["time_s"] == want.step.time_s
    assert FRAMEWORKS[name]["overlap_grad_reduce"] is False
    assert FRAMEWORKS[name]["scatter_gather_p2p"] is True
    assert json.loads(out)["inputs"]["overlap_grad_reduce"] is False


def test_a_knob_the_user_sets_keeps_its_value():
    defaults = {f: getattr(Layout(), f) for f in ("overlap_grad_reduce", "scatter_gather_p2p")}
    got = with_framework("megatron-lm-2021", {"overlap_grad_reduce": True,
                                              "scatter_gather_p2p": True}, defaults)
    assert got == {"overlap_grad_reduce": False, "scatter_gather_p2p": True}
    got = with_framework("megatron-lm-2021", {"pp": 2}, {"pp": 1})
    assert got == {"pp": 2}


@pytest.mark.parametrize("name, eager", [("torchtitan", True), ("torchtitan-compile", False)])
def test_torchtitan_is_sdpa_flash2_and_eager_unless_compiled(capsys, name, eager):
    """torchtitan: SDPA's FlashAttention-2 and, without compile, PyTorch eager's kernels;
    FSDP2's fp32 shards and copies, torch's foreach AdamW, no gradient buffer."""
    args = ("predict", "--model", "llama3-8b", "--topology", "grand-teton-h100", "--tp", "1",
            "--dp", "8", "--zero", "3", "--seq", "4096", "--json", "--framework", name)
    assert main(list(args)) == 0
    out = json.loads(capsys.readouterr()[0])
    want = predict("llama3-8b", "grand-teton-h100", tp=1, dp=8, zero=3, seq_len=4096,
                   attention="flash2", eager_kernels=eager, fsdp_fp32_params=True,
                   fsdp2_copies=True, adam="foreach", grad_buffer=False)
    assert out["step"]["time_s"] == want.step.time_s
    assert out["inputs"]["attention"] == "flash2"


def test_nemo_24_07_is_flash_attention_2(capsys):
    """NeMo 24.07: its launcher's NVTE_FUSED_ATTN=0 runs flash-attn (FlashAttention-2) under
    Transformer Engine 1.8, slower than the cuDNN-class default on H100; FP8 stays delayed."""
    args = ("predict", "--model", "llama2-7b", "--topology", "dgx-h100", "--tp", "1", "--dp",
            "8", "--dtype", "fp8", "--global-batch", "128", "--json")
    assert main([*args, "--framework", "nemo-24.07"]) == 0
    out = json.loads(capsys.readouterr()[0])
    want = predict("llama2-7b", "dgx-h100", tp=1, dp=8, dtype="fp8", global_batch=128,
                   attention="flash2")
    assert out["step"]["time_s"] == want.step.time_s
    assert out["inputs"]["attention"] == "flash2"
    assert main(list(args)) == 0
    assert json.loads(capsys.readouterr()[0])["step"]["time_s"] < want.step.time_s


@pytest.mark.parametrize("name, flags, flag", [
    ("megatron-lm-2021", ("--distributed-optimizer",), "--distributed-optimizer"),
    ("megatron-lm-2021", ("--zero", "3", "--dp", "2"), "--zero"),
    ("megatron-deepspeed", ("--virtual-stages", "2"), "--virtual-stages"),
    ("torchtitan-compile", ("--eager-kernels",), "--eager-kernels"),
    ("torchtitan", ("--distributed-optimizer",), "--distributed-optimizer"),
])
def test_what_a_stack_could_not_run_is_refused(capsys, name, flags, flag):
    code, out, err = step(capsys, "--framework", name, *flags)
    assert code == 2 and out == "" and err.count("\n") == 1 and flag in err and name in err
    with pytest.raises(ConfigError, match="--framework"):
        with_framework("megatron-0", {}, {})


def test_llm_foundry_is_triton_attention_with_mpts_fused_kernels(capsys):
    """llm-foundry v0.3.0: attn_impl triton (FlashAttention in Triton), flash-attn's fused
    cross-entropy (loss_fn fused_crossentropy), Composer's two training metrics each
    micro-batch, FSDP1's flat parameters, Composer's per-tensor DecoupledAdamW without a
    gradient buffer, MPT's kernels priced as the fused ones; Llama's eager kernels are refused."""
    args = ["predict", "--model", "gpt3-760m", "--topology", "dgx-a100", "--tp", "1", "--dp",
            "8", "--zero", "3", "--json", "--framework", "llm-foundry"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr()[0])
    want = predict("gpt3-760m", "dgx-a100", tp=1, dp=8, zero=3, attention="triton",
                   cross_entropy="xentropy", train_metrics=2, fsdp_flat_params=True,
                   fsdp_fp32_params=True, adam="per-tensor", grad_buffer=False)
    assert out["step"]["time_s"] == want.step.time_s
    assert out["inputs"]["attention"] == "triton"
    no_metrics = predict("gpt3-760m", "dgx-a100", tp=1, dp=8, zero=3, attention="triton",
                         cross_entropy="xentropy")
    assert no_metrics.step.time_s < want.step.time_s
    assert no_metrics.step.time_s < predict("gpt3-760m", "dgx-a100", tp=1, dp=8, zero=3,
                                            attention="triton").step.time_s
    flash2 = predict("gpt3-760m", "dgx-a100", tp=1, dp=8, zero=3, attention="flash2")
    assert want.step.time_s > flash2.step.time_s
    code = main(args + ["--eager-kernels"])
    err = capsys.readouterr()[1]
    assert code == 2 and "--eager-kernels" in err and "llm-foundry" in err
