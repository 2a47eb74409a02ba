"""--decode-attention trtllm-mmha: TensorRT-LLM's masked multi-head attention before XQA, each
query head's CTA reading its KV head through the L2 and computing on its CUDA cores
(tpsim.cost.compute.decode_attention_time, tpsim.cost.mmha)."""
import sys

import pytest

from tests.conftest import REPO
from tpsim import infer
from tpsim.base.errors import TpsimError
from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import decode_attention_time, decode_fixed_s, elementwise_time
from tpsim.cost.mmha import mmha_instructions
from tpsim.layer.infer_graph import decode_attention_bytes, mmha_l2_bytes, serving_dims
from tpsim.spec.model import load_model

H100 = load_topology("dgx-h100")
L70 = load_model("llama2-70b")


def test_mmha_l2_bytes_closed_form():
    """Llama 2 70B at TP 4 (16 query, 2 KV heads of 128 a GPU), batch 4, 1000 cached tokens,
    bf16 activations, fp8 cache: b (2 q bpe + 2 L q bpe_kv) = 4 (2 x 2048 x 2 + 2 x 1000 x
    2048 x 1); the cache part is 8 (the group) times decode_attention_bytes' own."""
    d = serving_dims(L70, 4, 1, 4, 1, "fp8", "bf16", "fp8", 1000)
    assert mmha_l2_bytes(d) == 4 * (2 * 2048 * 2 + 2 * 1000 * 2048 * 1) == 16_416_768
    qo = 4 * 2 * 2048 * 2
    assert mmha_l2_bytes(d) - qo == 8 * (decode_attention_bytes(d) - qo)


def test_l2_term_by_hand():
    """100 MB from HBM, 800 MB through the L2 on an H100: launch + max(1e8 / (3.35e12 x 0.8),
    8e8 / 9.8e12) + decode_fixed, the L2 term binding; a device listing no L2 rate (L40S)
    keeps the memory term alone."""
    dev = H100.device
    t = decode_attention_time(1e8, dev, l2_bytes=8e8)
    assert t == pytest.approx(dev.kernel_launch_s + 8e8 / 9.8e12 + decode_fixed_s(dev), rel=1e-12)
    assert 8e8 / 9.8e12 > 1e8 / (3.35e12 * 0.8)
    l40s = load_topology("pcie-l40s").device
    assert l40s.l2_bandwidth_Bps is None
    assert decode_attention_time(1e8, l40s, l2_bytes=8e8) == elementwise_time(1e8, l40s)


def test_slower_than_the_default_exactly_where_groups_exceed_one():
    """Llama 2 70B (8 query heads per KV head): each decode layer slower by exactly the larger
    of the L2 and CUDA-core terms over the memory term, the prefill untouched; Llama 2 7B (one
    query head per KV head): MMHA reads the cache once and its cores keep up, no change."""
    def steps(model, **run):
        return [infer(model, H100, decode_attention=k, **run) for k in ("tensor-cores", "trtllm-mmha")]

    tc, mmha = steps("llama2-70b", tp=4, batch=64, prompt=2047, gen=2, dtype="fp8")
    d = serving_dims(L70, 4, 1, 64, 1, "fp8", "bf16", "fp8", 2048)
    nbytes = decode_attention_bytes(d)
    work = mmha_instructions(64, d.heads, d.attended, d.d, d.kv_bpe)
    extra = L70.layers * (decode_attention_time(nbytes, H100.device, 0, mmha_l2_bytes(d), work)
                          - decode_attention_time(nbytes, H100.device))
    assert extra > 0 and mmha.prefill.time_s == tc.prefill.time_s
    assert mmha.decode.time_per_token_s == pytest.approx(tc.decode.time_per_token_s + extra, rel=1e-9)
    mha = steps("llama2-7b", tp=1, batch=16, prompt=1024, gen=2)
    assert mha[0].decode.time_per_token_s == mha[1].decode.time_per_token_s


def test_unknown_kernel_is_refused():
    with pytest.raises(TpsimError, match="decode-attention"):
        infer("llama2-70b", H100, tp=4, decode_attention="trtllm-xqa")


def test_the_script_binds_the_cores_on_h100_the_l2_on_a100_and_hbm_on_the_control():
    """bench/trtllm_mmha_published.py's ``binds`` column: at 8 query heads per KV head (Llama
    2 70B) the CUDA-core work outlasts the HBM and L2 terms on the H100 FP8 rows (the issue
    slots at its FP32 rate); on A100 FP16 the issue slots, twice its FP32 lanes, leave the
    L2 binding; at one query head per KV head (Llama 2 7B, the control) the HBM term binds,
    so its prices do not move."""
    sys.path.insert(0, str(REPO / "bench"))
    from trtllm_mmha_published import ROWS, mmha_terms
    for model, topo, tp, batch, prompt, gen, dtype, _ in ROWS:
        terms = mmha_terms(model, load_topology(topo), tp, batch, prompt + gen // 2, dtype)
        expected = "HBM" if model == "llama2-7b" else "cores" if "h100" in topo else "L2"
        assert max(terms, key=terms.get) == expected
