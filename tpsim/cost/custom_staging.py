"""vLLM's custom all-reduce outside a CUDA graph: the copy into its IPC buffer.

Under graph capture vLLM's kernel reads the peers' registered input tensors themselves
(``CustomAllreduce.register_graph_buffers``); outside a graph it runs
``all_reduce(input, registered=False)`` (vllm/distributed/device_communicators/
custom_all_reduce.py, ``custom_all_reduce``: "outside of cuda graph context, custom allreduce
incurs a cost of cudaMemcpy"), whose op (csrc/custom_all_reduce.cu, ``all_reduce``) first
copies the input into the rank's IPC buffer with ``cudaMemcpyAsync(reg_buffer, inp, S,
cudaMemcpyDeviceToDevice, stream)`` on the kernel's stream, and the kernel then reads that
buffer. The host issues both from the one op, so the copy adds GPU time, not a host op.
"""
from __future__ import annotations

import dataclasses

from .collective_cost import CollectiveCost
from .compute import elementwise_time


def staged_custom_all_reduce(cost: CollectiveCost, device) -> CollectiveCost:
    """``cost`` (:func:`~tpsim.cost.collectives.custom_all_reduce_time`, the graph path) with
    the eager path's staging copy as its copy term: S bytes read and written in device memory,

        copy = elementwise_time(2 S) = kernel_launch + 2 S / (mem_bw x memory_efficiency)

    (:func:`~tpsim.cost.compute.elementwise_time`; the copy runs on the kernel's stream
    before it, so the two add)."""
    copy = elementwise_time(2 * cost.nbytes, device)
    return dataclasses.replace(cost, time_s=cost.time_s + copy, copy_s=cost.copy_s + copy)
