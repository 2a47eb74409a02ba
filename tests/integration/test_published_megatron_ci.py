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



def test_unpriced_fill_is_the_te_outputs_of_the_layer():
    """The deterministic fill (bench/megatron_ci_unpriced.py) of the TP 4 run's layer and
    micro-batch, counted by hand: T = 2 x 8192 tokens, h 4096, per rank q 1024, kv 256, f 4096;
    the GEMMs' forward outputs, dgrads and 16-bit wgrads, attention's O and dQ dK dV, and the
    two LayerNorms' outputs and input gradients, 2 bytes each; one kernel each."""
    import megatron_ci_unpriced as mcu
    r = next(r for r in ROWS if r["tp"] == "4")
    T, h, q, kv, f = 16384, 4096, 1024, 256, 4096
    gemms = [T * (q + 2 * kv), T * h, T * f, T * h,            # forward: qkv, proj, fc1, fc2
             T * f, T * h, T * q, T * h,                        # dgrads: fc2, fc1, proj, qkv
             f * h, h * f, q * h, h * (q + 2 * kv)]             # wgrads
    hand = 2 * (sum(gemms) + T * q + T * (q + 2 * kv) + 4 * T * h)
    assert mcu.fill_bytes(mci.run(r)) == (hand, 12 + 2 + 4)


def test_the_grad_add_is_megatron_cores_fp32_add():
    """Megatron-core adds every micro-batch's bf16 wgrad into the fp32 main_grad (the runs'
    --no-gradient-accumulation-fusion): 2 + 4 + 4 = 10 bytes a weight of the layer's per-rank
    weights in the TP 4 run's layer."""
    r = next(r for r in ROWS if r["tp"] == "4")
    h, q, kv, f = 4096, 1024, 256, 4096
    weights = f * h + h * f + q * h + h * (q + 2 * kv)
    p = mci.run(r)
    adds = sum(op.nbytes for name, op in zip(p.run.template.names, p.run.ops)
               if name.endswith(".grad_accumulate"))
    assert adds == 10 * weights
