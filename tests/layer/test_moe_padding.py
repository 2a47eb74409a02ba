"""The experts' rows padded for quantized grouped GEMMs (tpsim.layer.moe_padding) and the
grouped casts' kernels run expert by expert (tpsim.layer.linears.fp8_cast)."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.schema import from_mapping
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import routed_rows
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.layer.moe_flex import Flex
from tpsim.spec.model import ModelConfig

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 16,
       "experts_per_token": 2, "expert_ffn_hidden": 128}
PADS = ("fwd.experts.pad", "fwd.experts.unpad", "bwd.experts.unpad", "bwd.experts.pad")


def slot(moe, quantizer: str):
    tpl = layer_template(False, blocks=("mlp",), dropout=False, swiglu=True, moe=moe,
                         fp8=quantizer)
    m = from_mapping(ModelConfig, TOY, "<test>")
    d = alltoall_dims(m, 1, 4, 1, 2, 128, "fp8" if quantizer else "bf16", False, 1.0)
    if quantizer.startswith("fp8:"):
        d = dataclasses.replace(d, fp8_recipe=quantizer.split(":")[1])
    return tpl, d


def op(tpl, d, name):
    return tpl.nodes[tpl.names.index(name)].make(d)


@pytest.mark.parametrize("moe", [Alltoall(False, True, False), Flex(False, "deepep")])
def test_unpadded_dispatchers_copy_the_rows_four_times(moe):
    """All-to-all and DeepEP under FP8: Fp8Padding of the R x h tokens and R fp32
    probabilities (2 R (2 h + 4) bytes, two kernels) before fc1 and its backward after fc1's
    dgrad; Fp8Unpadding of fc2's output (2 R h 2 bytes) and its backward; none in BF16."""
    tpl, d = slot(moe, "fp8:tensorwise")
    r = routed_rows(d)
    assert op(tpl, d, "fwd.experts.pad").nbytes == 2 * r * (2 * d.h + 4)
    assert op(tpl, d, "bwd.experts.pad").kernels == 2
    assert op(tpl, d, "fwd.experts.unpad").nbytes == op(tpl, d, "bwd.experts.unpad").nbytes \
        == 4 * r * d.h
    assert all(tpl.nodes[tpl.names.index(n)].host_ops == 0 for n in PADS)
    bf16, _ = slot(moe, "")
    assert not set(PADS) & set(bf16.names)


def test_hybridep_pads_inside_its_dispatch():
    """HybridEP's dispatch writes each expert's rows padded: no copy."""
    tpl, _ = slot(Flex(False, "hybridep"), "fp8:tensorwise")
    assert not set(PADS) & set(tpl.names)


@pytest.mark.parametrize("quantizer, amax, cast", [("fp8:tensorwise", 4, 8), ("fp8:delayed", 0, 1),
                                                   ("fp8:blockwise", 0, 4)])
def test_grouped_casts_run_their_kernels_expert_by_expert(quantizer, amax, cast):
    """E_l = 4 experts: current scaling's amax kernel per expert on its own node, then scale
    and cast per expert (8); delayed scaling one multi-tensor cast-transpose; blockwise one
    cast per expert. Each kernel counts as run on the GPU, as the host launches it."""
    tpl, d = slot(Alltoall(False, True, False), quantizer)
    node = tpl.nodes[tpl.names.index("fwd.experts.fc1.cast")]
    assert op(tpl, d, "fwd.experts.fc1.cast").kernels == node.launches(d) == cast
    if amax:
        assert op(tpl, d, "fwd.experts.fc1.cast.amax").kernels == amax
    else:
        assert "fwd.experts.fc1.cast.amax" not in tpl.names
