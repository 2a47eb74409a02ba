"""A fused (flash) attention kernel's efficiency on a device: a mapping under a topology's
``device.attention_kernels`` (:class:`tpsim.cluster.topology.Device`)."""
from __future__ import annotations

from ..base.record import record
from ..base.errors import ConfigError
from ..base.schema import check_built, spec
from ..base.units import GB, TERA, US


@record
class AttentionKernel:
    """A fused (flash) attention kernel's sustained efficiency on this device.

    eff(d, s_kv) = efficiency[d] * s_kv / (s_kv + seq_half_efficiency) (* causal_efficiency):
    the kernel's best share of the dense peak at head dim d, lost at short key lengths (each
    query tile streams only s_kv / block keys); a causal kernel runs at ``causal_efficiency`` of
    that (its query tiles do unequal work) and computes its diagonal key tiles in full:
    (1 + causal_block / s_kv) times the causal FLOPs (tpsim.cost.compute.attention_exec_flops).
    The backward takes ``backward_*`` where listed (its loop over the tiles differs).
    ``decode_fixed_s``: the fixed time of the kernel family's split-KV decode call (one query
    per sequence against the KV cache) beyond its bytes and launch
    (:func:`tpsim.cost.compute.decode_attention_time`); ``cuda_core_decode_Bps``: the KV-cache
    bytes a second that FlashInfer's CUDA-core batch decode kernel reads at 8 query heads per
    KV head, where its CUDA cores, not the memory, bound it (the rate an engine gets when it
    runs that kernel for grouped-query attention: ``--decode-attention flashinfer-0.1``).
    ``int32_tops`` and ``dropout_bits``: the INT32 rate its attention dropout runs at and the
    random bits it draws a score element (:mod:`tpsim.cost.attention_dropout`).
    """
    efficiency: dict[str, float] = spec(gt=0, le=1, doc="best share of peak per head dim (64, "
                                                      "128, 256: the nearest listed is used)")
    backward_efficiency: dict[str, float] | None = spec(
        gt=0, le=1, default=None, doc="the backward pass's, when it differs (default: efficiency)")
    seq_half_efficiency: float = spec(ge=0, default=0.0,
                                      doc="key length that halves the efficiency")
    causal_block: float = spec(ge=0, default=0.0,
                               doc="extra key tokens a causal kernel computes per query on the "
                                   "diagonal tiles")
    causal_efficiency: float = spec(gt=0, le=1, default=1.0,
                                    doc="share of the efficiency a causal kernel keeps")
    backward_causal_block: float | None = spec(
        ge=0, default=None, doc="the backward pass's causal_block, when it differs")
    backward_causal_efficiency: float | None = spec(
        gt=0, le=1, default=None, doc="the backward pass's causal_efficiency, when it differs")
    deterministic_tile: tuple[int, ...] | None = spec(
        ge=1, default=None, doc="[query block, key block] of the backward's tile where its "
        "deterministic mode loops over key blocks in ceil(SMs / (b heads)) CTAs a head "
        "(FlashAttention-2 >= 2.4.1; tpsim.cost.key_loop); null: priced as the default backward")
    deterministic_workspace_bytes: float = spec(
        ge=0, default=0.0, doc="bytes an element of the dP workspace its deterministic "
        "backward writes and reads back (cuDNN on Hopper before 9.25: tpsim.cost.dp_workspace); "
        "0: none")
    decode_fixed_s: float = spec(
        "decode_fixed_us", scale=US, ge=0, default=0.0,
        doc="fixed time of a decode attention call (split-KV: the per-split combine, each "
            "CTA's pipeline fill) beyond its bytes at memory_efficiency and kernel_launch_us, us")
    cuda_core_decode_Bps: float | None = spec(
        "cuda_core_decode_GBps", scale=GB, gt=0, default=None,
        doc="KV-cache bytes a second FlashInfer's CUDA-core batch decode kernel reads at 8 query "
            "heads per KV head (its cores bound it: the rate scales as 8 / the group size), GB/s; "
            "null: not listed (that kernel priced as the others)")
    int32_ops_per_s: float | None = spec(
        "int32_tops", scale=TERA, gt=0, default=None,
        doc="the device's INT32 rate on its CUDA cores (SMs x INT32 lanes an SM x boost clock), "
            "Tops/s: what the kernel's in-kernel attention dropout (Philox random numbers a "
            "score element) runs at (tpsim.cost.attention_dropout); null: dropout not priced")
    dropout_bits: int = spec(ge=1, le=32, default=8, doc="random bits a score element's "
                             "dropout compares with p (FlashAttention-2: 8; cuDNN: 4, p in steps "
                             "of 1/16): a 128-bit Philox draw serves 128 / bits elements")

    __post_init__ = check_built   # built in code: checked as the loader checks a file

    def validate(self, source: str, path: str) -> None:
        if self.deterministic_tile is not None and len(self.deterministic_tile) != 2:
            raise ConfigError(source, f"{path}.deterministic_tile", "[query block, key block]")
        for name, table in (("efficiency", self.efficiency),
                            ("backward_efficiency", self.backward_efficiency or {})):
            for key in table:
                if not key.isdigit() or int(key) < 1:
                    raise ConfigError(source, f"{path}.{name}.{key}", "a head dimension (an integer)")

    def at(self, head_dim: int, backward: bool = False) -> float:
        """The best efficiency at the listed head dim nearest to ``head_dim``."""
        table = (self.backward_efficiency if backward and self.backward_efficiency
                 else self.efficiency)
        key = min(table, key=lambda k: (abs(int(k) - head_dim), int(k)))
        return table[key]

    def causal(self, backward: bool = False) -> tuple[float, float]:
        """(causal_efficiency, causal_block) of the pass: the backward's own where listed."""
        if not backward:
            return self.causal_efficiency, self.causal_block
        return (self.causal_efficiency if self.backward_causal_efficiency is None
                else self.backward_causal_efficiency,
                self.causal_block if self.backward_causal_block is None
                else self.backward_causal_block)

