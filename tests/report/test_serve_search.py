"""serve-search's text: each reason a configuration was dropped for is explained under the
table, where the header only counts them."""
from __future__ import annotations

from tpsim.report.serve_search import serve_search_report
from tpsim.serving.serve_search import REASONS, serve_search
from tpsim.spec.serve import ServeSettings
from tpsim.spec.serving import ServingLayout


def test_every_dropped_reason_is_explained():
    r = serve_search("llama3-8b", "dgx-h100", gpus=2, ttft_p99_s=1e-3, tpot_p99_s=1.0,
                     layout=ServingLayout(prompt=512, gen=64),
                     settings=ServeSettings(requests=40), max_num_seqs=(64,))
    text = serve_search_report(r)
    assert r.dropped and "(no layout meets the targets)" in text
    for why, n in r.dropped.items():
        assert f"{why} {n}" in text and f"(dropped, {why}: {REASONS[why]})" in text
    assert text.count("(dropped, ") == len(r.dropped)


def test_rows_that_stand_for_several_deployments_are_counted_as_rows():
    """Two max_num_seqs values whose runs agree share one row: the header says 2 deployments
    shown in 1 row, and the footnote says why."""
    r = serve_search("llama3-8b", "dgx-h100", gpus=1, ttft_p99_s=1.0, tpot_p99_s=0.1,
                     layout=ServingLayout(prompt=512, gen=64),
                     settings=ServeSettings(requests=20), max_num_seqs=(64, 256))
    text = serve_search_report(r)
    assert [c.max_num_seqs_alike for c in r.candidates] == [(64, 256)]
    assert "2 deployments: 2 shown in 1 row\n" in text and "(seqs64,256: one row" in text
