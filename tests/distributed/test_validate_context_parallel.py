"""validate/context_parallel.py under torchrun on 2 gloo ranks (tiny shapes): the ring agrees
with one rank, its K/V transfers are timed and priced."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tests.conftest import REPO
from tests.dist_helpers import free_port


def test_context_parallel_validation_runs(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "cp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(REPO / "validate" / "context_parallel.py"),
           "--seq", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--rounds", "1",
           "--topology", "dgx-h100", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["max_abs_error"] < 1e-4
    assert got["transfers"] == 2                       # one forward, one backward (2 ranks)
    assert got["transfer_bytes"] == 2 * 2 * 32 * 8 * 4  # K and V: kv_heads x s/2 x d fp32
    assert got["forward_s"] > 0 and got["forward_backward_s"] > 0 and got["transfer_s"] > 0
    assert got["predicted_transfer_s"] > 0
