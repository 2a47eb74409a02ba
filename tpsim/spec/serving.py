"""One serving run's settings in one frozen type: :class:`ServingLayout`.

:func:`tpsim.infer` takes one (``settings=``) or the same settings as keywords (which build
one). Each field is a :func:`~tpsim.spec.settings.setting`, checked when made; what needs the
model or the topology (tp x pp within its GPUs, heads divisible by tp, the dtype on the device)
is checked by ``infer`` once they are loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from .release import Released
from .settings import check, setting

DTYPES = ("bf16", "fp16", "fp8")     # GEMMs and weights; the KV cache's
ALLREDUCE = ("nccl", "custom")
DECODE_ATTENTION = ("tensor-cores", "flashinfer-0.1", "trtllm-mmha")   # tpsim/layer/infer_graph.py
SPECULATIVE = ("mtp", "eagle")      # draft heads; a separate draft model is --draft-model
# DeepSeek-V3 technical report (arXiv 2412.19437), section 5.4.3: "the acceptance rate of the
# second token prediction ranges between 85% and 90%": its low end, the default for --speculative mtp
MTP_ACCEPTANCE = 0.85


@dataclass(frozen=True, kw_only=True)
class ServingLayout(Released):
    """How a model is served: its split over GPUs, the batch and the lengths, the dtypes and
    the engine's all-reduce and CUDA graphs (module docstring); frozen, keyword-only, checked
    when made."""
    tp: int = setting(8, "tensor-parallel degree, GPUs (consecutive ranks; vLLM's "
                      "--tensor-parallel-size, SGLang's --tp-size)", flag="--tp",
                      kind="count", lists=True)
    pp: int = setting(1, "pipeline stages of tp GPUs each (vLLM's --pipeline-parallel-size): "
                      "a batch runs as min(pp, its sequences) micro-batches in flight",
                      flag="--pp",
                      kind="count", lists=True)
    ep: int = setting(1, "expert-parallel degree of a mixture-of-experts model: ep attention "
                      "replicas of tp GPUs, each serving batch/ep sequences, whose MoE layers "
                      "split the experts over ep ranks (all-to-all dispatch and combine)",
                      flag="--ep", kind="count", lists=True)
    batch: int = setting(1, "sequences served together (the engine's batch)", flag="--batch",
                         kind="count",
                         lists=True)
    prompt: int = setting(2048, "prompt (input) tokens per sequence (a benchmark's input "
                          "length: vLLM's --random-input-len)", flag="--prompt",
                          kind="tokens", lists=True)
    gen: int = setting(256, "tokens generated per sequence, the first one by the prefill "
                       "(>= 2; vLLM's --random-output-len, max_tokens)",
                       flag="--gen", kind="tokens", least=2, lists=True)
    dtype: str = setting("bf16", "GEMMs and weights: bf16, fp16 or fp8 (fp8 keeps bf16 "
                         "activations; vLLM's --dtype, fp8: --quantization fp8)", flag="--dtype", kind="choice", choices=DTYPES,
                         lists=True)
    kv_dtype: str | None = setting(None, "KV cache: bf16, fp16 or fp8 (vLLM's --kv-cache-dtype; "
                                   "default: --dtype)",
                                   flag="--kv-dtype", kind="choice", choices=DTYPES)
    allreduce: str = setting("nccl", "nccl, or custom: vLLM's one-shot/two-shot kernel where "
                             "it runs (vLLM's default; --disable-custom-all-reduce: nccl)", flag="--allreduce", kind="choice", choices=ALLREDUCE)
    eager: bool = setting(False, "no CUDA graphs: the host issues every op (the topology's "
                          "host_dispatch_us; vLLM's --enforce-eager, SGLang's "
                          "--disable-cuda-graph)", flag="--eager", kind="flag")
    decode_attention: str = setting(
        "tensor-cores", "the decode attention kernel: tensor-cores, one that reads the KV cache "
        "at the memory's rate (FlashInfer's tensor-core decode, FlashAttention's, TensorRT-LLM's); "
        "flashinfer-0.1, FlashInfer <= 0.1.6 as SGLang v0.3-v0.4.1 runs it: its CUDA-core "
        "kernel where query heads per KV head are 1, 2, 4 or 8, which its cores may bound; "
        "trtllm-mmha, TensorRT-LLM's masked multi-head attention (v0.5-v0.7, before its XQA "
        "kernel): one CTA per query head reads its KV head through the L2 and computes on its "
        "CUDA cores, either of which may bound it "
        "(tpsim.cost.compute.decode_attention_time)", flag="--decode-attention", kind="choice",
        choices=DECODE_ATTENTION)
    memory_headroom: float | None = setting(
        None, "share of the device memory left to the tensors (after the topology's reserve "
        "and fragmentation) that the server keeps free on top, a fraction from 0 to 1 "
        "(default: the engine's, tpsim/serving/engine_memory.py: vLLM's "
        "gpu_memory_utilization 0.9 of the whole memory, SGLang's mem_fraction_static with "
        "--admission sglang-*; 0: the KV cache takes all the rest)", flag="--memory-headroom",
        kind="probability")

    speculative: str | None = setting(
        None, "speculative decoding with a draft head: mtp (the model's own multi-token-"
        "prediction module) or eagle (an EAGLE one-layer head) (vLLM's --speculative-config "
        "method, SGLang's --speculative-algorithm; default: none)", flag="--speculative",
        kind="choice", choices=SPECULATIVE)
    draft_model: str | None = setting(None, "speculative decoding with a separate draft model "
                                      "(a shipped name or YAML path; SGLang's "
                                      "--speculative-draft-model-path; default: none)", flag="--draft-model",
                                      kind="name")
    num_speculative_tokens: int = setting(
        0, "tokens drafted per step, k (vLLM's name; SGLang's --speculative-num-steps); 0: no "
        "speculation", flag="--num-speculative-tokens", kind="count", least=0, lists=True)
    acceptance_rate: float | None = setting(
        None, "probability from 0 to 1 that the target accepts a drafted token, the "
        f"workload's (default: none, required with a draft; mtp: {MTP_ACCEPTANCE}, the "
        "DeepSeek-V3 report's second-token figure)",
        flag="--acceptance-rate", kind="probability", lists=True)

    def __post_init__(self):
        check(self)
        drafted = self.speculative is not None or self.draft_model is not None
        if self.speculative is not None and self.draft_model is not None:
            raise ConfigError("--draft-model", "", "no --speculative beside it (one draft)",
                              self.draft_model)
        if drafted and self.num_speculative_tokens < 1:
            raise ConfigError("--num-speculative-tokens", "", "at least 1 with a draft "
                              "(--speculative or --draft-model)",
                              self.num_speculative_tokens)
        if not drafted and self.num_speculative_tokens:
            raise ConfigError("--num-speculative-tokens", "", "0 without --speculative or "
                              "--draft-model", self.num_speculative_tokens)
        if drafted and self.acceptance_rate is None and self.speculative != "mtp":
            raise ConfigError("--acceptance-rate", "", "the workload's acceptance rate in "
                              "[0, 1) with an eagle head or a draft model", None)
        if drafted and self.pp > 1:
            raise ConfigError("--pp", "", "1 with speculative decoding (not modelled)", self.pp)

    @property
    def acceptance(self) -> float:
        """The acceptance rate per drafted token: ``acceptance_rate``, else with ``mtp``
        :data:`MTP_ACCEPTANCE`."""
        return MTP_ACCEPTANCE if self.acceptance_rate is None else self.acceptance_rate

    @property
    def cache_dtype(self) -> str:
        """The KV cache's dtype: ``kv_dtype``, else ``dtype``."""
        return self.dtype if self.kv_dtype is None else self.kv_dtype

    @property
    def activation_dtype(self) -> str:
        """The activations' dtype: fp8 GEMMs keep bf16 activations."""
        return "bf16" if self.dtype == "fp8" else self.dtype


__all__ = ["ServingLayout", "DTYPES", "ALLREDUCE", "DECODE_ATTENTION", "SPECULATIVE", "MTP_ACCEPTANCE"]
