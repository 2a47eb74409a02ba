"""What a `tpsim serve` process spends its start on: the latency percentiles are numpy's linear
ones bit for bit without numpy.ma (np.percentile's np.unique imports it), and the serve path
imports neither torch, matplotlib, numpy.ma nor fractions (a plain token count)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tpsim.serving.serve_result import Percentiles

from tests.conftest import REPO


def test_percentiles_are_numpys_bit_for_bit():
    rng = np.random.default_rng(0)
    for n in (*range(1, 40), 99, 100, 101, 4999, 5000):
        for scale in (1e-3, 1.0, 1e3):
            v = rng.exponential(scale, n)
            for w in (v, np.round(v, 2), np.full(n, 0.25)):
                p = Percentiles.of(w)
                want = np.percentile(w, (50, 90, 99))
                assert [p.p50, p.p90, p.p99] == want.tolist(), n
    v = rng.random(50)
    v[7] = np.nan
    p = Percentiles.of(v)
    assert np.isnan([p.p50, p.p90, p.p99]).all() and np.isnan(np.percentile(v, 50))


def test_no_torch_matplotlib_numpy_ma_or_fractions_on_the_serve_path():
    code = ("import sys; from tpsim.cli import main; main('serve --model llama3-8b --tp 1 "
            "--requests 20 --rate 20 --prompt 1024 --gen 16 --json'.split()); print(sorted(m "
            "for m in ('torch', 'matplotlib', 'numpy.ma', 'fractions') if m in sys.modules), "
            "file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(r.stdout)["scheduler"]["step_prices"] > 2
