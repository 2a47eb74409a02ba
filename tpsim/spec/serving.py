"""One serving run's settings in one frozen type: :class:`ServingLayout`.

:func:`tpsim.infer` takes one (``settings=``) or the same settings as keywords (which build
one). Each field is a :func:`~tpsim.spec.settings.setting`, checked when made; what needs the
model or the topology (tp x pp within its GPUs, heads divisible by tp, the dtype on the device)
is checked by ``infer`` once they are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import check, setting

DTYPES = ("bf16", "fp16", "fp8")     # GEMMs and weights; the KV cache's
ALLREDUCE = ("nccl", "custom")


@dataclass(frozen=True, kw_only=True)
class ServingLayout:
    """How a model is served: its split over GPUs, the batch and the lengths, the dtypes and
    the engine's all-reduce and CUDA graphs (module docstring); frozen, keyword-only, checked
    when made."""
    tp: int = setting(8, "tensor-parallel degree (consecutive ranks)", flag="--tp",
                      kind="count", lists=True)
    pp: int = setting(1, "pipeline stages (batch/pp micro-batches in flight)", flag="--pp",
                      kind="count", lists=True)
    ep: int = setting(1, "expert-parallel degree of a mixture-of-experts model: ep attention "
                      "replicas of tp GPUs, each serving batch/ep sequences, whose MoE layers "
                      "split the experts over ep ranks (all-to-all dispatch and combine)",
                      flag="--ep", kind="count", lists=True)
    batch: int = setting(1, "sequences served together", flag="--batch", kind="count",
                         lists=True)
    prompt: int = setting(2048, "prompt (input) tokens per sequence", flag="--prompt",
                          kind="count", lists=True)
    gen: int = setting(256, "tokens generated per sequence, the first one by the prefill (>= 2)",
                       flag="--gen", kind="count", least=2, lists=True)
    dtype: str = setting("bf16", "GEMMs and weights: bf16, fp16 or fp8 (fp8 keeps bf16 "
                         "activations)", flag="--dtype", kind="choice", choices=DTYPES,
                         lists=True)
    kv_dtype: str | None = setting(None, "KV cache: bf16, fp16 or fp8 (default: --dtype)",
                                   flag="--kv-dtype", kind="choice", choices=DTYPES)
    allreduce: str = setting("nccl", "nccl, or custom: vLLM's one-shot/two-shot kernel where "
                             "it runs", flag="--allreduce", kind="choice", choices=ALLREDUCE)
    eager: bool = setting(False, "no CUDA graphs: the host issues every op (the topology's "
                          "host_dispatch_us)", flag="--eager", kind="flag")
    memory_headroom: float = setting(
        0.0, "share of the device memory left to the tensors (after the topology's reserve "
        "and fragmentation) that the server keeps free on top", flag="--memory-headroom",
        kind="probability")

    def __post_init__(self):
        check(self)

    @property
    def cache_dtype(self) -> str:
        """The KV cache's dtype: ``kv_dtype``, else ``dtype``."""
        return self.dtype if self.kv_dtype is None else self.kv_dtype

    @property
    def activation_dtype(self) -> str:
        """The activations' dtype: fp8 GEMMs keep bf16 activations."""
        return "bf16" if self.dtype == "fp8" else self.dtype


__all__ = ["ServingLayout", "DTYPES", "ALLREDUCE"]
