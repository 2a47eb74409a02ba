"""Figures the topic docs' prose derives from their tables (which test_docs_tables.py holds),
recomputed: a ratio rounded as the sentence rounds it."""
from __future__ import annotations

import json
import warnings

import pytest

import tpsim
from tpsim.cli import main

from tests.conftest import REPO

SERVING = " ".join((REPO / "docs" / "serving.md").read_text().split())


@pytest.fixture(scope="module")
def llama2_70b():
    """`tpsim infer --model llama2-70b --topology dgx-h100 --tp T --batch B`, prompt 2k, gen 256."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # TP 2 batch 64 does not fit: priced, with a warning
        return {(tp, b): tpsim.infer("llama2-70b", "dgx-h100", tp=tp, batch=b, prompt=2048, gen=256)
                for tp in (2, 4, 8) for b in (1, 64)}


def _span(values, fmt: str) -> str:
    lo, hi = (fmt.format(v) for v in (min(values), max(values)))
    return lo if lo == hi else f"{lo}-{hi}"


def test_serving_batch_one_and_sixty_four(llama2_70b):
    tpot = {k: p.decode.time_per_token_s for k, p in llama2_70b.items()}
    tps = {k: p.decode.tokens_per_s for k, p in llama2_70b.items()}
    faster = tpot[2, 1] / tpot[8, 1]
    assert f"TP 8 is {faster:.1f}x faster per token than TP 2" in SERVING
    more = _span([tpot[t, 64] / tpot[t, 1] * 100 - 100 for t in (2, 4, 8)], "{:.0f}")
    grows = _span([tps[t, 64] / tps[t, 1] for t in (2, 4, 8)], "{:.0f}")
    assert (f"Batch 64 costs only {more}% more per step than batch 1** (the weights are read once "
            f"for the whole batch): tokens/s grows {grows}x for 64x the batch") in SERVING


def test_gpt3_without_the_grad_reduce_overlap():
    """training-step.md's worked example: what --no-overlap-grad-reduce does to the best layout."""
    text = " ".join((REPO / "docs" / "training-step.md").read_text().split())
    kw = dict(model="gpt3", topology="dgx-a100-hdr-cluster", nodes=128, tp=8, pp=8, dp=16,
              global_batch=1536, virtual_stages=3, sequence_parallel=True, recompute="selective",
              distributed_optimizer=True)
    on, off = tpsim.predict(**kw).step, tpsim.predict(**kw, overlap_grad_reduce=False).step
    assert (f"`--no-overlap-grad-reduce` grows exposed DP from {on.dp_comm_exposed_s * 1e3:.0f} to "
            f"{off.dp_comm_exposed_s * 1e3:.0f} ms and the step to {off.time_s:.3f} s") in text


def test_the_pipeline_figures_bubble():
    """training-step.md's reading of img/pipeline-gpt3-pp4.png (test_docs_figures.py draws it)."""
    text = " ".join((REPO / "docs" / "training-step.md").read_text().split())
    s = tpsim.predict(model="gpt3", topology="dgx-h100-ndr-cluster", tp=8, pp=4, dp=4, global_batch=32, virtual_stages=2,
                      sequence_parallel=True, distributed_optimizer=True).step
    assert (f"with 8 micro-batches on 4 stages, {s.bubble_s * 1e3:.0f} ms of a {s.time_s:.3f} s step "
            f"({s.bubble_s / s.time_s:.1%})") in text


def test_search_md_megatron_core_under_the_2021_pins(capsys):
    text = " ".join((REPO / "docs" / "search.md").read_text().split())
    assert main(["search", "--model", "gpt3-13b", "--topology", "dgx-a100-hdr-cluster", "--gpus",
                 "32", "--global-batch", "128", "--top", "1", "--zero", "0",
                 "--no-distributed-optimizer", "--no-tp-comm-overlap", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["candidates"][0]
    assert (best["tp"], best["pp"], best["virtual_stages"], best["dp"]) == (2, 2, 5, 8)
    assert f"TP 2, PP 2 with 5 chunks, DP 8, {best['step_time_s']:.3f} s)." in text
