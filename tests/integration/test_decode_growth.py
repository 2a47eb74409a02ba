"""bench/decode_growth.py: the candidates for the decode step's growth per sequence in the
SGLang v0.3.0 / vLLM v0.6.0 runs (docs/serving.md, "What grows per sequence"), each priced at
tpsim's rates, and the negative result the doc states from them."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import decode_growth as dg  # noqa: E402
import serve_rate_published as srp  # noqa: E402


def test_sampler_passes_are_their_bytes_at_the_elementwise_rate():
    """vLLM's low bound on A100: 36 bytes x 128,256 at 0.8 x 2,039 GB/s, 2.83 us."""
    lo, hi = dg.sampler_us("vLLM", "llama3-8b")
    assert lo == pytest.approx(36 * 128256 / (0.8 * 2039e9) * 1e6, rel=1e-6)
    assert lo < hi


def test_gemm_growth_is_vidurs_slope_over_tpsims():
    """A100 8B: vidur's GEMMs grow ~0.5 us a row a layer over 8-64 rows, tpsim's ~0.06;
    H100 70B at TP 4: flat in both (within 0.1 us a row a layer)."""
    vidur, own = dg.gemm_us("llama3-8b")
    assert 10 < vidur - own < 25 and 0 < own < 3
    vidur, own = dg.gemm_us("llama3-70b")
    assert abs(vidur) < 8 and abs(own) < 8


def test_the_candidates_fall_short_of_the_missing_growth():
    """What tpsim leaves out (sampler's high bound + the GEMMs' growth) covers under a
    fifth of the measured growth less tpsim's, per engine and model (the doc's negative
    result)."""
    grow = srp.growth(srp.batch_points())
    assert len(grow) == 4
    for (engine, model), (meas, got) in grow.items():
        missing_us = (meas - got) * 1e3
        covered = dg.sampler_us(engine, model)[1] + max(0.0, dg.gemm_us(model)[0] -
                                                        dg.gemm_us(model)[1])
        assert missing_us > 50 and covered < 0.2 * missing_us
