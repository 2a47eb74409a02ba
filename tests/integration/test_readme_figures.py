"""The figures the README's prose quotes (outside its console blocks, which test_docs_commands.py
runs) are what tpsim gives today: the DeepSeek-V3 answer and NVIDIA-like layout, priced through
the API, and the collective accuracy summary, against the tables of docs/collectives.md that
bench/collectives_published.py prints."""
from __future__ import annotations

import tpsim

from tests.conftest import REPO

README = " ".join((REPO / "README.md").read_text().split())
DSV3 = dict(model="deepseek-v3", topology="dgx-h100-ndr-cluster", nodes=128, global_batch=8192,
            micro_batch=1, expert_tp=1, sequence_parallel=True, distributed_optimizer=True,
            moe_dispatcher="flex")


def _figures(p) -> dict[str, str]:
    s, m = p.step, p.memory
    return {"step": f"{s.time_s:.1f} s", "mem": f"{m.total_bytes / 2**30:.1f} GiB",
            "usable": f"{(m.capacity_bytes - m.reserved_bytes) / 2**30:.1f} GiB",
            "exposed": f"{s.tp_comm_exposed_s / s.time_s:.0%}",
            "ep": f"{s.ep_comm_exposed_s / s.time_s:.0%}", "bubble": f"{s.bubble_s / s.time_s:.0%}",
            "tokens": f"{s.tokens_per_s / 1e6:.1f}M"}


def test_the_deepseek_v3_answer():
    f = _figures(tpsim.predict(**DSV3, tp=4, pp=4, dp=64, ep=32, first_stage_layers=17,
                               last_stage_layers=14))
    said = (f"**{f['step'].replace(' s', '')} s per step** of 8,192 x 4,096 tokens in bf16 "
            f"({f['tokens']} tokens/s), and it **fits, in {f['mem']}** of the {f['usable']} an H100 "
            f"leaves to tensors here. The price is communication: {f['exposed']} of the step is "
            f"exposed TP and expert traffic ({f['ep']} the experts' dispatch and combine)")
    assert said in README


def test_the_nvidia_like_deepseek_v3_layout():
    f = _figures(tpsim.predict(**DSV3, tp=2, pp=8, dp=64, ep=64, first_stage_layers=7,
                               last_stage_layers=6))
    assert "`--tp 2 --pp 8 --dp 64 --ep 64 --first-stage-layers 7 --last-stage-layers 6`" in README
    assert (f"prices at {f['step']} in {f['mem']} ({f['exposed']} exposed TP and expert "
            f"communication, a {f['bubble']} bubble") in README


def _medians(header: str, role: str) -> list[float]:
    """The median column of every row of docs/collectives.md's table under ``header`` whose
    curve's role is ``role``."""
    text = (REPO / "docs" / "collectives.md").read_text()
    rows = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    out, current = [], None
    for row in rows:
        cells = [c.strip().strip("*") for c in row.strip().strip("|").split("|")]
        current = cells[1] or current
        if current == role:
            out.append(float(cells[3].rstrip("%")))
    return out


def test_the_collective_accuracy_summary():
    one_node = _medians("| curve (8 GPUs unless said) |", "check")
    assert f"median {min(one_node):.1f}-{max(one_node):.1f}% per size band" in README
    below, above = _medians("| curve | role | band | median | max |", "check")
    assert f"on 8 B200 {above:.1f}% from 1 MiB, {below:.1f}% below" in README

