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


def test_mixtral_8x22b_rows_ran_at_65536_tokens():
    """The published FLOP per token (model TFLOP/s over tokens/s) is Megatron's count at the
    summary's sequence length, not at the recipe's data default of 4,096."""
    r = next(r for r in ROWS if r["model"] == "mixtral-8x22b" and r["tflops_per_gpu"])
    published = float(r["tflops_per_gpu"]) / float(r["tokens_per_s_per_gpu"])
    step = nmp.run(r).step
    per_token = step.megatron_tflops_per_gpu / (step.tokens_per_s / int(r["gpus"]))
    assert per_token == pytest.approx(published, rel=0.01)
