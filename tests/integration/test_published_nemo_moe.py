"""Mixtral's whole training step against NeMo 2.0's published Blackwell runs (NeMo 25.02 on
DGX-B200, 25.04 on DGX-GB200), with the same tables' dense Llama 3 8B rows for scale
(bench/nemo_moe_published.py gives the sources and each recipe's settings). Used in no fit:
tpsim is fast by 7-14% on the four Mixtral rows, 12% and 2% on the dense ones, so each row is
held within 15% (docs/checks.md), and the sign is held too: a change that made any row slow
would be news.
"""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import nemo_moe_published as nmp  # noqa: E402

ROWS = nmp.rows()


@pytest.mark.parametrize("r", ROWS, ids=nmp.label)
def test_mixtral_step_within_15_percent_of_nemo_summary(r):
    p = nmp.run(r)
    assert p.memory.fits
    assert 0.0 < nmp.error(r, p) <= 0.15

