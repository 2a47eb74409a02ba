"""NeMo AutoModel's FakeBalancedGate (``--moe-routing round-robin``: tpsim.spec.fake_gate,
tpsim.layer.fake_gate) against closed forms: no router GEMM, top-k, auxiliary loss or router
backward, its five small kernels instead, and no router weight in a rank's parameters."""
from __future__ import annotations

import pytest

import tpsim
from tpsim.base.errors import ConfigError
from tpsim.layer.fake_gate import FAKE_GATE_KERNELS, FAKE_GATE_OPS, fake_gate_bytes
from tpsim.layer.graph import layer_template
from tpsim.layer.moe_ep import alltoall_dims
from tpsim.layer.moe_flex import Flex, slot_of
from tpsim.spec.model import load_model
from tpsim.spec.model_params import moe_layer_params, moe_layers_in, router_params

from tests.layer.test_moe_ep import toy


def template(routing: str, load_balancing: str = "aux_loss", shared: bool = False):
    moe = Flex(shared, load_balancing=load_balancing, routing=routing)
    return layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True, moe=moe)


@pytest.mark.parametrize("shared", [False, True])
def test_router_ops_absent_with_the_fake_gate_and_present_otherwise(shared):
    """A balanced router prices its gating GEMM, top-k, backward and the add of its input
    gradient; the fake gate none of them, one forward op in their place, nothing backward."""
    real = [n for n in template("uniform", shared=shared).names if ".router" in n]
    assert {"fwd.router", "fwd.router.topk", "bwd.router.topk", "bwd.router.dgrad",
            "bwd.router.wgrad", "bwd.router.add"} <= set(real)
    fake = template("round-robin", shared=shared)
    assert [n for n in fake.names if ".router" in n] == ["fwd.router.fake"]
    assert not [n for i, n in enumerate(fake.names) if i not in fake.forward and "router" in n]


def test_fake_gate_runs_its_code_s_kernels_and_no_auxiliary_loss():
    """fwd.router.fake: 6 Python-level ops, 5 kernels, T_n k (40 + B) bytes (ones, divide,
    arange, remainder, cast; the toy's 256 tokens, top-2, bf16: 512 x 42 = 21,504 bytes),
    and the host dispatches the aux loss's 7 ops forward and 3 backward for the real router
    but nothing of it for the fake gate."""
    d = alltoall_dims(toy(), 1, 4, 1, 2, 128, "bf16", False)
    tpl = template("round-robin")
    node = tpl.nodes[tpl.names.index("fwd.router.fake")]
    op = dict(zip(tpl.names, tpl.ops(d)))["fwd.router.fake"]
    assert (node.host_ops, op.kernels, op.nbytes) == (6, 5, 256 * 2 * (40 + 2))
    assert (FAKE_GATE_OPS, FAKE_GATE_KERNELS, fake_gate_bytes(d)) == (6, 5, 21_504)
    assert node.saved is None
    with_loss, without = template("uniform"), template("uniform", "none")
    assert with_loss.host_ops[0] - without.host_ops[0] == 7
    assert template("round-robin").host_ops == template("round-robin", "none").host_ops


def test_slot_of_carries_round_robin_to_the_flex_slot():
    assert slot_of("flex", "deepep", False, 4, 1, 1, routing="round-robin").routing == \
        "round-robin"


def test_rank_parameters_lose_the_router_weight_in_closed_form():
    """Per rank, each MoE layer of the stage holds h E parameters fewer with the fake gate
    (mixtral-8x7b: 4,096 x 8 = 32,768; PP 2: 16 layers a stage), the weights bf16 and the
    fp32 main gradients and the Adam state (master, m, v: 12 bytes) in proportion; the
    model's own parameter count is the real model's."""
    kw = dict(tp=1, ep=2, dp=2, pp=2, seq_len=1024, micro_batch=1, global_batch=8,
              moe_dispatcher="flex")
    real = tpsim.predict("mixtral-8x7b", "dgx-h100", **kw)
    fake = tpsim.predict("mixtral-8x7b", "dgx-h100", moe_routing="round-robin", **kw)
    m = load_model("mixtral-8x7b")
    per_layer = router_params(m)
    assert per_layer == 4096 * 8
    layers = moe_layers_in(m, 0, 16)
    assert real.memory.params_per_gpu - fake.memory.params_per_gpu == layers * per_layer
    assert real.memory.weights_bytes - fake.memory.weights_bytes == 2 * layers * per_layer
    assert real.memory.gradients_bytes - fake.memory.gradients_bytes == 4 * layers * per_layer
    assert real.memory.optimizer_bytes - fake.memory.optimizer_bytes == 12 * layers * per_layer
    assert moe_layer_params(m, 1, 2, 1) - moe_layer_params(m, 1, 2, 1, False) == per_layer
    assert fake.model.params == real.model.params == m.params()


@pytest.mark.parametrize("flag, kw", [("--moe-router-dtype", dict(moe_router_dtype="fp32")),
                                      ("--no-moe-router-fusion",
                                       dict(moe_router_fusion=False))])
def test_router_settings_beside_the_fake_gate_are_refused(flag, kw):
    with pytest.raises(ConfigError, match=flag):
        tpsim.predict("mixtral-8x7b", "dgx-h100", tp=1, ep=2, dp=2, seq_len=1024,
                      moe_dispatcher="flex", moe_routing="round-robin", **kw)
