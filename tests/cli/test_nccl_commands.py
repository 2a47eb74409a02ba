"""``--nccl`` on every command that prices collectives (tpsim.cluster.nccl.topology_of): NCCL
2.18's NVLS (23 us, a small message on one channel) moves a step whose all-reduces run on NVLS
(TP 8 on an H100 node); ``--nccl topology`` is the file's own values, the same JSON as no flag
but for nothing; the JSON says which release priced it; a bad release is one line naming
``--nccl``."""
from __future__ import annotations

import json

import pytest

import tpsim
from tpsim.base.errors import TpsimError
from tpsim.cli import main

from tests.integration.test_hardening import fails

# command -> arguments of a run whose TP all-reduces NCCL runs on NVLS (8 H100s, one node)
RUNS = {
    "predict": ["--model", "gpt3", "--tp", "8"],
    "infer": ["--model", "llama2-70b", "--tp", "8"],
    "serve": ["--model", "llama3-8b", "--tp", "8", "--requests", "20", "--rate", "4"],
    "search": ["--model", "gpt3-1.3b", "--gpus", "8", "--global-batch", "8", "--top", "2"],
    # 405B in fp8 fits 8 GPUs only as TP 8 (or TP 4 x PP 2): the best replica's all-reduces
    "serve-search": ["--model", "llama3-405b", "--dtype", "fp8", "--gpus", "8", "--ttft-p99",
                     "20", "--tpot-p99", "0.5", "--prompt", "512", "--gen", "64", "--requests",
                     "20", "--top", "2"],
}


def _json(capsys, command: str, *extra: str):
    assert main([command, *RUNS[command], "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _without(obj, key: str = "nccl"):
    """``obj`` less every ``key`` and every wall-clock timing (pricing_s)."""
    if isinstance(obj, dict):
        return {k: _without(v, key) for k, v in obj.items() if k not in (key, "pricing_s")}
    if isinstance(obj, list):
        return [_without(v, key) for v in obj]
    return obj


def _release(js) -> str:
    return js["inputs"]["nccl"] if "inputs" in js else js["nccl"]


@pytest.mark.parametrize("command", list(RUNS))
def test_topology_is_the_files_values_and_2_18_moves_the_nvls_step(capsys, command):
    plain = _json(capsys, command)
    same = _json(capsys, command, "--nccl", "topology")
    old = _json(capsys, command, "--nccl", "2.18")
    assert _without(same) == _without(plain)
    assert _release(plain) == _release(same) == "topology" and _release(old) == "2.18"
    assert _without(old) != _without(plain)


def test_predict_2_18_prices_the_layer_s_nvls_all_reduces_at_23_us(capsys):
    """TP 8 on one H100 node: the layer's all-reduces run on NVLS; 2.18 pays 23 us (not 25) of
    latency and lays a small message on one channel: the layer's time moves, the FLOPs not."""
    new, old = _json(capsys, "predict"), _json(capsys, "predict", "--nccl", "v2.18.5-1")
    assert old["layer"]["total_s"] != new["layer"]["total_s"]
    assert old["model"]["flops"] == new["model"]["flops"]


def test_a_comma_list_compares_releases(capsys):
    assert main(["predict", *RUNS["predict"], "--nccl", "topology,2.18", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["inputs"]["nccl"] for r in rows] == ["topology", "2.18"]
    assert main(["infer", *RUNS["infer"], "--nccl", "2.18,2.30"]) == 0
    head = capsys.readouterr().out.splitlines()[0].split()
    assert head[0] == "nccl"


@pytest.mark.parametrize("command", list(RUNS))
def test_a_bad_release_is_one_line_naming_the_flag(capsys, command):
    fails(capsys, command, *RUNS[command], "--nccl", "2.17", match="--nccl")


@pytest.mark.parametrize("command", ["search", "serve-search"])
def test_a_single_run_command_takes_one_release(capsys, command):
    fails(capsys, command, *RUNS[command], "--nccl", "2.18,2.25", match="--nccl")


def test_the_api_takes_the_same_keyword():
    base = tpsim.predict("gpt3", "dgx-h100", tp=8)
    same = tpsim.predict("gpt3", "dgx-h100", tp=8, nccl="topology")
    assert (same.layer, same.step.time_s) == (base.layer, base.step.time_s)
    old = tpsim.predict("gpt3", "dgx-h100", tp=8, nccl="2.18")
    assert old.inputs.nccl == "2.18" and old.layer.total_s != base.layer.total_s
    assert tpsim.infer("llama2-70b", tp=8, nccl="2.18").inputs.nccl == "2.18"
    for call in (lambda: tpsim.predict("gpt3", tp=8, nccl="2.17"),
                 lambda: tpsim.infer("llama2-70b", tp=8, nccl="9"),
                 lambda: tpsim.serve("llama3-8b", tp=8, requests=5, nccl="latest")):
        with pytest.raises(TpsimError, match="--nccl"):
            call()


def test_the_search_s_predict_line_names_the_release(capsys):
    js = _json(capsys, "search", "--nccl", "2.18")
    assert all(" --nccl 2.18" in c["predict"] for c in js["candidates"])
    assert all("--nccl" not in c["predict"] for c in _json(capsys, "search")["candidates"])


@pytest.mark.parametrize("figure", ["collective", "intra-vs-inter", "breakdown", "tp-vs-dp",
                                    "pipeline", "search", "infer"])
def test_every_figure_on_a_topology_takes_the_release(capsys, figure):
    """The flag is parsed before any figure is drawn (no matplotlib needed to refuse it)."""
    fails(capsys, "plot", figure, "--out", "x.png", "--gpus", "8", "--global-batch", "8",
          "--nccl", "2.17", match="--nccl") if figure == "search" else \
        fails(capsys, "plot", figure, "--out", "x.png", "--nccl", "2.17", match="--nccl")


def test_the_figures_load_their_topologies_as_the_release_runs_them():
    from tpsim.cluster.nccl import with_nccl
    from tpsim.cluster.topology import load_topology
    from tpsim.figures.data import load_topologies
    plain, old = load_topologies(["dgx-h100"]), load_topologies(["dgx-h100"], "2.18")
    assert plain == [load_topology("dgx-h100")]
    assert old == [with_nccl(load_topology("dgx-h100"), "2.18")] and old != plain


def test_collective_time_takes_the_keyword_too():
    """tpsim.collective_time(..., nccl=...): the topology as the release runs it, as --nccl."""
    from tpsim.cluster.nccl import with_nccl
    from tpsim.cluster.topology import load_topology
    args = ("all-reduce", 4 * 2**20, 8)        # NVLS under auto on 8 H100s
    old = tpsim.collective_time(*args, "dgx-h100", nccl="2.18")
    assert old == tpsim.collective_time(*args, with_nccl(load_topology("dgx-h100"), "2.18"))
    assert tpsim.collective_time(*args, "dgx-h100", nccl="topology") == \
        tpsim.collective_time(*args, "dgx-h100")
    assert old.time_s != tpsim.collective_time(*args, "dgx-h100").time_s


@pytest.mark.parametrize("release", ["2.18.abc", "2.18-rc", "2.18.5.1", "2.18."])
def test_a_release_with_a_bad_tail_is_refused_not_read_as_its_minor(release, capsys):
    """--nccl 2.18.abc priced as 2.18 without a word: only a release, a patch and a build
    number (2.18, 2.18.5, v2.18.5-1) read as one."""
    fails(capsys, "collective", "--bytes", "1MiB", "--nccl", release, match="--nccl")
    with pytest.raises(TpsimError, match="^--nccl: expected an NCCL release tpsim knows"):
        tpsim.collective_time("all-reduce", 2**20, 8, "dgx-h100", nccl=release)
    assert main(["collective", "--bytes", "1MiB", "--nccl", "v2.18.5-1"]) == 0
