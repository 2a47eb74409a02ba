"""The MoE slot's host work counted from Megatron-core's code (tpsim.layer.moe_host)."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer import moe_host as mh
from tpsim.layer.graph import layer_template
from tpsim.layer.moe_ep import Alltoall
from tpsim.layer.moe_flex import Flex
from tpsim.spec.model import load_model, with_overrides


def template(moe, fp8=False, tp_group=False):
    return layer_template(tp_group, tp_group, blocks=("mlp",), dropout=False, swiglu=True,
                          moe=moe, fp8=fp8)


def host_ops(tpl, name: str) -> int:
    return tpl.nodes[tpl.names.index(name)].host_ops


@pytest.mark.parametrize("loss", ["aux_loss", "seq_aux_loss"])
def test_the_aux_loss_adds_its_ops_to_the_top_k(loss):
    """aux_loss: 7 Python-level ops forward (fused scores, the counts' sum, the fused loss, the
    tracker's division, add and copy, the auto-scaler), seq_aux_loss one more (/ bsz); backward
    three Python autograd Functions and the C++ sum of the logits' gradients (and the
    division's); the counts' all-reduce only on a TP group of more than one rank."""
    bare, tpl = template(Alltoall(False, True, False)), template(Alltoall(False, True, False, loss))
    assert host_ops(tpl, "fwd.router.topk") - host_ops(bare, "fwd.router.topk") == \
        {"aux_loss": 7, "seq_aux_loss": 8}[loss]
    assert host_ops(tpl, "bwd.router.topk") - host_ops(bare, "bwd.router.topk") == 3
    node = tpl.nodes[tpl.names.index("bwd.router.topk")]
    assert node.launches(None) == {"aux_loss": 1, "seq_aux_loss": 2}[loss]
    assert "fwd.router.aux.all-reduce" not in tpl.names
    assert "fwd.router.aux.all-reduce" in template(Alltoall(False, True, False, loss),
                                                   tp_group=True).names


@pytest.mark.parametrize("fp8", [False, True])
def test_the_all_to_all_dispatcher_counts_its_preprocessing(fp8):
    """The counts' gather carries its three sums (4), the permute the gathered counts' four
    sums, six D2H ops and TE's three row-id map kernels (14), the sort its chunk map and the
    experts' tolist (3), the unsort its chunk map and the counts' ravel (3); FP8 adds the
    experts' padding of tokens and probabilities to the sort, the unpadding to the unsort."""
    tpl = template(Alltoall(False, True, False), fp8=fp8)
    pad = (2, 1) if fp8 else (0, 0)
    assert [host_ops(tpl, n) for n in ("fwd.moe.counts", "fwd.moe.permute", "fwd.moe.sort",
                                       "fwd.moe.unsort", "bwd.moe.sort", "bwd.moe.unsort")] \
        == [4, 14, 3 + pad[0], 3 + pad[1], 1 + pad[0], 1 + pad[1]]
    assert tpl.nodes[tpl.names.index("fwd.moe.counts")].group == "ep"


def test_deepep_issues_more_host_ops_than_hybridep():
    """DeepEP: its dispatch's topk, float, layout and counts (1 + 4), the multihot map, the
    counts' item, the row-id map and tolist before its sort (1 + 17), six C++ nodes in the
    backward of its dispatch; HybridEP: 1 + 3 and 1 + 1."""
    deep, hybrid = template(Flex(False, "deepep")), template(Flex(False, "hybridep"))
    assert (host_ops(deep, "fwd.moe.dispatch"), host_ops(deep, "fwd.moe.sort")) == (5, 18)
    assert (host_ops(hybrid, "fwd.moe.dispatch"), host_ops(hybrid, "fwd.moe.sort")) == (4, 2)
    assert deep.nodes[deep.names.index("bwd.moe.dispatch")].launches(None) == 6
    assert hybrid.nodes[hybrid.names.index("bwd.moe.dispatch")].launches is None


def test_the_ep1_slot_keeps_one_host_op_an_op():
    """The EP-1 slot's preprocessing is not counted: every node one host op."""
    tpl = template(1)
    assert all(n.host_ops == 1 for n in tpl.nodes)


def test_the_presets_name_their_recipes_aux_loss():
    """Qwen3 MoE: aux_loss, DeepSeek-V3: seq_aux_loss, gpt-oss: none (Megatron-Bridge's
    providers); anything else is refused naming the key."""
    assert [load_model(m).load_balancing for m in ("qwen3-30b-a3b", "deepseek-v3",
                                                   "gpt-oss-120b")] == \
        ["aux_loss", "seq_aux_loss", "none"]
    assert mh.AUX_FWD.keys() == mh.AUX_BWD.keys() == mh.AUX_BWD_LAUNCHES.keys()
    with pytest.raises(ConfigError, match="load_balancing"):
        with_overrides(load_model("qwen3-30b-a3b"), load_balancing="z_loss")
