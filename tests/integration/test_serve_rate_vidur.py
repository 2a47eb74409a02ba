"""bench/serve_rate_vidur.py: Vidur's column of bench/serve_rate_published.py, without Vidur.

The trace Vidur replays holds tpsim's run's own requests; its request metrics read back as the
source defines TPOT; a checkout without a profile is refused by name, and the bench runs
without Vidur, saying why its column is empty.
"""
from __future__ import annotations

import csv
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tpsim.serving.arrivals import draw_requests

sys.path.insert(0, str(REPO / "bench"))
import serve_rate_published as srp  # noqa: E402
import serve_rate_vidur as srv  # noqa: E402


@pytest.mark.parametrize("rate", [4.0, float("inf")])
def test_trace_is_tpsims_draw(tmp_path, rate):
    path = tmp_path / "trace.csv"
    srv.write_trace(path, 50, rate, 3, 226, 194)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    want = draw_requests(50, rate, 3, 226, 194, "exponential", "exponential")
    assert [int(r["num_prefill_tokens"]) for r in rows] == want.prompt.tolist()
    assert [int(r["num_decode_tokens"]) for r in rows] == want.gen.tolist()
    np.testing.assert_allclose([float(r["arrived_at"]) for r in rows], want.arrival_s,
                               atol=1e-9)


def test_medians_read_tpot_as_the_source_defines_it(tmp_path):
    """TPOT = (e2e - TTFT) / (output - 1) per request; a one-token request has none."""
    path = tmp_path / "request_metrics.csv"
    rows = [(0, 1.0, 0.1, 10), (1, 2.0, 0.2, 19), (2, 0.5, 0.5, 1)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Request Id", "request_e2e_time", "prefill_e2e_time",
                    "request_num_decode_tokens"])
        w.writerows(rows)
    got = srv.medians(path)
    assert got["ttft_s"] == pytest.approx(0.2) and got["e2e_s"] == pytest.approx(1.0)
    assert got["tpot_s"] == pytest.approx((0.9 / 9 + 1.8 / 18) / 2)
    assert got["output_tokens_per_s"] == pytest.approx(30 / 2.0)


def test_missing_profile_is_named(tmp_path):
    got = srv.run_vidur(sys.executable, str(tmp_path), ("llama3-70b", "dgx-h100", 4), 4.0,
                        10, 0, 226, 194)
    assert "h100/meta-llama/Llama-2-70b-hf/attention.csv" in got["error"]
    assert "network/h100_dgx/all_reduce.csv" in got["error"]


def test_bench_runs_without_vidur_and_says_why():
    cells, why = srp.vidur_cells(None, None, [])
    assert cells == {} and "--vidur-python" in why
    assert set(srv.MODELS) == {srp.case(r)[:3] for r in srp.published()}


def test_cases_refused_alike_share_one_reason(tmp_path):
    cases = [dict(id=f"8B {r:g}", key=("llama3-8b", "dgx-a100", 1), rate=r, requests=5,
                  seed=0, prompt=226, gen=194) for r in (4.0, 8.0)]
    got, why = srv.vidur_values(sys.executable, str(tmp_path), cases)
    assert got == {} and why.count("attention.csv") == 1 and "8B 4, 8B 8 not run" in why
