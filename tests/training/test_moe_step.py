"""MoE training steps at EP 1 (every expert local, expert TP = tp): whole-model composition of
dense and MoE layers, memory that holds every expert, MFU by active parameters, and the
refusals that remain; gpt-oss (biased experts, sliding windows)."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.base.schema import from_mapping
from tpsim.spec.model import ModelConfig, load_model
from tpsim.spec.model_params import moe_layer_params
from tpsim.training.flops import megatron_flops
from tpsim.sim.simulate import phase_times
from tpsim.training.predict import predict, simulate_layer

GiB = 2 ** 30


def mixtral(tp, pp):
    return predict("mixtral-8x7b", "dgx-h100", tp=tp, pp=pp, seq_len=4096, global_batch=8,
                   sequence_parallel=True, distributed_optimizer=True)


@pytest.mark.parametrize("tp, pp", [(8, 1), (4, 2)])
def test_mixtral_on_one_dgx_h100_holds_all_eight_experts_and_does_not_fit(tp, pp):
    """Per rank of each stage, by hand (h 4096, f_e 14336, 8 experts, SwiGLU, 8 kv heads of
    128, vocabulary 32000 padded to a multiple of 128 tp, untied):
    a layer = (2 h^2 + 8 x 3 h f_e) / tp + 2 (8 / tp) 128 h + 8 h (router) + 2 h (norms).
    46.7B parameters over 8 GPUs is ~5.8B each: weights, fp32 gradients and Adam state
    (18 bytes a parameter, the optimizer's 12 over dp = 1) alone exceed 80 GB: does not fit."""
    p = mixtral(tp, pp)
    h, fe = 4096, 14336
    layer = (2 * h * h + 8 * 3 * h * fe) // tp + 2 * (8 // tp) * 128 * h + 8 * h + 2 * h
    vocab = -(-32000 // (128 * tp)) * 128 * tp // tp * h
    stages = [32 // pp * layer for _ in range(pp)]
    stages[0] += vocab
    stages[-1] += vocab + h
    assert [s.params_per_gpu for s in p.stage_memory] == stages
    assert p.memory.params_per_gpu > 5.8e9 and not p.memory.fits
    assert p.step.time_s > 0 and sum(s.layers for s in p.step.stages) == 32


def test_mixtral_moe_layer_is_no_faster_than_the_dense_layer_of_its_active_size():
    """Top-2 of experts of 14336: each token meets an MLP of 2 x 14336 = 28672. The MoE layer
    adds the router, permute/unpermute and its grouped GEMMs to that dense layer's work."""
    m = load_model("mixtral-8x7b")
    dense = dataclasses.replace(m, name="dense-28672", ffn_hidden=28672, experts=0,
                                experts_per_token=0, expert_ffn_hidden=None)
    args = (8, 1, 4096, "bf16", True, 0.0, "fused")
    moe, _ = simulate_layer(m, _topo(), *args, moe=True)
    flat, _ = simulate_layer(dense, _topo(), *args)
    assert moe.flops >= flat.flops
    assert moe.timeline.busy_s("compute") >= flat.timeline.busy_s("compute")
    assert predict("mixtral-8x7b", "dgx-h100", tp=8, seq_len=4096,
                   sequence_parallel=True).layer.total_s >= sum(phase_times(flat))


def _topo():
    from tpsim.cluster.topology import load_topology
    return load_topology("dgx-h100")


def test_mfu_counts_the_top_k_experts_not_all():
    """The step's model FLOPs over all GPUs match Megatron-LM's count with k f_e per MoE
    layer (within 1%: router, s (s + 1) / 2 pairs), and are far below a count of all 8."""
    p = mixtral(8, 1)
    m, tokens = load_model("mixtral-8x7b"), 8 * 4096
    ours = p.step.flops * p.inputs.gpus
    assert ours == pytest.approx(megatron_flops(m, 8, 4096, 8), rel=0.01)
    assert ours < 0.5 * 6 * m.params() * tokens
    assert p.step.mfu == pytest.approx(p.step.flops / p.step.time_s / 989.4e12, rel=0.05)


def test_qwen3_30b_a3b_tp2_dp4():
    """128 experts of 768, top-8, 48 layers, TP 2 DP 4 with the distributed optimizer: every
    layer MoE; each rank holds all 128 experts' halves (~15B parameters): does not fit."""
    p = predict("qwen3-30b-a3b", "dgx-h100", tp=2, dp=4, seq_len=4096, global_batch=8,
                sequence_parallel=True, distributed_optimizer=True)
    m = load_model("qwen3-30b-a3b")
    assert p.memory.params_per_gpu == 48 * moe_layer_params(m, 2) + m.embedding_params(2) + \
        m.output_params(2, True)
    assert 14e9 < p.memory.params_per_gpu < 16e9 and not p.memory.fits
    assert p.step.dp_comm_exposed_s >= 0 and p.step.time_s > 0


SMALL = {"name": "mixed", "layers": 4, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 256,
         "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512}


def test_a_model_of_two_layer_kinds_composes_per_stage():
    """first_dense_layers 1, moe_layer_freq 2 on 4 layers: layer 2 alone carries experts. With
    pp 2, stage 0 holds layers 0-1 (dense), stage 1 layers 2-3 (one MoE, one dense): stage 1's
    parameters and FLOPs differ from the all-dense model's by one MoE layer less one dense."""
    dense = from_mapping(ModelConfig, SMALL, "<t>")
    mixed = from_mapping(ModelConfig, dict(SMALL, experts=8, experts_per_token=2,
                                           expert_ffn_hidden=128, first_dense_layers=1,
                                           moe_layer_freq=2), "<t>")
    kw = dict(tp=2, pp=2, sequence_parallel=True, global_batch=2, dropout=0.0)
    a, b = predict(dense, "dgx-h100", **kw), predict(mixed, "dgx-h100", **kw)
    pa, pb = [s.params_per_gpu for s in a.stage_memory], [s.params_per_gpu for s in b.stage_memory]
    assert pb[0] == pa[0]
    assert pb[1] - pa[1] == moe_layer_params(mixed, 2) - mixed.layer_params(2)
    args = (2, 1, 256, "bf16", True, 0.0, "fused")
    moe = simulate_layer(mixed, _topo(), *args, moe=True)[0]
    flat = simulate_layer(mixed, _topo(), *args)[0]
    sa, sb = a.step.stages, b.step.stages
    assert sb[0].flops == sa[0].flops
    assert sb[1].flops - sa[1].flops == pytest.approx(2 * (moe.flops - flat.flops))
    assert b.model.flops - a.model.flops == pytest.approx(moe.flops - flat.flops)


def test_interleaved_stages_count_their_moe_layers_in_model_order():
    """8 layers, MoE at 2, 4, 6 (first_dense_layers 1, freq 2); pp 2, 2 chunks of 2 layers:
    virtual stages hold layers 0-1, 2-3, 4-5, 6-7, so stage 0 (chunks 0 and 2) has one MoE
    layer and stage 1 (chunks 1 and 3) two."""
    mixed = from_mapping(ModelConfig, dict(SMALL, layers=8, experts=8, experts_per_token=2,
                                           expert_ffn_hidden=128, first_dense_layers=1,
                                           moe_layer_freq=2), "<t>")
    p = predict(mixed, "dgx-h100", tp=2, pp=2, virtual_stages=2, sequence_parallel=True,
                global_batch=2, dropout=0.0)
    extra = moe_layer_params(mixed, 2) - mixed.layer_params(2)
    plain = [mixed.stage_params(2, 4, r == 0, r == 1) for r in range(2)]
    assert [s.params_per_gpu for s in p.stage_memory] == [plain[0] + extra, plain[1] + 2 * extra]


def test_refusals_that_remain():
    with pytest.raises(ConfigError, match="--attention"):
        predict("deepseek-v3", "dgx-h100", tp=8, sequence_parallel=True, attention="unfused")
    with pytest.raises(ConfigError, match="--ep"):
        predict("mixtral-8x7b", "dgx-h100", tp=8, ep=3, sequence_parallel=True)
    with pytest.raises(ConfigError, match="--sequence-parallel"):
        predict("mixtral-8x7b", "dgx-h100", tp=8)
    with pytest.raises(ConfigError, match="--attention.*sliding-window"):
        predict("gpt-oss-120b", "dgx-h100", tp=8, sequence_parallel=True, attention="unfused")


def test_gradient_units_run_last_layer_first_by_kind():
    """Layers 0-3 with MoE at 2: the backward makes the output layer's gradients final, then
    layer 3 (dense), 2 (MoE), 1 and 0 (dense), then the embedding; DP buckets follow."""
    from tpsim.training.terms import chunk_units
    mixed = from_mapping(ModelConfig, dict(SMALL, experts=8, experts_per_token=2,
                                           expert_ffn_hidden=128, first_dense_layers=1,
                                           moe_layer_freq=2), "<t>")
    dense, moe = mixed.layer_params(2), moe_layer_params(mixed, 2)
    units = chunk_units(mixed, 2, 4, True, True)
    assert [u[0] for u in units] == ["output", "layer", "moe", "layer", "embedding"]
    assert units[1:4] == [("layer", dense, 1), ("moe", moe, 1), ("layer", dense, 2)]
    assert chunk_units(mixed, 2, 2, False, False, start=2) == [("layer", dense, 1),
                                                               ("moe", moe, 1)]



def test_gpt_oss_trains_with_biased_experts_and_half_banded_attention():
    """gpt-oss-120b at Megatron-Bridge's H100 layout (TP 1, PP 4, EP 8, 4096 tokens): its MoE
    layer's attention stands for 18 banded and 18 full layers, fc2's bias adds a kernel each
    way, and the attention core's model FLOPs are the two kinds' mean, 4 b H d x
    [(s W - W (W - 1) / 2) + s (s + 1) / 2] / 2 forward, twice that backward."""
    p = predict("gpt-oss-120b", "dgx-h100-ndr-cluster", nodes=8, tp=1, pp=4, dp=16, ep=8,
                seq_len=4096, micro_batch=1, global_batch=1280, distributed_optimizer=True)
    ops = dict(zip(p.run.template.names, p.run.ops))
    pairs = (4096 * 128 - 128 * 127 / 2 + 4096 * 4097 / 2) / 2
    assert (ops["fwd.attn"].window, ops["fwd.attn"].windowed) == (128, 0.5)
    assert ops["fwd.attn"].flops + ops["bwd.attn"].flops == 3 * 4 * 64 * 64 * pairs
    assert {"fwd.experts.fc2.bias", "bwd.experts.fc2.bias"} <= set(ops)
    assert p.memory.fits and p.step.time_s > 0
