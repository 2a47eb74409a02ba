"""Megatron-LM's own published step times of a dense 7B GPT in bf16 on 8 H100 and 8 A100 (its
functional tests' golden values, bench/megatron_ci_published.py gives the source and every
flag). Used in no fit: tpsim is fast by 18-25% on all four runs, in deterministic mode, which
tpsim does not price (bench docstring), so each row is held between -28% and -15%: a change
that closes the gap, or widens it, is news to be read against these rows. The published peak
memory (torch's max allocated) is held within 10%.
"""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import megatron_ci_published as mci  # noqa: E402

ROWS = mci.rows()


@pytest.mark.parametrize("r", ROWS, ids=mci.label)
def test_megatron_ci_step_and_peak_memory(r):
    p = mci.run(r)
    assert p.memory.fits
    assert -0.28 <= mci.error(r, p) <= -0.15
    peak = float(r["mem_max_allocated_bytes"])
    assert abs(p.memory.total_bytes / peak - 1) <= 0.10

