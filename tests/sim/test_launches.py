"""The host's C++ kernel launches (tpsim.sim.launches): Transformer Engine's grouped GEMMs launch
one kernel per local expert for each cast and GEMM; a dense layer's ops launch none; a phase
takes max(GPU time, host ops x host_dispatch_s + launches x host_launch_s)."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import load_topology
from tpsim.layer.dims import recipe_field
from tpsim.layer.graph import layer_template
from tpsim.layer.moe import moe_dims
from tpsim.sim.launches import launch_times, phase_launch_s
from tpsim.sim.price import Pricing
from tpsim.sim.simulate import gpu_phases, phase_times, simulate
from tpsim.spec.model import ModelConfig
from tpsim.spec.parallel import Parallelism

LAUNCH_S = load_topology("dgx-h100").device.host_launch_s   # 5 us, the default

TOY = {"name": "toy-moe", "layers": 2, "hidden": 256, "heads": 8, "vocab": 1000, "seq_len": 128,
       "activation": "swiglu", "norm": "rmsnorm", "ffn_hidden": 512, "experts": 8,
       "experts_per_token": 2, "expert_ffn_hidden": 128}


def moe_layer(dtype="bf16", b=2, recipe="delayed"):
    d = moe_dims(from_mapping(ModelConfig, TOY, "<test>"), 1, b, 128, dtype, False)
    d = dataclasses.replace(d, **recipe_field(d, recipe))
    tpl = layer_template(False, False, blocks=("mlp",), dropout=False, swiglu=True, moe=1,
                         fp8=d.quantizer)
    return tpl, d


@pytest.mark.parametrize("dtype, recipe, fwd, bwd", [
    ("bf16", "delayed", 2 * 8, 2 * 2 * 8), ("fp8", "delayed", 2 * 8 + 2, 2 * 2 * 8 + 2),
    ("fp8", "tensorwise", 2 * 8 + 2 * 3 * 8, 2 * 2 * 8 + 2 * 3 * 8),
    ("fp8", "blockwise", 2 * 2 * 8, 2 * 3 * 8), ("mxfp8", "delayed", 2 * 2 * 8, 2 * 3 * 8)])
def test_grouped_gemms_launch_one_kernel_per_expert(dtype, recipe, fwd, bwd):
    """8 local experts: fc1 and fc2 each launch 8 GEMMs forward and 8 dgrad + 8 wgrad backward;
    under FP8 each also quantizes its input (forward) and its output gradient (backward) split
    by split (Transformer Engine's split_quantize): delayed scaling in one fused multi-tensor
    cast-transpose, current scaling 3 kernels a split (amax, scale, cast), blockwise and MXFP8
    one a split. After each wgrad, Transformer Engine's Python loop makes 2 bare torch calls
    per expert and autograd's AccumulateGrad and Megatron-core's DDP hook 2 more per expert
    weight (2 x 4 x 8 in all), each priced as a launch, not as a dispatched op (62 us
    here)."""
    tpl, d = moe_layer(dtype, recipe=recipe)
    assert LAUNCH_S == pytest.approx(5e-6)     # host_launch_us's default: ~4-6 us measured
    launch_s = launch_times(tpl, d, 62e-6, LAUNCH_S)
    assert phase_launch_s(tpl, launch_s) == pytest.approx((fwd * LAUNCH_S,
                                                           (bwd + 2 * 4 * 8) * LAUNCH_S))
    assert sum(launch_times(tpl, d, 0.0, LAUNCH_S)) == 0.0   # CUDA graphs


def test_dense_layers_launch_only_the_amax_all_reduces_from_cpp():
    """A dense layer launches nothing from a C++ loop but, under current scaling with SP, the
    four amax all-reduces its quantizers issue (one NCCL launch each,
    tpsim.layer.linears.amax_reduce); under delayed scaling nothing."""
    tpl = layer_template(True, True, dropout=False, swiglu=True, fp8="fp8:tensorwise")
    launched = {n.name: n.launches(None) for n in tpl.nodes if n.launches is not None}
    assert launched == {f"{c}.cast.amax-all-reduce": 1
                        for c in ("fwd.qkv", "fwd.mlp_in", "bwd.proj", "bwd.mlp_out")}
    tpl = layer_template(True, True, dropout=False, swiglu=True, fp8="fp8:delayed")
    assert all(n.launches is None for n in tpl.nodes)


@pytest.mark.parametrize("host, b, bound", [(1e-3, 2, "host"), (0.0, 64, "gpu"),
                                             (1e-6, 64, "host"), (1e-6, 512, "gpu")])
def test_phase_is_the_slower_of_gpu_and_host(host, b, bound):
    """Without syncs: t = max(GPU, ops x host + launches x 5 us), per phase. A 1 ms dispatch
    makes the tiny layer host-bound; at 1 us the 32 + 48 FP8 launches (0.16 + 0.24 ms) still
    outlast a 64-sequence micro-batch's GPU time (0.09 + 0.14 ms), not a 512-sequence one's
    (0.43 + 0.65 ms); under CUDA graphs (0) nothing is launched from the host."""
    tpl, d = moe_layer("fp8", b)
    sim = simulate(tpl, d, Pricing(load_topology("dgx-h100"), Parallelism()), host)
    assert not tpl.syncs
    host_s = [n * host + launched for n, launched in zip(tpl.host_ops,
                                                         phase_launch_s(tpl, sim.launch_s))]
    gpu = gpu_phases(sim)
    assert phase_times(sim) == pytest.approx([max(g, h) for g, h in zip(gpu, host_s)])
    assert all((h > g) == (bound == "host") for g, h in zip(gpu, host_s))


def test_launches_after_a_sync_delay_the_ops_issued_after_it():
    """A (10 s), X (0 s), then B waiting for A, then C, h = 1, X and B each launching kernels
    for 1.5 s: B is issued at end_A + h + 1.5 = 12.5, C at 13.5 (B's end): makespan 14.5, X's
    launches (before the sync) costing nothing. With A of 5 s, the host's wait at the sync is
    what it did not spend issuing X: 5 - h - 1.5 = 2.5 s."""
    from tpsim.layer.template import Node, Template
    from tpsim.sim.schedule import run, sync_waits
    nodes = (Node("A", "forward", "", "compute", None), Node("X", "forward", "", "compute", None),
             Node("B", "forward", "", "compute", None, sync="A"),
             Node("C", "forward", "", "compute", None))
    tpl = Template.from_nodes(nodes, [("A", "B", "data"), ("B", "C", "data")], {})
    launch_s = (0.0, 1.5, 1.5, 0.0)
    tl = run(tpl, [10.0, 0.0, 1.0, 1.0], host_s=1.0, launch_s=launch_s)
    assert (tl.start_s["B"], tl.start_s["C"], tl.makespan_s) == (12.5, 13.5, 14.5)
    assert run(tpl, [10.0, 0.0, 1.0, 1.0], host_s=1.0).makespan_s == 13.0
    assert sync_waits(tpl, [5.0, 0.0, 1.0, 1.0], 1.0, launch_s) == (2.5, 0.0)
