"""The issue's two commands on the GB200 NVL72 preset: a 64-GPU Llama 3 70B layout stays on
NVLink (TP inside the rack's domain, no tp_spans_nodes notice), and a 72-rank all-reduce runs
NVLS inside the domain."""
from __future__ import annotations

import json

from tpsim.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_llama3_70b_on_gb200_nvl72_keeps_tp_on_nvlink(capsys):
    args = ("predict", "--model", "llama3-70b", "--topology", "gb200-nvl72", "--tp", "8",
            "--pp", "4", "--dp", "2", "--global-batch", "64", "--sequence-parallel",
            "--distributed-optimizer")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "TP inside one node" in out and "FITS" in out
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert json.loads(out)["notices"] == []          # no tp_spans_nodes: the node is the rack


def test_72_rank_all_reduce_uses_nvls_inside_the_domain(capsys):
    code, out, err = run(capsys, "collective", "--topology", "gb200-nvl72", "--ranks", "72")
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if not ln.startswith("#") and "MiB" in ln]
    assert rows and all("nvls/simple" in ln for ln in rows)
    code, out, err = run(capsys, "collective", "--topology", "gb200-nvl72", "--ranks", "144")
    assert code == 0, err                # two racks: NVLS inside each, a tree across the NICs
    rows = [ln for ln in out.splitlines() if not ln.startswith("#") and "MiB" in ln]
    assert rows and all("nvls_tree/simple" in ln for ln in rows)
