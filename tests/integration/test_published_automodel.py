"""NeMo AutoModel's published H100 BF16 pre-training rows (bench/automodel_published.py,
tests/data/published_steps/h100_bf16_automodel.csv), used in no fit: the rows are copied
consistently, the 1,024-GPU DeepSeek-V3 step is four pipelines and one optimizer step, and
each priced row stays where docs/checks.md puts it (tokens/s, + is tpsim fast): Llama 3.1 70B
within 5%, Qwen3-30B-A3B within 10%, the DeepSeek-V3 rows the known gap (tpsim fast by
10-30%, its reading in docs/checks.md), the same at both scales."""
from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import automodel_published as am  # noqa: E402

BOUNDS = {"Llama3 70B, 64 H100": (-0.05, 0.05), "Qwen3 MoE 30B, 8 H100": (-0.10, 0.10),
          "DeepSeek V3 671B, 256 H100": (0.10, 0.30),
          "DeepSeek V3 671B, 1024 H100": (0.10, 0.30)}


def test_published_rows_are_self_consistent():
    """Each row: tokens/s per GPU = GBS x seq / step / GPUs, and GBS = local batch x GA x DP
    (DP = GPUs / (TP PP CP)), as the summary's columns define them."""
    for r in am.published():
        gpus, gbs, seq = int(r["gpus"]), int(r["global_batch"]), int(r["seq"])
        tps = gbs * seq / float(r["step_s"]) / gpus
        assert tps == pytest.approx(float(r["tokens_per_s_gpu"]), rel=0.01), r["model"]
        dp = gpus // (int(r["tp"]) * int(r["pp"]) * int(r["cp"]))
        assert gbs == int(r["local_batch"]) * int(r["grad_accum"]) * dp, r["model"]


def test_priced_rows_within_their_bounds():
    rows = am.rows()
    assert {row[0] for row in rows} == set(BOUNDS)
    for name, _, _, _, _, err, _, _, _ in rows:
        lo, hi = BOUNDS[name]
        assert lo <= err <= hi, (name, err)


def test_the_1024_gpu_step_is_four_pipelines_and_one_optimizer_step():
    row = next(r for r in am.published() if r["gpus"] == "1024")
    step, p = am.predicted(row)
    assert step == pytest.approx(4 * p.step.time_s - 3 * p.step.optimizer_s, rel=1e-12)
    assert p.step.global_batch * 4 == int(row["global_batch"])
