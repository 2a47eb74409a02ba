"""A decode layer's GEMMs (m = the step's sequences) against microsoft/vidur's profiled
times (tests/data/published_compute/decode_gemm_vidur.csv, 1-64 rows, and
decode_gemm_vidur_batch.csv, 128-1,024 rows; the README there gives the source), used in no
fit: Llama 3 8B on one A100 and Llama 2 70B at TP 4 on H100. tpsim's four GEMMs of a row:
``decode_layer_us`` of bench/compute_published.py, which prints the batch rows."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from compute_published import DECODE_OPS, decode_layer_us, rows  # noqa: E402


@pytest.mark.parametrize("r", rows("decode_gemm_vidur.csv"),
                         ids=lambda r: f"{r['model']}-m{r['rows']}")
def test_layer_gemms_within_12_percent(r):
    """The four GEMMs' sum within 12% at every row count 1-64 (A100 8B: +2.7% at 1 row to
    -11% at 64; H100 70B TP 4: +0.4% to +8%); each GEMM within 15%."""
    got, meas = decode_layer_us(r), [float(r[o]) for o in DECODE_OPS]
    assert sum(got) == pytest.approx(sum(meas), rel=0.12)
    for g, m in zip(got, meas):
        assert g == pytest.approx(m, rel=0.15)


BATCH = rows("decode_gemm_vidur_batch.csv")


@pytest.mark.parametrize("r", BATCH, ids=lambda r: f"m{r['rows']}")
def test_batch_layer_gemms_within_15_percent(r):
    """At 128-1,024 rows (H100, 70B, TP 4) the four GEMMs' sum within 15% (+9.5% at 320 rows
    to -12.6% at 192). Each GEMM alone is not held: vidur's medians jump between neighbouring
    row counts (the MLP output GEMM: 135.5 us at 576 rows, 207 at 640, 134.5 at 704) and the
    QKV GEMM (n 2,560, k 8,192) runs 11-38% faster in tpsim (docs/serving.md, known gaps)."""
    got, meas = decode_layer_us(r), [float(r[o]) for o in DECODE_OPS]
    assert sum(got) == pytest.approx(sum(meas), rel=0.15)


@pytest.mark.parametrize("r", [r for r in BATCH if 320 <= int(r["rows"]) <= 512],
                         ids=lambda r: f"m{r['rows']}")
def test_mlp_output_gemm_unsplit_at_a_large_batch(r):
    """The MLP output GEMM (n 8,192, k 7,168) at 320-512 rows: 96-128 tiles of 128 x 256 on
    132 SMs, at least half a wave, so it runs data-parallel, unsplit (CUTLASS's stream-K
    heuristic, :func:`tpsim.cost.stream_k.stream_k_share`): within 10% of vidur (-3.3% to
    +8.8%), where a fractional split over the idle SMs priced it 6-22% fast."""
    got = decode_layer_us(r)[DECODE_OPS.index("mlp_out_us")]
    assert got == pytest.approx(float(r["mlp_out_us"]), rel=0.10)
