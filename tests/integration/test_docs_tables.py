"""The numbers in the tables of docs/training-step.md, docs/search.md and docs/serving.md are
what tpsim.predict and tpsim.infer give today, cell by cell, as rounded in the table (the
console blocks are checked by test_docs_commands.py; these tables are built from the API).
Each table is found by its header line; its rows are the layouts below, in order. The table of
the functions that price ops lists exactly those the ops name."""
from __future__ import annotations

import importlib
import re

import pytest

import tpsim

from tests.conftest import REPO

GPT3 = dict(model="gpt3", topology="dgx-a100-hdr-cluster", global_batch=1536)
SEL = dict(sequence_parallel=True, recompute="selective")
LLAMA = dict(model="llama3-70b", topology="dgx-h100-ndr-cluster", global_batch=128,
             sequence_parallel=True, distributed_optimizer=True)
TPO = dict(tp_comm_overlap=True)
SEARCH_BEST = dict(tp=8, pp=4, dp=16, micro_batch=2, virtual_stages=8, sequence_parallel=True,
                   distributed_optimizer=True)


def _gpt3_1024(**kw):
    return {**GPT3, "nodes": 128, "tp": 8, "pp": 8, "dp": 16, **kw}


def _gpt3_512(**kw):
    return {**GPT3, "tp": 8, "pp": 8, "dp": 8, **kw}


def _llama(tp, pp, dp, **kw):
    return {**LLAMA, "tp": tp, "pp": pp, "dp": dp, **kw}


def _step(p):
    s, m = p.step, p.memory
    gpus = p.inputs.gpus
    peak = s.tflops_per_gpu / s.mfu
    return {"step": f"{s.time_s:.2f} s", "tok/gpu": f"{s.tokens_per_s / gpus:,.0f}",
            "tflops": f"{s.tflops_per_gpu:.1f}", "tflops0": f"{s.tflops_per_gpu:.0f}",
            "hw": f"{s.hfu * peak:.0f}", "mfu": f"{s.mfu:.1%}",
            "bubble": f"{s.bubble_s / s.time_s:.1%}".replace("0.0%", "0%"),
            "mem": f"{m.total_bytes / 2**30:.1f} GiB", "fits": "yes" if m.fits else "no"}


TABLES = [
    ("training-step.md", "| layout (flags besides `--tp --pp --dp --global-batch 1536`) |",
     ("step", "tok/gpu", "tflops", "mfu", "bubble", "mem"),
     [_gpt3_1024(recompute="full"), _gpt3_1024(**SEL),
      _gpt3_1024(pp=16, dp=8, distributed_optimizer=True, **SEL),
      _gpt3_1024(virtual_stages=3, distributed_optimizer=True, **SEL),
      _gpt3_1024(tp=4, pp=16, recompute="full")]),
    ("training-step.md", "| layout | step | tokens/s per GPU | MFU | bubble | memory | fits |",
     ("step", "tok/gpu", "mfu", "bubble", "mem", "fits"),
     [_llama(8, 1, 8, recompute="full"), _llama(8, 2, 4, virtual_stages=5),
      _llama(8, 4, 2, virtual_stages=5), _llama(4, 8, 2), _llama(4, 4, 4, virtual_stages=5),
      _llama(4, 4, 4, recompute="full"), _llama(4, 8, 2, **TPO),
      _llama(8, 2, 4, virtual_stages=5, **TPO)]),
    ("search.md", "| layout on 512 A100s, global batch 1536 |",
     ("step", "tflops0", "hw", "mfu", "bubble", "mem"),
     [_gpt3_512(recompute="full"), _gpt3_512(recompute="full", virtual_stages=3),
      _gpt3_512(virtual_stages=3, **SEL),
      _gpt3_512(virtual_stages=3, distributed_optimizer=True, **SEL, **TPO),
      {**GPT3, **SEARCH_BEST, **TPO}, {**GPT3, **SEARCH_BEST}]),
]


def _rows(doc: str, header: str) -> list[list[str]]:
    """The cells (bold marks dropped) of each row of the table under ``header``."""
    text = (REPO / "docs" / doc).read_text()
    body = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [[c.strip().strip("*") for c in ln.strip().strip("|").split("|")] for ln in body]


@pytest.mark.parametrize("doc, header, columns, runs", TABLES,
                         ids=[f"{t[0]}: {t[1][:40]}" for t in TABLES])
def test_step_tables_are_what_predict_says(doc, header, columns, runs):
    rows = _rows(doc, header)
    assert len(rows) == len(runs)
    for cells, kw in zip(rows, runs):
        got = _step(tpsim.predict(**kw))
        assert cells[1:] == [got[c] for c in columns], kw


def test_serving_table_is_what_infer_says():
    rows = _rows("serving.md", "| TP | batch | TTFT (`prefill.time_s`) |")
    assert len(rows) == 6
    for tp, batch, *cells in rows:
        p = tpsim.infer("llama2-70b", "dgx-h100", tp=int(tp), batch=int(batch), prompt=2048,
                        gen=256)
        m, d = p.memory, p.decode
        want = [f"{p.prefill.time_s * 1e3:,.0f} ms", f"{d.time_per_token_s * 1e3:.1f} ms",
                f"{d.tokens_per_s:,.0f}", d.cost.bound, f"{m.total_bytes / 2**30:.1f} GiB",
                f"{'yes' if m.fits else 'no'} ({m.max_batch})"]
        assert cells == want, (tp, batch)


def test_tables_are_found():
    """Not vacuous: each header is in its page once, with rows under it."""
    for doc, header, _, runs in TABLES:
        assert (REPO / "docs" / doc).read_text().count(header) == 1
        assert re.search(r"\d", " ".join(map(" ".join, _rows(doc, header))))


def test_op_pricing_table_lists_every_function_that_prices_an_op():
    """docs/training-step.md's "How each op is priced" table names exactly the functions whose
    names the ops' `formula` carries (read off the function objects), and each is a real
    function of that name."""
    from tpsim.base.formula import qualname
    from tpsim.sim.price import FORMULAS, GROUPED
    named = set(FORMULAS.values()) | {GROUPED}
    for path in (REPO / "tpsim").rglob("*.py"):   # CollectiveCost(..., qualname(ring_time))
        found = re.findall(r"qualname\((\w+_time)\)", path.read_text())
        if found:   # the name each function carries, defined there or imported
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            named |= {qualname(getattr(module, f)) for f in found}
    text = (REPO / "docs" / "training-step.md").read_text()
    section = text.split("## How each op is priced", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(tpsim\.[\w.]+)` \|", section, re.M))
    assert listed == named
    for name in listed:
        module, func = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), func))
