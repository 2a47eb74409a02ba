"""The memory a serving engine keeps free by default, as the engine tpsim mimics reserves it:
the ``memory_headroom`` of a :class:`~tpsim.spec.serving.ServingLayout` left at None.

tpsim's memory rule is ``Device.usable_bytes(h)`` = (M - R)(1 - h) - waste: M the device's
memory, R the topology's reserve (CUDA context, NCCL buffers), h the share of the rest kept
free. Each engine's knob, named as the engine names it, written as that h:

* vLLM (``--admission vllm``, and ``tpsim infer``): ``gpu_memory_utilization`` u = 0.9 of the
  device's total memory for everything the engine holds, the CUDA context included
  (vllm/config.py CacheConfig, v0.8; the worker's KV cache = M u - the profiled peak, which
  counts the memory outside torch's allocator: vllm/v1/worker/gpu_worker.py
  determine_available_memory). Usable = u M - R, so h = (1 - u) M / (M - R).
* SGLang (``--admission sglang-0.3``, ``sglang-0.4``): ``mem_fraction_static`` f of the memory
  free when the engine starts (after the CUDA context) for the weights and the KV pool
  (ModelRunner.profile_max_num_token: rest = available - total x (1 - f)), chosen from the TP
  degree in python/sglang/srt/server_args.py: v0.4.1 0.88 at TP 1, 0.87 from 2, 0.85 from 4,
  0.81 from 8, 0.79 from 16 (the GPU's memory there chooses chunked_prefill_size and
  cuda_graph_max_bs, not f); v0.3.0 the same but 0.83 from 8 (read from a copy of
  server_args.py with v0.3-era fields, not from the v0.3.0 tag itself). So h = 1 - f.

TensorRT-LLM's ``kv_cache_free_gpu_mem_fraction`` 0.9 (of the memory free after the weights
and activations) is no ``--admission``: its h = 0.1 (M - R - weights - activations) / (M - R)
is given with ``--memory-headroom``.
"""
from __future__ import annotations

from ..cluster.topology import Device

VLLM_GPU_MEMORY_UTILIZATION = 0.9       # vllm/config.py CacheConfig, v0.8
# SGLang's mem_fraction_static by the least TP degree it applies from (server_args.py)
SGLANG_MEM_FRACTION_STATIC = {
    "sglang-0.4": ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88)),   # v0.4.1
    "sglang-0.3": ((16, 0.79), (8, 0.83), (4, 0.85), (2, 0.87), (1, 0.88)),   # v0.3.0
}


def mem_fraction_static(engine: str, tp: int) -> float:
    """SGLang's default ``mem_fraction_static`` at TP degree ``tp`` (module docstring)."""
    return next(f for least, f in SGLANG_MEM_FRACTION_STATIC[engine] if tp >= least)


def engine_headroom(engine: str, device: Device, tp: int) -> float:
    """The share h of (memory - reserve) that ``engine`` (an ``--admission``) keeps free by
    default: vLLM 1 - (u M - R) / (M - R) = (1 - u) M / (M - R) at u = 0.9, clipped to
    [0, 1]; SGLang 1 - mem_fraction_static(tp) (module docstring)."""
    if engine in SGLANG_MEM_FRACTION_STATIC:
        return 1.0 - mem_fraction_static(engine, tp)
    room = device.memory_bytes - device.memory_reserved_bytes
    if room <= 0:
        return 0.0
    free = (1 - VLLM_GPU_MEMORY_UTILIZATION) * device.memory_bytes
    return min(free / room, 1.0)


def headroom(given: float | None, engine: str, device: Device, tp: int) -> float:
    """The layout's ``memory_headroom`` when given, else :func:`engine_headroom`."""
    return engine_headroom(engine, device, tp) if given is None else given


def engine_memory_rule(given: float | None, engine: str, tp: int) -> str:
    """Where the headroom comes from, in words, for the reports."""
    if given is not None:
        return f"--memory-headroom {given:g}"
    if engine in SGLANG_MEM_FRACTION_STATIC:
        return f"SGLang's mem_fraction_static {mem_fraction_static(engine, tp):g}"
    return f"vLLM's gpu_memory_utilization {VLLM_GPU_MEMORY_UTILIZATION:g}"


__all__ = ["engine_headroom", "headroom", "engine_memory_rule", "mem_fraction_static",
           "VLLM_GPU_MEMORY_UTILIZATION", "SGLANG_MEM_FRACTION_STATIC"]
