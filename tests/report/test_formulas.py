"""One hop from every number to its formula: each section of ``tpsim predict``, ``infer`` and
``search`` names the function that computed it (``formula``), and the name is true.

For several outputs: every ``formula`` value (a name, or a mapping key -> name) resolves to a
callable; every aggregate section has one; a mapping covers every number its section computes
(not the settings it echoes) and names only keys the section has; the text names the same
functions, and docs/json.md lists them. And the names are not only real but right: run in a
fresh process (no memo warm) under a profiler, every function a formula names is called while
that output is computed.
"""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from tpsim.base.formula import qualname, resolve
from tpsim.cli import main
from tpsim.report.render import COLUMN_FORMULAS

from tests.conftest import REPO

RUNS = {
    "predict-pipeline": "predict --model gpt3-13b --topology dgx-a100-hdr-cluster --tp 8 --pp 4 "
                        "--dp 2 --global-batch 32 --virtual-stages 2 --sequence-parallel "
                        "--tp-comm-overlap --distributed-optimizer --ops",
    "predict-list": "predict --model gpt3-350m --topology dgx-a100 --tp 1,2 --seq 1024",
    "infer-pp-fp8": "infer --model llama3-70b --tp 4 --pp 2 --batch 32 --prompt 1024 --gen 128 "
                    "--dtype fp8 --kv-dtype fp8",
    "infer-custom-eager": "infer --model llama3-8b --tp 2 --batch 1 --prompt 512 --gen 64 "
                          "--allreduce custom --eager",
    "search": "search --model gpt3-1.3b --topology dgx-a100 --gpus 8 --global-batch 8 --top 3",
}
# the sections that must carry a formula ("x[]": every object of list x), per command
SECTIONS = {
    "predict": ("layer", "model", "memory", "step", "step.stages[]", "stage_memory[]",
                "collectives[]", "ops[]"),
    "infer": ("prefill", "decode", "total", "memory", "decode_ops[]", "prefill_ops[]",
              "collectives.decode[]", "collectives.prefill[]"),
    "search": ("", "candidates[]"),
}
ROWS = ("ops[]", "decode_ops[]", "prefill_ops[]", "collectives")   # priced per op, not aggregates
# numbers a section echoes from its settings, the model or the device rather than computes
ECHOED = {"layers", "capacity_bytes", "stage", "optimizer_shards", "micro_batches",
          "global_batch", "pp", "dp", "tp", "cp", "virtual_stages", "micro_batch", "steps",
          "hbm_peak_Bps", "first_stage_layers", "last_stage_layers", "zero", "ep", "expert_tp",
          "expert_dp", "ep_nodes"}


def _stdout(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def outputs():
    """name -> (the --json object(s) as a list, the text), computed once for the module."""
    out = {}
    for name, cmd in RUNS.items():
        data = json.loads(_stdout(cmd.split() + ["--json"]))
        out[name] = (data if isinstance(data, list) else [data], _stdout(cmd.split()))
    return out


def _at(obj, path: str) -> list:
    """The objects at ``path`` (dots between keys, ``x[]`` for each object of list x)."""
    found = [obj]
    for part in filter(None, path.split(".")):
        key, each = part.removesuffix("[]"), part.endswith("[]")
        found = [x[key] for x in found]
        if each:
            found = [y for x in found for y in x]
    return found


def formulas(obj, path: str = "$"):
    """(path, name) of every formula name in ``obj``, mappings flattened."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "formula":
                items = v.items() if isinstance(v, dict) else [("", v)]
                yield from ((f"{path}.formula{'.' + f if f else ''}", n) for f, n in items)
            else:
                yield from formulas(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, x in enumerate(obj):
            yield from formulas(x, f"{path}[{i}]")


def aggregate_names(objs: list, command: str) -> set[str]:
    """The function names of the aggregate sections (not the per-op rows)."""
    return {n for obj in objs for s in SECTIONS[command] if not s.startswith(ROWS)
            for sec in _at(obj, s) for _, n in formulas({"formula": sec["formula"]})}


@pytest.mark.parametrize("name", RUNS)
def test_every_formula_resolves_to_a_callable(name, outputs):
    objs, _ = outputs[name]
    found = [(p, n) for obj in objs for p, n in formulas(obj)]
    assert found
    for path, fname in found:
        assert isinstance(fname, str) and fname.startswith("tpsim."), path
        fn = resolve(fname)
        assert callable(fn), f"{path}: {fname} is not callable"
        assert qualname(fn) == fname, f"{path}: {fname} is an alias of {qualname(fn)}"


@pytest.mark.parametrize("name", RUNS)
def test_every_section_has_a_formula_covering_its_numbers(name, outputs):
    objs, _ = outputs[name]
    command = RUNS[name].split()[0]
    for path in SECTIONS[command]:
        sections = [sec for obj in objs for sec in _at(obj, path)]
        assert sections, f"{name}: no {path} to check"
        for sec in sections:
            assert "formula" in sec, f"{name}: {path or 'top level'} has no formula"
            f = sec["formula"]
            if isinstance(f, dict):
                numbers = {k for k, v in sec.items() if isinstance(v, (int, float))
                           and not isinstance(v, bool)} - ECHOED
                assert numbers <= set(f), f"{name}: {path}: no formula for {numbers - set(f)}"
                assert set(f) <= set(sec), f"{name}: {path}: formula names absent keys"


@pytest.mark.parametrize("name", RUNS)
def test_the_text_and_the_docs_name_the_same_functions(name, outputs):
    """A comparison table (comma lists) names the functions of its columns only."""
    objs, text = outputs[name]
    docs = (REPO / "docs" / "json.md").read_text()
    names = set(COLUMN_FORMULAS.values()) if len(objs) > 1 else \
        aggregate_names(objs, RUNS[name].split()[0])
    for fname in names:
        assert fname in text, f"{name}: the text does not name {fname}"
        assert f"`{fname}`" in docs, f"docs/json.md does not name {fname}"


PROFILED = """
import contextlib, io, json, sys
from tpsim.base.formula import resolve
from tpsim.cli import main
called, missing = set(), {}

def profile(frame, event, arg):
    if event == "call":
        called.add(frame.f_code)

def names(obj):
    if isinstance(obj, list):
        return set().union(*map(names, obj))
    if not isinstance(obj, dict):
        return set()
    f = obj.get("formula", {})
    own = set(f.values()) if isinstance(f, dict) else {f}
    return own.union(*(names(v) for k, v in obj.items() if k != "formula"))

for name, argv in json.loads(sys.argv[1]).items():
    called.clear()
    buf = io.StringIO()
    sys.setprofile(profile)
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        main(argv)
    sys.setprofile(None)
    missing[name] = sorted(n for n in names(json.loads(buf.getvalue()))
                           if resolve(n).__code__ not in called)
print(json.dumps(missing))
"""


def test_every_named_function_runs_when_its_output_is_computed():
    """A name that resolves could still be the wrong function: each one is called while
    computing the output that names it (a fresh process: no memo skips a call)."""
    runs = json.dumps({name: cmd.split() + ["--json"] for name, cmd in RUNS.items()})
    r = subprocess.run([sys.executable, "-c", PROFILED, runs], capture_output=True, text=True,
                       cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    missing = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(missing) == set(RUNS)
    assert not any(missing.values()), f"named but not called: {missing}"


def test_a_stale_name_does_not_resolve():
    """What keeps a renamed function from leaving its old name behind in a doc or a golden."""
    assert resolve("tpsim.cost.compute.gemm_time").__name__ == "gemm_time"
    for stale in ("tpsim.cost.compute.gemm_tim", "tpsim.costs.compute.gemm_time"):
        with pytest.raises((ImportError, AttributeError)):
            resolve(stale)


def test_each_trace_event_names_the_function_that_priced_its_op():
    from tpsim.report.trace import prediction_trace
    from tpsim.training.predict import predict
    pred = predict("gpt3-350m", "dgx-a100", tp=2, seq_len=1024)
    events = [e for e in prediction_trace(pred)["traceEvents"] if e["ph"] == "X"]
    assert [e["args"]["formula"] for e in events] == [o.formula for o in pred.ops]
    assert all(callable(resolve(e["args"]["formula"])) for e in events)


def test_the_summary_names_real_functions_and_fits_a_terminal():
    """`tpsim predict`'s first answer: at most 30 lines of at most 120 columns, one verdict, one
    MFU, and formula names that resolve."""
    import re
    from tpsim.base.formula import resolve
    for cmd in ("predict --model gpt3 --tp 8",
                "predict --model llama3-8b --tp 2 --dp 4 --global-batch 128 --sequence-parallel "
                "--distributed-optimizer",
                "predict --model gpt3 --tp 8 --pp 8 --dp 16 --global-batch 1536 --topology "
                "dgx-a100-hdr-cluster --nodes 128 --virtual-stages 2 --no-overlap-grad-reduce",
                "predict --model gpt3 --topology dgx-a100-hdr-cluster --tp 4 --pp 8 --dp 4 "
                "--global-batch 64"):                     # every remedy of a layout that does not fit
        text = _stdout(cmd.split())
        lines = text.splitlines()
        assert len(lines) <= 30 and max(map(len, lines)) <= 120, cmd
        assert text.count("FIT") == 1 and text.count("MFU") == 1, cmd
        names = re.findall(r"(tpsim(?:\.\w+)+)", text.split("formulas:", 1)[1])
        assert len(names) == 5 and all(callable(resolve(n)) for n in names), names
