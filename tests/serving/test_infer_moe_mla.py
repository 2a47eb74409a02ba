"""Serving mixture-of-experts models and multi-head latent attention: memory closed forms,
published parameter counts, and the decode's expert reads."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer.infer_graph import serving_dims, serving_layer_template
from tpsim.serving.infer import infer
from tpsim.serving.memory import kv_bytes_per_token, weights_per_gpu
from tpsim.spec.model import load_model


@pytest.mark.parametrize("name, total, active", [
    ("deepseek-v3", 671e9, 37e9),          # DeepSeek-V3 report, section 4.2
    ("qwen3-235b-a22b", 235e9, 22e9),      # Qwen3 report, Table 2
])
def test_published_parameter_counts(name, total, active):
    m = load_model(name)
    assert m.params() == pytest.approx(total, rel=0.01)
    assert m.active_params() == pytest.approx(active, rel=0.03)


@pytest.mark.parametrize("tp", [1, 8])
def test_mla_kv_cache_per_token(tp):
    """DeepSeek-V3 in bf16: (512 + 64) x 2 bytes x 61 layers = 70,272 bytes a token, on every
    TP rank (the latent is shared by all heads, so TP does not split it)."""
    assert kv_bytes_per_token(load_model("deepseek-v3"), tp, 1, "bf16") == (512 + 64) * 2 * 61


def test_weights_per_gpu_add_up_to_the_model():
    """At TP 1, EP 1 every weight is on the one GPU: weights = params x 2 bytes (bf16), the
    vocabulary padded to a multiple of 128 (gpt-oss: the experts' and router's biases too)."""
    for name in ("deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b", "gpt-oss-120b"):
        m = load_model(name)
        pad = (m.padded_vocab(1) - m.vocab) * m.hidden * 2
        assert weights_per_gpu(m, 1, 1, "bf16", "bf16") == 2 * (m.params() + pad)


def test_expert_parallelism_splits_the_experts():
    """Qwen3-30B-A3B at EP 2 holds half of each MoE layer's 128 experts: the weights drop by
    48 layers x 64 experts x 3 x 2048 x 768 x 2 bytes."""
    m = load_model("qwen3-30b-a3b")
    one, two = (weights_per_gpu(m, 1, 1, "bf16", "bf16", ep) for ep in (1, 2))
    assert one - two == 48 * 64 * 3 * 2048 * 768 * 2


def test_decode_at_batch_one_reads_fewer_bytes_than_all_experts():
    """Mixtral-8x7B decode at batch 1 reads 2 of 8 experts: under half the bytes of a step
    that read every expert (the prefill's template at one token per sequence reads the same
    weights as decode; the expert GEMMs are what differs)."""
    m = load_model("qwen3-30b-a3b")
    one = infer(m, "dgx-h100", tp=1, batch=1, prompt=128, gen=4)
    expert_bytes = 48 * 128 * 3 * 2048 * 768 * 2
    assert one.decode.cost.hbm_bytes < 0.3 * expert_bytes
    big = infer(m, "dgx-h100", tp=1, batch=512, prompt=128, gen=4)
    assert big.decode.cost.hbm_bytes > 0.95 * expert_bytes


def test_prefill_attention_flops_use_both_head_widths():
    """DeepSeek-V3 MLA prefill: 2 b H_r P (d_qk + d_v) FLOPs, d_qk 192, d_v 128, causal
    P = s (s + 1) / 2."""
    m = load_model("deepseek-v3")
    d = serving_dims(m, 8, 1, 1, 512, "bf16", "bf16", "bf16")
    tpl = serving_layer_template("prefill", True, True, 2, False, 2)
    attn = dict(zip(tpl.names, tpl.ops(d)))["fwd.attn"]
    assert attn.flops == 2 * 16 * (512 * 513 // 2) * (192 + 128)


def test_ep_refusals():
    with pytest.raises(ConfigError, match="--ep"):
        infer("llama3-8b", "dgx-h100", tp=1, ep=2, batch=2)
    with pytest.raises(ConfigError, match="--ep"):
        infer("mixtral-8x7b", "dgx-h100", tp=1, ep=3, batch=3)
    with pytest.raises(ConfigError, match="--batch"):
        infer("mixtral-8x7b", "dgx-h100", tp=1, ep=2, batch=3)


def test_cli_expert_parallel_infer(capsys):
    """`tpsim infer --ep`: the dispatch and combine all-to-alls in the op table, `ep` in the
    JSON inputs; an EP that does not divide the experts exits 2 with one line."""
    import json

    from tpsim.cli import main
    assert main(["infer", "--model", "mixtral-8x7b", "--tp", "1", "--ep", "8", "--batch", "8",
                 "--prompt", "64", "--gen", "4"]) == 0
    out = capsys.readouterr().out
    assert "fwd.moe.dispatch" in out and "fwd.moe.combine" in out
    assert main(["infer", "--model", "mixtral-8x7b", "--tp", "1", "--ep", "8", "--batch", "8",
                 "--prompt", "64", "--gen", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"]["ep"] == 8
    assert main(["infer", "--model", "mixtral-8x7b", "--tp", "1", "--ep", "3", "--batch", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ep" in err
