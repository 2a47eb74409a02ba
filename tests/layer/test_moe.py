"""The mixture-of-experts MLP slot (tpsim.layer.moe) against closed forms derived by hand: its
FLOPs, its collectives and what it saves, on a toy model with every expert local (EP 1)."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import moe_dims, routed_per_expert
from tpsim.layer.ops import act_arith
from tpsim.sim.price import Pricing
from tpsim.sim.simulate import simulate
from tpsim.spec.model import ModelConfig
from tpsim.spec.parallel import Parallelism

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 8,
       "experts_per_token": 2, "expert_ffn_hidden": 128}


def toy(**kw) -> ModelConfig:
    return from_mapping(ModelConfig, {**TOY, **kw}, "<test>")


def ops_of(model, tp=1, sp=False, b=2, s=128, dtype="bf16"):
    d = moe_dims(model, tp, b, s, dtype, sp)
    tpl = layer_template(tp > 1, sp, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=2 if model.shared_experts else 1, fp8=d.quantizer)
    return d, tpl, dict(zip(tpl.names, tpl.ops(d)))


def test_routed_expert_flops_are_the_active_experts():
    """T = 256 tokens, top-2 of 8 experts of width 128, h 256: m_e = 256*2/8 = 64 tokens each.
    Forward GEMMs: router 2 T E h = 1,048,576; fc1 (gate and up, 2 f_e wide) 2 * 8 * 64 * 256 *
    256 = 67,108,864; fc2 2 * 8 * 64 * 128 * 256 = 33,554,432: together what a dense SwiGLU MLP
    of width k f_e = 256 does on T tokens, 6 T h k f_e = 100,663,296. Backward: twice forward."""
    d, tpl, ops = ops_of(toy())
    assert routed_per_expert(d) == 64
    assert ops["fwd.router"].flops == 2 * 256 * 8 * 256
    assert ops["fwd.experts.fc1"].flops == 2 * 8 * 64 * 256 * 256
    assert ops["fwd.experts.fc2"].flops == 2 * 8 * 64 * 128 * 256
    assert ops["fwd.experts.fc1"].flops + ops["fwd.experts.fc2"].flops == 6 * 256 * 256 * 2 * 128
    fwd = sum(op.flops for n, op in ops.items() if n.startswith("fwd."))
    bwd = sum(op.flops for n, op in ops.items() if n.startswith("bwd."))
    assert bwd == 2 * fwd
    assert ops["bwd.experts.fc1.wgrad"].accumulate and ops["bwd.experts.fc1.wgrad"].batch == 8


def test_permute_and_unpermute_bytes():
    """R = 8 * 64 = 512 routed rows of h = 256 in bf16: permute reads and writes R h 2 =
    2 * 262144 bytes; unpermute reads R h and T h (2 bytes) and the T k fp32 probs, writes
    nothing else: (512 + 256) * 256 * 2 + 256 * 2 * 4 = 395,264."""
    _, _, ops = ops_of(toy())
    assert ops["fwd.moe.permute"].bytes == 2 * 512 * 256 * 2
    assert ops["fwd.moe.unpermute"].bytes == (512 + 256) * 256 * 2 + 256 * 2 * 4


def test_tensor_parallel_slot_gathers_and_scatters_the_tokens():
    """TP 4 with SP: forward all-gathers the T h tokens and reduce-scatters the output
    (nccl-tests size T h bpe = 256*256*2 = 131072 each), backward the conjugates; each expert's
    width is f_e / tp = 32, the router works on the T / tp = 64 local tokens."""
    d, _, ops = ops_of(toy(), tp=4, sp=True)
    coll = {n: (op.op, op.nbytes) for n, op in ops.items() if op.kind == "collective"}
    assert coll == {"fwd.moe.all-gather": ("all-gather", 131072),
                    "fwd.moe.reduce-scatter": ("reduce-scatter", 131072),
                    "bwd.moe.all-gather": ("all-gather", 131072),
                    "bwd.moe.reduce-scatter": ("reduce-scatter", 131072)}
    assert d.fe == 32 and ops["fwd.router"].m == 64
    assert ops["fwd.experts.fc1"].shape == "64x256 @ 256x64 x8 on 4 streams"


def test_fp8_casts_each_grouped_gemm_input():
    """Under FP8, Transformer Engine's GroupedLinear casts its 16-bit input: the R = 512
    permuted rows of h = 256 before fc1 and of f_e = 128 (act's output) before fc2, each read in
    bf16 and written as fp8 and its transpose: R cols (2 + 1 + 1) bytes; none in bf16."""
    _, _, ops = ops_of(toy(), dtype="fp8")
    assert ops["fwd.experts.fc1.cast"].bytes == 512 * 256 * 4
    assert ops["fwd.experts.fc2.cast"].bytes == 512 * 128 * 4
    assert ops["fwd.experts.fc1"].streams == 4
    assert "fwd.experts.fc1.cast" not in ops_of(toy())[2]


def test_fp8_casts_each_shared_expert_linears_input():
    """The shared expert's two linears (Transformer Engine's Linear) cast their 16-bit inputs:
    the T = 256 tokens of h = 256 before fc1 and of f_s = 256 (act's output) before fc2, read 2
    and write 1 + 1 bytes each; none in bf16."""
    shared = toy(shared_experts=1, shared_expert_ffn_hidden=256)
    ops = ops_of(shared, dtype="fp8")[2]
    assert ops["fwd.shared.fc1.cast"].bytes == ops["fwd.shared.fc2.cast"].bytes == 256 * 256 * 4
    assert not [n for n in ops_of(shared)[2] if n.endswith(".cast")]


def test_shared_experts_run_beside_the_routed_ones():
    """One shared expert of width 256: forward GEMMs 2 T h (2 f_s) + 2 T f_s h = 6 * 256 * 256
    * 256 FLOPs more, one add kernel, and at TP 2 an all-gather of the saved input in backward."""
    plain = ops_of(toy())[2]
    d, _, ops = ops_of(toy(shared_experts=1, shared_expert_ffn_hidden=256))
    extra = sum(op.flops for n, op in ops.items() if n.startswith("fwd.")) - sum(
        op.flops for n, op in plain.items() if n.startswith("fwd."))
    assert extra == 6 * 256 * 256 * 256
    assert "fwd.shared.add" in ops and d.fs == 256
    tp2 = ops_of(toy(shared_experts=1, shared_expert_ffn_hidden=256), tp=2, sp=True)[2]
    assert tp2["bwd.shared.all-gather"].nbytes == 256 * 256 * 2


def test_saved_activations_closed_form():
    """tp 1, T 256, h 256, E 8, R 512, f_e 128, bf16: router input T h 2 = 131072, scores T E 4
    = 8192, permuted R h 2 = 262144, fc1 output 2 R f_e 2 = 262144 and the R fp32 probabilities
    the activation is scaled by, 2048, fc2 input R f_e 2 = 131072; the unpermutation (a sum, as
    Megatron-core's memory-efficient permutation runs it) keeps nothing: 796,672 bytes (the
    slot only: blocks = mlp, no norm)."""
    d, tpl, _ = ops_of(toy())
    norm = d.T * d.h * d.bpe          # fwd.norm2 keeps its input
    assert tpl.saved_bytes(d) - norm == 131072 + 8192 + 262144 + 262144 + 2048 + 131072


def test_slot_simulates_on_a_shipped_topology_and_needs_sp_with_tp():
    topo = load_topology("dgx-h100")
    d, tpl, _ = ops_of(toy(), tp=2, sp=True)
    sim = simulate(tpl, d, Pricing(topo, Parallelism(tp=2)))
    assert sim.timeline.makespan_s > 0
    with pytest.raises(ConfigError, match="sequence-parallel"):
        moe_dims(toy(), 2, 2, 128, "bf16", False)
    with pytest.raises(ConfigError, match="expert_ffn_hidden"):
        moe_dims(toy(expert_ffn_hidden=100), 8, 2, 128, "bf16", True)
    with pytest.raises(ValueError, match="no TP overlap"):
        layer_template(True, True, moe=1, tp_overlap=2)


def test_experts_activation_arithmetic_follows_the_dense_mlps():
    """gelu / swiglu forward, their _backward kinds: the names the CPU fit gives per-element
    costs (validate/calibration.py), the same as the dense MLP's activation."""
    assert [act_arith(n, b)(None) for n in (1, 2) for b in (False, True)] == \
        ["gelu", "gelu_backward", "swiglu", "swiglu_backward"]
