"""`tpsim search`, `tpsim plot search` and the comma lists of `tpsim predict` and
`tpsim collective`: the numbers printed are predict's and collective_time's, one row per
combination, one line and exit 2 for bad input."""
import csv
import json
import os
import shlex
import subprocess
import sys

import pytest
from tests.conftest import REPO

from tpsim.cli import main
from tpsim.cost.collectives import collective_time
from tpsim.training.predict import predict

SMALL = ["--model", "gpt3-125m", "--topology", "dgx-a100", "--gpus", "8", "--global-batch", "16"]
SEARCH8 = ["search", "--gpus", "8", "--global-batch", "8"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_search_json_candidates_are_predicts(capsys):
    """Each candidate's numbers are those of `tpsim predict --json` with its own settings;
    candidates come best first; evaluated and dropped add up with the fitting count."""
    code, out, err = run(capsys, "search", *SMALL, "--top", "3", "--json")
    assert code == 0 and err == ""        # no progress line when stderr is not a terminal
    res = json.loads(out)
    cands = res["candidates"]
    assert len(cands) == 3 and res["evaluated"] >= res["fitting"] > 0
    assert [c["step_time_s"] for c in cands] == sorted(c["step_time_s"] for c in cands)
    for c in cands:
        argv = shlex.split(c["predict"])[1:] + ["--json"]
        code, pout, _ = run(capsys, *argv)
        step = json.loads(pout)["step"]
        memory = json.loads(pout)["memory"]
        assert code == 0 and step["time_s"] == c["step_time_s"] and step["mfu"] == c["mfu"]
        assert memory["total_bytes"] == c["memory_bytes"] and c["fits"]
        for key in ("tp", "pp", "dp", "virtual_stages", "micro_batch", "sequence_parallel",
                    "recompute", "distributed_optimizer", "tp_comm_overlap"):
            assert key in c
        assert c["bound_s"] <= c["step_time_s"]
    assert set(res["dropped"]) == set(res["dropped_reasons"])


def test_search_text_and_jobs(capsys):
    """The table, what was dropped and the best's predict line; --jobs 2 finds the same."""
    code, out, _ = run(capsys, "search", *SMALL, "--top", "2")
    assert code == 0
    for text in ("fastest layouts of gpt3-125m on 8 GPUs", "priced", "re-priced", "dropped:",
                 "tpsim predict --model gpt3-125m", "  1  TP", "  2  TP"):
        assert text in out, text
    code, out2, _ = run(capsys, "search", *SMALL, "--top", "2", "--jobs", "2")
    assert code == 0
    rows = [ln for ln in out.splitlines() if ln.startswith(("   1", "   2"))]
    assert rows == [ln for ln in out2.splitlines() if ln.startswith(("   1", "   2"))]


@pytest.mark.parametrize("argv, match", [
    (["search", "--gpus", "0", "--global-batch", "8"], "--gpus"),
    (["search", "--global-batch", "8"], "--gpus"),
    (["search", "--gpus", "4096", "--global-batch", "8", "--topology", "dgx-a100"],
     "no network to size"),
    (["search", "--gpus", "8", "--global-batch", "8", "--dtype", "int4"], "invalid choice"),
    (["predict", "--tp", "1,,2"], "comma list"),
    (["predict", "--tp", "3,4", "--model", "gpt3-1.3b"], "in the combination"),
    (["predict", "--tp", "1,2", "--trace", "t.json"], "--trace"),
    (["predict", "--recompute", "none,some"], "invalid choice"),
    (["collective", "--ranks", "2,0"], "--ranks"),
    (SEARCH8 + ["--train-metrics", "-1"], "--train-metrics"),
    (SEARCH8 + ["--moe-imbalance", "0.5"], "--moe-imbalance: expected a finite number >= 1"),
    (SEARCH8 + ["--pipeline-layout", "Et|tL"], "--pipeline-layout: expected its default"),
    (SEARCH8 + ["--framework", "megatron-deepspeed", "--virtual-stages", "1,2"],
     "--virtual-stages: expected 1 with --framework megatron-deepspeed (got 2)"),
    (SEARCH8 + ["--framework", "megatron-lm-2021", "--tp-comm-overlap"],
     "--tp-comm-overlap: expected False with --framework megatron-lm-2021"),
    (SEARCH8 + ["--recompute-modules", "mlp", "--recompute", "full"],
     "--recompute: expected selective with --recompute-modules"),
])
def test_bad_input_is_one_line(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and match in err, err


def test_predict_comma_lists(capsys):
    """--tp 1,2 --micro-batch 1,2: four rows, each the prediction of its combination."""
    code, out, _ = run(capsys, "predict", "--model", "gpt3-350m", "--tp", "1,2",
                       "--micro-batch", "1,2", "--json")
    assert code == 0
    got = json.loads(out)
    assert [(g["inputs"]["tp"], g["inputs"]["micro_batch"]) for g in got] == \
        [(1, 1), (1, 2), (2, 1), (2, 2)]
    for g in got:
        p = predict("gpt3-350m", "dgx-h100", tp=g["inputs"]["tp"],
                    micro_batch=g["inputs"]["micro_batch"])
        assert g["step"]["time_s"] == p.step.time_s and g["layer"]["total_s"] == p.layer.total_s
    code, out, _ = run(capsys, "predict", "--model", "gpt3-350m", "--tp", "1,2",
                       "--topology", "dgx-a100,dgx-h100")
    lines = [ln for ln in out.splitlines() if not ln.startswith("formula ")]
    assert code == 0 and lines[0].split()[:2] == ["topology", "tp"] and len(lines) == 6
    assert lines[1].split()[:2] == ["dgx-a100", "1"] and lines[4].split()[:2] == ["dgx-h100", "2"]


def test_collective_comma_lists(capsys):
    code, out, _ = run(capsys, "collective", "--ranks", "2,4", "--topology", "dgx-a100,dgx-h100",
                       "--bytes", "1MiB", "--json")
    assert code == 0
    got = json.loads(out)
    assert [(g["topology"], g["ranks"]) for g in got] == \
        [("dgx-a100", 2), ("dgx-a100", 4), ("dgx-h100", 2), ("dgx-h100", 4)]
    for g in got:
        assert g["time_us"] == collective_time("all-reduce", 2**20, g["ranks"],
                                               g["topology"]).time_s * 1e6
    code, out, _ = run(capsys, "collective", "--op", "all-reduce,all-gather", "--ranks", "8")
    assert code == 0 and len(out.splitlines()) == 3 and "all-gather" in out
    code, out, _ = run(capsys, "collective", "--json")     # one combination: one object
    assert code == 0 and isinstance(json.loads(out), dict)


def test_plot_search_cells_are_the_fastest_fitting_layouts(tmp_path, capsys):
    """Each (TP, PP) cell's step time is predict's for its layout and no fitting layout of that
    cell (brute force over the enumerated ones) is faster."""
    from tpsim.search.driver import Space, _run, enumerate_layouts
    code, out, _ = run(capsys, "plot", "search", *SMALL, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 10_000
    with open(tmp_path / "s.csv") as f:
        lines = f.read().splitlines()
    assert not any(ln.startswith("#") for ln in lines)       # plain CSV
    rows = list(csv.DictReader(lines))
    run_ = _run("gpt3-125m", "dgx-a100", None, None, None, 16)
    layouts, _ = enumerate_layouts(run_.model, run_.topo, Space(8, 16), run_.seq_len)
    times = {}
    for lay in layouts:
        p = predict(run_.model, run_.topo, global_batch=16, **lay.predict_kwargs())
        if p.memory.fits:
            key = (lay.tp, lay.pp)
            times[key] = min(times.get(key, float("inf")), p.step.time_s)
    assert {(int(r["tp"]), int(r["pp"])) for r in rows if r["step_time_s"]} == set(times)
    for r in rows:
        if r["step_time_s"]:
            assert float(r["step_time_s"]) == times[int(r["tp"]), int(r["pp"])]


def test_plot_search_takes_the_searchs_fixed_settings(tmp_path, capsys):
    """`tpsim plot search --framework ...`: each cell's layout is priced under the stack's
    settings, as `tpsim search` prices it (its best cell is the search's best), and the
    stack's missing features pin it (no distributed optimizer, no ZeRO in Megatron-LM 2021)."""
    code, _, _ = run(capsys, "plot", "search", *SMALL, "--framework", "megatron-lm-2021",
                     "--out", tmp_path / "s.png")
    assert code == 0
    with open(tmp_path / "s.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step_time_s"]]
    assert rows and not any(" Z" in r["layout"] or " DO" in r["layout"] for r in rows)
    best = min(float(r["step_time_s"]) for r in rows)
    code, out, _ = run(capsys, "search", *SMALL, "--framework", "megatron-lm-2021", "--json",
                       "--top", "1")
    assert best == json.loads(out)["candidates"][0]["step_time_s"]
    code, out, _ = run(capsys, "search", *SMALL, "--json", "--top", "1")
    assert best != json.loads(out)["candidates"][0]["step_time_s"]


def test_progress_only_on_a_terminal():
    """The progress line is written (and cleared) on a terminal, never elsewhere."""
    import io
    from tpsim.cli.search import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress(stream)
        p("pricing layouts", 5, 10)
        p("re-pricing with the step simulation", 2, None)
        p.close()
    assert "pricing layouts: 5/10" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")
    assert pipe.getvalue() == ""


def test_the_printed_predict_line_reloads_a_model_given_as_a_file(tmp_path, capsys):
    """The search's `tpsim predict ...` line names the file the model came from, and runs."""
    import yaml as _yaml

    from tpsim.spec.model import shipped_models
    doc = _yaml.safe_load(shipped_models()["gpt3-350m"].read_text())
    doc["name"] = "my-model"
    path = tmp_path / "my model.yaml"
    path.write_text(_yaml.safe_dump(doc))
    assert main(["search", "--model", str(path), "--topology", "dgx-a100", "--gpus", "8",
                 "--global-batch", "8", "--top", "1"]) == 0
    line = next(ln.strip() for ln in capsys.readouterr().out.splitlines()
                if ln.strip().startswith("tpsim predict"))
    assert shlex.quote(str(path)) in line
    assert main(shlex.split(line)[1:]) == 0


@pytest.mark.parametrize("given, expect", [(None, "1"), ("3", "3")])
def test_the_command_runs_one_blas_thread_unless_told(given, expect):
    """`tpsim` sets numpy's BLAS threads to one before numpy loads (more only spin between a
    search's small products, doubling its CPU time) and keeps a count the environment gives."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = ("import os, sys; from tpsim.cli import main; loaded = 'numpy' in sys.modules; "
            "main(['search', '--model', 'gpt3-125m', '--topology', 'dgx-a100', '--gpus', '8', "
            "'--global-batch', '8', '--top', '1', '--json']); "
            "print(loaded, os.environ['OPENBLAS_NUM_THREADS'], file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0 and r.stderr.split() == ["False", expect], r.stderr


def test_search_pins_flags_from_the_layout(capsys):
    """--tp 2 --pp 1,2 --no-sequence-parallel --recompute none,full: every candidate holds the
    pinned values, the JSON says which, and the text names them in one line."""
    pins = ["--tp", "2", "--pp", "1,2", "--no-sequence-parallel", "--recompute", "none,full"]
    code, out, err = run(capsys, "search", *SMALL, "--top", "4", "--json", *pins)
    assert code == 0, err
    res = json.loads(out)
    assert res["pinned"]["tp"] == [2] and res["pinned"]["pp"] == [1, 2]
    assert res["pinned"]["sequence_parallel"] == [False] and res["pinned"]["dp"] is None
    for c in res["candidates"]:
        assert c["tp"] == 2 and c["pp"] in (1, 2) and not c["sequence_parallel"]
        assert c["recompute"] in ("none", "full")
    code, out, _ = run(capsys, "search", *SMALL, "--top", "1", *pins)
    assert "  pinned: " in out and "--no-sequence-parallel" in out and "--pp 1,2" in out
    code, out, err = run(capsys, "search", *SMALL, "--tp", "3")
    assert code == 2 and err.count("\n") == 1 and "--tp: expected a divisor of --gpus 8" in err
    code, out, err = run(capsys, "search", *SMALL, "--tp", "1", "--sequence-parallel")
    assert code == 2 and err.count("\n") == 1 and "sequence parallelism or TP overlap pinned" in err


def test_search_sizes_the_network_from_gpus(capsys):
    """--gpus above the topology's without --nodes: sized to ceil(gpus / 8) nodes, one line of
    the report and the JSON say so, and the best layout's predict line runs as is."""
    argv = ["search", "--model", "gpt3-125m", "--topology", "dgx-a100-hdr-cluster", "--gpus",
            "1032", "--global-batch", "1032", "--tp", "4", "--pp", "1", "--top", "1"]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["nodes"] == 129 and res["nodes_from_gpus"] is True
    assert "--nodes 129" in res["candidates"][0]["predict"]
    code, pout, err = run(capsys, *shlex.split(res["candidates"][0]["predict"])[1:])
    assert code == 0, err
    code, out, _ = run(capsys, *argv)
    assert sum("sized to 129 nodes of 8 GPUs for --gpus 1032" in ln
               for ln in out.splitlines()) == 1
    code, out, _ = run(capsys, "search", *SMALL[:4], "--gpus", "8", "--global-batch", "8", "--json")
    assert json.loads(out)["nodes"] is None and json.loads(out)["nodes_from_gpus"] is False


@pytest.mark.parametrize("topology, fix", [("dgx-a100-hdr-cluster", "pass --nodes 80"),
                                           ("dgx-a100", "no network to size")])
def test_too_large_a_layout_suggests_what_works(capsys, topology, fix):
    """predict's refusal suggests --nodes only where the topology's network can be sized,
    and the N it names runs."""
    argv = ["predict", "--model", "gpt3-125m", "--topology", topology, "--tp", "4", "--dp", "160"]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and fix in err, err
    if "--nodes" in fix:
        code, _, err = run(capsys, *argv, "--nodes", "80")
        assert code == 0, err


def test_search_candidates_carry_energy_and_cost(capsys):
    """energy_j is predict's step energy; cost_usd = gpus x step time / 3600 x the price."""
    code, out, _ = run(capsys, "search", *SMALL, "--top", "2", "--usd-per-gpu-hour", "2.5",
                       "--json")
    assert code == 0
    res = json.loads(out)
    for c in res["candidates"]:
        argv = shlex.split(c["predict"])[1:] + ["--json"]
        _, pout, _ = run(capsys, *argv)
        assert c["energy_j"] == json.loads(pout)["step"]["energy_j"] > 0
        assert c["cost_usd"] == pytest.approx(res["gpus"] * c["step_time_s"] / 3600 * 2.5,
                                              rel=1e-12)
    _, out, _ = run(capsys, "search", *SMALL, "--top", "1", "--json")
    assert json.loads(out)["candidates"][0]["cost_usd"] is None


def test_search_pins_take_megatron_names(capsys):
    """Megatron-LM's names pin the same fields (--tensor-model-parallel-size 4 is --tp 4):
    the same candidates, each at the pinned value."""
    _, ours, _ = run(capsys, "search", *SMALL, "--top", "3", "--json", "--tp", "4",
                     "--recompute", "none")
    code, theirs, err = run(capsys, "search", *SMALL, "--top", "3", "--json",
                            "--tensor-model-parallel-size", "4", "--recompute-granularity",
                            "none")
    ours, theirs = json.loads(ours), json.loads(theirs)
    assert code == 0 and err == "" and theirs["pinned"] == ours["pinned"]
    assert theirs["candidates"] == ours["candidates"]
    assert {c["tp"] for c in ours["candidates"]} == {4}


@pytest.mark.parametrize("typed, meant", [
    (["search", *SMALL, "--tensor-model-parallel-sz", "8"], "--tensor-model-parallel-size"),
    (["search", *SMALL, "--pipline-model-parallel-size", "2"], "--pipeline-model-parallel-size"),
    (["predict", "--tensor-model-paralel-size", "8"], "--tensor-model-parallel-size"),
    (["predict", "--micro-bach", "2"], "--micro-batch"),
    (["predict", "--gpus", "8"], "--tp, --pp and --dp (the GPUs are their product"),
    (["serve", "--world-size=4"], "--tp and --pp (the GPUs are their product"),
])
def test_misspelled_flag_suggests_the_closest(capsys, typed, meant):
    code, out, err = run(capsys, *typed)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "unrecognized arguments" in err and f"did you mean {meant}" in err


def test_search_prices_fixed_settings_as_predict(capsys):
    """--framework and the settings a search does not enumerate hold for every layout: the
    best candidate's step time is `tpsim predict`'s for its layout with the same flags
    (given here apart from the candidate's printed line), it differs from the search without
    them, and the JSON and the header echo them."""
    job = ["--model", "gpt3-125m", "--topology", "dgx-h100", "--gpus", "8", "--global-batch",
           "16", "--dtype", "fp8"]
    flags = ["--framework", "megatron-lm-2021", "--fp8-recipe", "tensorwise"]
    code, out, _ = run(capsys, "search", *job, *flags, "--top", "1", "--json")
    res = json.loads(out)
    best = res["candidates"][0]
    assert res["framework"] == "megatron-lm-2021"
    assert res["fixed"] == {"overlap_grad_reduce": False, "scatter_gather_p2p": True,
                            "async_tensor_model_parallel_allreduce": False,
                            "gradient_accumulation_fusion": False, "main_grad_add": False,
                            "query_key_layer_scaling": True, "fp8_recipe": "tensorwise"}
    argv = ["predict", *job[:4], "--dtype", "fp8", "--global-batch", "16", *flags, "--json"]
    for key in ("tp", "pp", "dp", "micro_batch", "virtual_stages"):
        argv += [f"--{key.replace('_', '-')}", best[key]]
    argv += ["--recompute", best["recompute"], "--zero", best["zero"]] + \
        ["--sequence-parallel"] * best["sequence_parallel"]
    code, pout, _ = run(capsys, *argv)
    step = json.loads(pout)["step"]["time_s"]
    assert code == 0 and abs(step - best["step_time_s"]) <= 1e-12 * step
    code, out, _ = run(capsys, "search", *job, "--top", "1", "--json")
    assert json.loads(out)["candidates"][0]["step_time_s"] != best["step_time_s"]
    code, out, _ = run(capsys, "search", *job, *flags, "--top", "1")
    assert "  fixed (every layout): --framework megatron-lm-2021 --no-overlap-grad-reduce" in out
    assert out.count("--fp8-recipe tensorwise") == 2      # the header and the predict line
