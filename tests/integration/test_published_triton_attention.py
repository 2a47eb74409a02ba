"""FlashAttention in Triton (llm-foundry's ``attn_impl: triton``) against its own published
A100 timings: xformers pull request #479, which wrapped the same ``flash_attn_triton.py`` as its
``tritonflashatt`` operator and timed the forward and the backward apart
(tests/data/published_compute/attention_triton_xformers.csv; the README there gives the source
and why the GPU is an A100). dgx-a100's ``triton`` kernel is fitted on these rows
(python bench/triton_attention_published.py): the test holds the fit's reproduction.

* every row within 2.5% (the fit: median 0.6%, max 2.2%), with and without the mask: the
  forward's and the backward's efficiencies and seq_half_efficiency on the rows without it,
  each pass's causal_efficiency and causal_block on its causal rows (one pair for both passes
  left the forward 2% to 9% slow and the backward 7% to 8% fast);
* the forward runs faster than the backward (the kernel's published property: 137-148 against
  82-87 TFLOP/s without the mask), which one efficiency for both passes missed by 34% and 12%.
"""
from __future__ import annotations

import sys

import pytest

from tpsim.cluster.topology import load_topology

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from triton_attention_published import rows, seconds  # noqa: E402

ROWS = rows()
A100 = load_topology("dgx-a100").device


def error(r: dict) -> float:
    """tpsim's rate over the published one, minus 1 (published time / tpsim's, dgx-a100)."""
    return float(r["time_us"]) * 1e-6 / seconds(r, A100) - 1


def test_rows_are_the_kernels_own_a100_timings():
    assert len(ROWS) == 21
    assert {r["device"] for r in ROWS} == {"A100"} and {r["head_dim"] for r in ROWS} == {"128"}
    assert {(r["causal"], r["pass"]) for r in ROWS} == {("0", "fwd"), ("0", "bwd"),
                                                        ("1", "fwd"), ("1", "bwd")}


@pytest.mark.parametrize("r", ROWS, ids=lambda r: "-".join(
    r[k] for k in ("dtype", "batch", "seq", "causal", "pass")))
def test_published_row_reproduced(r):
    assert abs(error(r)) < 0.025


def test_forward_outruns_backward():
    """Per FLOP in FlashAttention's convention (backward 2.5 forwards): the fitted efficiencies
    and the published rates agree on the order and on the ratio within 5%."""
    k = A100.attention_kernels["triton"]
    assert k.at(128) > k.at(128, backward=True) > 0
    rate = {}
    for r in ROWS:
        if r["causal"] == "0" and r["batch"] == "1" and r["seq"] == "4096" and r["dtype"] == "fp16":
            flops = 4.0 * 4096 ** 2 * 160 * 128 * (2.5 if r["pass"] == "bwd" else 1.0)
            rate[r["pass"]] = flops / float(r["time_us"])
    assert k.at(128) / k.at(128, backward=True) == pytest.approx(rate["fwd"] / rate["bwd"],
                                                                  rel=0.05)


def test_backward_loses_more_to_the_mask():
    """The published causal rates over the plain ones (b=1, fp16): forward 0.95 at 4k, 0.97 at
    8k; backward 0.81 and 0.87. The fitted kernel keeps that order at every length."""
    k = A100.attention_kernels["triton"]
    for s in (4096, 8192, 65536):
        kept = {b: k.causal(b)[0] / (1 + k.causal(b)[1] / s) for b in (False, True)}
        assert 0 < kept[True] < kept[False] <= 1

