"""Layer shapes the harness fits on and the (different) shapes it then predicts.

Calibration must not see the layers it is judged on: the GEMMs benchmarked for the fit come from
FIT shapes plus a generic grid, and the error is measured on EVAL shapes, none of which is a FIT
shape. Sizes are chosen so that both sets split over 1, 2 and 4 ranks.
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
             LayerShape(512, 1, 768, 12, 4, 2048, "swiglu"),
             LayerShape(1024, 1, 384, 6, 6, 1536, "gelu"),
             LayerShape(512, 2, 1024, 16, 16, 4096, "gelu"),
             LayerShape(2048, 1, 512, 8, 2, 1408, "swiglu")),
    "smoke": (LayerShape(32, 2, 64, 4, 4, 128, "gelu"),
              LayerShape(64, 1, 64, 4, 2, 128, "swiglu")),
}

# Their GEMMs are benchmarked for the fit (with the generic grid below); never predicted.
FIT = {
    "quick": (LayerShape(384, 1, 640, 10, 10, 2560, "gelu"),
              LayerShape(768, 1, 256, 4, 4, 1024, "swiglu")),
    "full": (LayerShape(384, 1, 640, 10, 10, 2560, "gelu"),
             LayerShape(768, 1, 256, 4, 4, 1024, "swiglu"),
             LayerShape(128, 4, 896, 14, 14, 3584, "gelu")),
    "smoke": (LayerShape(48, 1, 96, 4, 4, 192, "gelu"),),
}

GEMM_GRID = {"quick": (128, 384, 1024), "full": (64, 128, 256, 512, 1024, 2048),
             "smoke": (128, 256)}

COLLECTIVE_SIZES = {"quick": tuple(4 ** i * 1024 for i in range(1, 8)),      # 4 KiB .. 16 MiB
                    "full": tuple(2 ** i for i in range(10, 27)),           # 1 KiB .. 64 MiB
                    "smoke": (4096, 65536, 1 << 20)}

ELEMENTWISE_SIZES = {"quick": (1 << 18, 1 << 20, 1 << 22), "full": tuple(2 ** i for i in range(16, 25)),
                     "smoke": (1 << 18, 1 << 20)}

REPEATS = {"quick": 21, "full": 41, "smoke": 3}


def _linear(m: int, n: int, k: int) -> list[tuple]:
    """y = x W^T, x (m, k), W (n, k): forward "nt"; dgrad dY W (m x n)(n x k) "nn";
    wgrad dY^T X (n x m)(m x k) "tn". Each (m, n, k, batch, layout)."""
    return [(m, n, k, 1, "nt"), (m, k, n, 1, "nn"), (n, k, m, 1, "tn")]


def block_gemms(shape: LayerShape, tp: int) -> list[tuple]:
    """Every GEMM the real MLP and (unfused) attention blocks run on one rank, both passes."""
    t, h, d = shape.seq * shape.batch, shape.hidden, shape.head_dim
    f = shape.ffn // tp
    ins = 2 * f if shape.activation == "swiglu" else f
    hq, hkv = shape.heads // tp, shape.kv_heads // tp
    rows = (_linear(t, ins, h) + _linear(t, h, f) + _linear(t, (hq + 2 * hkv) * d, h)
            + _linear(t, h, hq * d))
    gs, s, bk = (hq // hkv) * shape.seq, shape.seq, shape.batch * hkv
    rows += [(gs, s, d, bk, "nt+bias"), (gs, d, s, bk, "nn"),       # Q K^T (+ mask), P V
             (gs, s, d, bk, "nt"), (s, d, gs, bk, "tn"),            # dP = dO V^T, dV = P^T dO
             (gs, d, s, bk, "nn"), (s, d, gs, bk, "tn")]            # dQ = dS K, dK = dS^T Q
    return rows


def fit_gemms(mode: str, tp: int) -> list[tuple]:
    """The fit's GEMMs: every GEMM of the FIT shapes plus a grid of square-ish ones."""
    grid = GEMM_GRID[mode]
    rows = [(m, n, k, 1, "nt") for m in grid for n in grid for k in grid]
    for shape in FIT[mode]:
        rows += block_gemms(shape, tp)
    return sorted(set(rows))
