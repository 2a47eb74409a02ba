"""The Python loops over the local experts around the grouped GEMMs (tpsim.layer.moe_loops):
Transformer Engine's GroupedLinear backward and Megatron-core's per-expert bias add, counted per
expert and priced as launches beside the nodes' C++ ones (tpsim.sim.launches)."""
from __future__ import annotations

import pytest

from tpsim.base.schema import from_mapping
from tpsim.layer.graph import layer_template
from tpsim.layer.moe_ep import Alltoall, alltoall_dims
from tpsim.sim.launches import launch_times
from tpsim.spec.model import ModelConfig

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 16,
       "experts_per_token": 2, "expert_ffn_hidden": 128}


def slot(bias: bool, ep: int, fp8: bool = False):
    m = from_mapping(ModelConfig, {**TOY, "bias": bias}, "<test>")
    d = alltoall_dims(m, 1, ep, 1, 2, 128, "fp8" if fp8 else "bf16", False, 1.0)
    tpl = layer_template(False, blocks=("mlp",), dropout=False, swiglu=True,
                         moe=Alltoall(False, True, False), bias=bias, fp8=fp8)
    return tpl, d


def loops(tpl, d) -> dict[str, int]:
    return {n.name: n.loop_ops(d) for n in tpl.nodes if n.loop_ops}


@pytest.mark.parametrize("ep, fp8", [(2, False), (4, False), (8, True)])
def test_each_wgrad_loops_over_the_local_experts_and_their_weights_hooks(ep, fp8):
    """E_l = 16 / ep: after each wgrad, the input splits' release and the dummy weight
    gradient, then each expert weight's AccumulateGrad node and DDP post-hook, 4 E_l calls;
    nothing per expert in forward (BF16 and FP8 alike)."""
    tpl, d = slot(False, ep, fp8)
    el = 16 // ep
    assert loops(tpl, d) == {"bwd.experts.fc2.wgrad": 4 * el, "bwd.experts.fc1.wgrad": 4 * el}


def test_biases_add_fc1_bias_gradients_and_the_per_expert_bias_add():
    """gpt-oss's biases, E_l = 4: fc1's wgrad one call more per expert (its bias gradient,
    5 E_l with the weights' hooks); fc2's bias added expert by expert (2 E_l + the splits, view and cast: 12), its
    backward launching 6 E_l + 3 = 27 kernels from the C++ autograd engine; the DDP hook's add
    of each expert bias's gradient, 2 E_l bare calls."""
    tpl, d = slot(True, 4)
    assert loops(tpl, d) == {"fwd.experts.fc2.bias": 12, "bwd.experts.fc2.wgrad": 16,
                             "bwd.experts.fc1.wgrad": 20, "bwd.experts.bias.grad_accumulate": 8}
    node = tpl.nodes[tpl.names.index("bwd.experts.fc2.bias")]
    assert node.launches(d) == 27


def test_loops_are_priced_per_launch_and_vanish_under_cuda_graphs():
    """Each loop call costs host_launch_s, as the node's launches do, whatever host_dispatch_s
    (a bare torch call, not a module's Python: tpsim.sim.launches)."""
    tpl, d = slot(False, 2)
    i = tpl.names.index("bwd.experts.fc1.wgrad")
    assert launch_times(tpl, d, 1e-3, 0.0)[i] == 0.0
    assert launch_times(tpl, d, 1e-3, 1e-6)[i] == pytest.approx((4 * 8 + 8) * 1e-6)
    assert launch_times(tpl, d, 5e-3, 1e-6)[i] == launch_times(tpl, d, 1e-3, 1e-6)[i]
    assert sum(launch_times(tpl, d, 0.0, 1e-6)) == 0.0
