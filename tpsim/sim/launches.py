"""The host's time to launch the kernels an op's call issues from a C++ loop.

tpsim's host model charges ``host_dispatch_s`` per op the framework dispatches from Python
(:func:`tpsim.sim.schedule.issue_bound`). Some ops launch many kernels inside that one call:
Transformer Engine's GroupedLinear (``transformer_engine/pytorch/module/grouped_linear.py``,
which Megatron-core's TEGroupedMLP runs) quantizes its input split by split
(``tex.split_quantize``: ``pytorch/csrc/extensions/cast.cpp`` loops ``quantize`` over the
experts) and runs one cuBLAS GEMM per expert (``general_grouped_gemm`` ->
``nvte_multi_tensor_gemm`` -> ``multi_stream_cublas_gemm``, ``common/gemm/cublaslt_gemm.cu``:
a C++ loop of ``nvte_cublas_gemm_v2`` over the experts on 4 streams; CUTLASS's grouped GEMM only
with ``NVTE_USE_CUTLASS_GROUPED_GEMM``), in forward and in backward (dgrad and wgrad). Each
such launch goes through the CUDA runtime and driver without Python:

    t_host(op) = host_ops x host_dispatch_s + (launches(dims) + loop_ops(dims)) x host_launch_s

``loop_ops(dims)``: the calls a Python loop over the local experts makes beside the op
(:mod:`tpsim.layer.moe_loops`), counted here because their number depends on the sizes (E_l =
E / ep) where ``host_ops`` does not. Each is one bare torch call (``.detach()``, a ``.data``
swap, ``torch.empty``, one product): a few microseconds through Python and the dispatcher
(PyTorch's operator micro-benchmark times ``split`` on CUDA tensors at 2.3-3.4 us,
pytorch/pytorch PR #32194), plus a kernel launch where it launches one, so it is priced as a
launch, ``host_launch_s``, not as ``host_dispatch_s``: that is a Megatron module op's Python
(fitted on dense Megatron-DeepSpeed steps), 58 us, and at that price Qwen3-30B-A3B's EP 8 row
would be host-bound beyond its published step (-11%).

The unfused attention core's softmax counts its PyTorch fallback's further calls the same way
(``launches``: the casts, the scale, ``masked_fill_`` past the op's own call, forward and in
autograd's backward: :mod:`tpsim.layer.unfused`).

``host_launch_s`` (the device's ``host_launch_us``, default 5 us): the CPU time of one kernel
launch through the CUDA runtime and driver, measured at about 4-6 us per launch (susun-blog.com, "pegainfer (3): From Launch
Overhead to CUDA Graph", RTX 5070 Ti, CUDA 13.0; not an H100 measurement, and fitted on no
data of tpsim's). A step captured in CUDA graphs (``host_dispatch_s`` = 0) launches nothing
from the host: 0 there. The quantize's kernels follow its quantizer
(:func:`tpsim.spec.precision.quantize_launches`): delayed fp8 one fused multi-tensor
cast-transpose for every split, current scaling three per split (amax, scale, cast:
``pytorch/csrc/quantizer.cpp`` ``Float8CurrentScalingQuantizer::quantize_impl``), the others
one per split. Left out: the stream events of each grouped
GEMM (2 x min(4, E_l) records and waits) and the per-expert Python that dispatches no torch
op (lists of weights and quantizers, attribute updates, the gradient hooks of each expert's
weight).
"""
from __future__ import annotations

def launch_times(template, dims, host_dispatch_s: float,
                 host_launch_s: float) -> tuple[float, ...]:
    """Per node of ``template`` at ``dims``: (launches(dims) + loop_ops(dims)) x
    ``host_launch_s``, the host's time to launch the kernels its call issues from C++ and to
    make the per-expert torch calls around it (0 for a node with neither, and for every node
    under CUDA graphs, ``host_dispatch_s`` = 0)."""
    if host_dispatch_s <= 0:
        return (0.0,) * len(template.nodes)
    return tuple(((n.launches(dims) if n.launches else 0)
                  + (n.loop_ops(dims) if n.loop_ops else 0)) * host_launch_s
                 for n in template.nodes)


def phase_launch_s(template, launch_s) -> tuple[float, float]:
    """(forward, backward): the launch times ``launch_s`` (per node) summed per phase."""
    fwd = sum(launch_s[i] for i in template.forward) if launch_s else 0.0
    return fwd, sum(launch_s) - fwd if launch_s else 0.0
