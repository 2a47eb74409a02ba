"""The router's top-k and auxiliary loss without the fused kernels (tpsim.layer.moe_router)
against closed forms: the kernels' bytes and count, the host's Python-level ops and C++
launches each path adds, and where the setting is refused."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer.graph import layer_template
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.layer.moe_flex import Flex, slot_of
from tpsim.layer.moe_host import AUX_BWD, AUX_BWD_LAUNCHES, AUX_FWD
from tpsim.layer.moe_router import (AUX_BWD_KERNELS, AUX_KERNELS, AUX_OPS, TOPK_BWD_KERNELS,
                                    TOPK_OPS)
from tpsim.spec.layout import Layout

from .test_moe_ep import toy

T, E, K = 256, 8, 2          # the toy's tokens a rank (micro-batch 2 x 128), experts, top-k


def _slot(fused: bool, loss: str = "aux_loss"):
    d = alltoall_dims(toy(), 1, 2, 1, 2, 128, "bf16", False)
    tpl = layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=Alltoall(False, True, False, loss, router_fusion=fused))
    nodes = {n.name: n for n in tpl.nodes}
    return d, tpl, dict(zip(tpl.names, tpl.ops(d))), nodes


def test_unfused_kernels_move_the_closed_form_bytes():
    """bf16 logits (B = 2), n = T E = 2,048, T k = 512 rows: the top-k path n (6 B + 18) +
    T k (2 B + 24), the loss's softmax and sum n (B + 8); backward the top-k's zeros n B and
    24 bytes a row, the loss's softmax backward n (8 + B) and the gradients' sum 3 n B."""
    _, _, ops, _ = _slot(False)
    n, rows = T * E, T * K
    fwd, bwd = ops["fwd.router.topk"], ops["bwd.router.topk"]
    assert fwd.nbytes == n * (6 * 2 + 18) + rows * (2 * 2 + 24) + n * (2 + 8)
    assert bwd.nbytes == n * 2 + rows * 24 + n * (8 + 2) + 3 * n * 2
    assert (fwd.kernels, bwd.kernels) == (TOPK_OPS + AUX_KERNELS,
                                          TOPK_BWD_KERNELS + AUX_BWD_KERNELS)


@pytest.mark.parametrize("loss", ["aux_loss", "none"])
def test_unfused_path_adds_the_counted_host_ops(loss):
    """Forward: 9 top-k ops and 9 of the loss where the fused path counts its kernel and 7;
    backward: MoEAuxLossAutoScaler's Python backward beside tpsim's own op where the fused path
    counts three Python Functions, the rest of the kernels launched by autograd's C++ nodes."""
    aux = loss != "none"
    _, fused, _, f_nodes = _slot(True, loss)
    _, unfused, _, u_nodes = _slot(False, loss)
    assert unfused.host_ops[0] - fused.host_ops[0] == \
        TOPK_OPS + AUX_OPS * aux - 1 - AUX_FWD[loss]
    assert unfused.host_ops[1] - fused.host_ops[1] == aux - AUX_BWD[loss]
    launches = u_nodes["bwd.router.topk"].launches(None)
    assert launches == TOPK_BWD_KERNELS + AUX_BWD_KERNELS * aux - 1 - aux
    assert (f_nodes["bwd.router.topk"].launches or (lambda d: 0))(None) == \
        AUX_BWD_LAUNCHES[loss]


def test_every_expert_parallel_slot_carries_the_setting():
    assert slot_of("alltoall", "deepep", False, 2, 1, 1, router_fusion=False).router_fusion \
        is False
    assert slot_of("flex", "deepep", False, 2, 1, 1, router_fusion=False) == \
        Flex(False, "deepep", router_fusion=False)
    assert slot_of("allgather", "deepep", False, 2, 1, 1, router_fusion=False).router_fusion \
        is False
    assert Layout().moe_router_fusion is True


def test_unfused_router_is_refused_for_the_ep_1_slot():
    with pytest.raises(ConfigError, match="--no-moe-router-fusion"):
        slot_of("alltoall", "deepep", False, 1, 2, 2, router_fusion=False)
