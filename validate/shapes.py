"""Layer shapes the harness fits on and the (different) shapes it then predicts.

Calibration must not see the layers it is judged on: the kernels benchmarked for the fit come from
FIT shapes plus a generic GEMM grid, and the error is measured on EVAL shapes, none of which is a FIT
shape. The full sets (the default, for GPU nodes) split over 1, 2, 4 and 8 ranks; the quick sets
(sized for a CPU) over 1 and 2, the smoke sets over 2.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LayerShape:
    """One transformer block's sizes: tokens = seq * batch; Megatron layout (seq, batch, hidden)."""
    seq: int
    batch: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    activation: str = "gelu"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def label(self) -> str:
        kv = f"/{self.kv_heads}kv" if self.kv_heads != self.heads else ""
        return (f"s{self.seq} b{self.batch} h{self.hidden} a{self.heads}{kv} "
                f"f{self.ffn} {self.activation}")

    def as_dict(self) -> dict:
        return asdict(self)

    def unsplittable(self, tp: int) -> list[str]:
        """Reasons this shape cannot be split over ``tp`` ranks (empty when it can)."""
        checks = [("hidden", self.hidden, self.heads, "heads"), ("heads", self.heads, tp, "ranks"),
                  ("kv_heads", self.kv_heads, tp, "ranks"), ("ffn", self.ffn, tp, "ranks"),
                  ("seq", self.seq, tp, "ranks (sequence parallelism)"),
                  ("heads", self.heads, self.kv_heads, "kv_heads")]
        return [f"{name}={n} is not divisible by {what}={d}" for name, n, d, what in checks if n % d]


# Timed and predicted: the accuracy figures come from these only.
EVAL = {
    "quick": (LayerShape(256, 2, 512, 8, 8, 2048, "gelu"),
              LayerShape(512, 1, 768, 12, 4, 2048, "swiglu"),
              LayerShape(1024, 1, 384, 6, 6, 1536, "gelu")),
    "full": (LayerShape(256, 2, 512, 8, 8, 2048, "gelu"),
             LayerShape(512, 1, 768, 16, 8, 2048, "swiglu"),
             LayerShape(1024, 1, 384, 8, 8, 1536, "gelu"),
             LayerShape(512, 2, 1024, 16, 16, 4096, "gelu"),
             LayerShape(2048, 1, 512, 8, 8, 1408, "swiglu")),
    "smoke": (LayerShape(32, 2, 64, 4, 4, 128, "gelu"),
              LayerShape(64, 1, 64, 8, 4, 128, "swiglu")),
}

# Every compute kernel of their blocks (the ops tpsim's graph prices, both passes) is
# benchmarked for the fit, with the GEMM grid below; never predicted.
FIT = {
    "quick": (LayerShape(384, 1, 640, 10, 10, 2560, "gelu"),
              LayerShape(768, 1, 256, 4, 4, 1024, "swiglu"),
              LayerShape(1536, 1, 256, 4, 4, 1024, "gelu")),
    "full": (LayerShape(384, 1, 640, 8, 8, 2560, "gelu"),
             LayerShape(768, 1, 256, 8, 8, 1024, "swiglu"),
             LayerShape(128, 4, 896, 16, 16, 3584, "gelu")),
    "smoke": (LayerShape(48, 1, 96, 4, 4, 192, "gelu"),),
}

GEMM_GRID = {"quick": (128, 384, 1024), "full": (64, 128, 256, 512, 1024, 2048),
             "smoke": (128, 256)}

# Batched GEMMs with one dimension a head's (batch, seq, head_dim): the attention core's
# (seq x seq x head_dim) scores and (seq x head_dim x seq) context products at sizes no EVAL or
# FIT shape has; with the grid they fit how much of a GEMM's memory time shows.
THIN_GEMMS = {"quick": ((1, 2048, 64), (3, 1280, 64), (8, 640, 32)),
              "full": ((1, 4096, 64), (3, 1280, 64), (8, 640, 32), (4, 1024, 128)),
              "smoke": ((2, 96, 16),)}

COLLECTIVE_SIZES = {"quick": tuple(4 ** i * 1024 for i in range(1, 8)),      # 4 KiB .. 16 MiB
                    "full": tuple(2 ** i for i in range(10, 27)),           # 1 KiB .. 64 MiB
                    "smoke": (4096, 65536, 1 << 20)}

REPEATS = {"quick": 21, "full": 41, "smoke": 3}
