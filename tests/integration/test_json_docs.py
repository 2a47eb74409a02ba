"""docs/json.md lists every key of `tpsim predict/infer/serve/search/collective --json`, and nothing
else: each key the commands emit (top level, second level and below, lists of objects written
`parent[]`) is documented, and each documented key is emitted by the runs below.

The runs are chosen to emit every key: predict with a pipeline, DP and both notices (TP across
nodes, out of memory); infer with all three notices (weights that do not fit: a second run; a speculative third);
search on a small space; collective alone and as a comma list (whose rows add `topology` and `nccl`). The search's `dropped` map has reason codes for
keys and carries only the reasons that occurred: its documented codes must be exactly
tpsim.search.driver.REASONS, and the emitted ones among them.
"""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from tpsim import Layout
from tpsim.cli import main
from tpsim.search.driver import REASONS
from tpsim.serving.serve_search import REASONS as SERVE_REASONS

from tests.conftest import REPO

DOC = REPO / "docs" / "json.md"
RUNS = {
    "predict": [["predict", "--model", "gpt3", "--topology", "dgx-a100-hdr-cluster", "--tp", "16",
                 "--pp", "2", "--dp", "2", "--global-batch", "8", "--json"],
                ["predict", "--model", "gpt3-13b", "--topology", "dgx-a100-hdr-cluster", "--tp", "8",
                 "--pp", "4", "--dp", "2", "--global-batch", "32", "--virtual-stages", "2",
                 "--sequence-parallel", "--tp-comm-overlap", "--distributed-optimizer", "--json"],
                ["predict", "--model", "gpt3", "--topology", "dgx-h100-ndr-cluster", "--tp", "4",
                 "--dp", "63", "--global-batch", "126", "--json"]],      # every remedy's keys
    "infer": [["infer", "--model", "llama2-70b", "--topology", "dgx-h100-ndr-cluster", "--tp", "16",
               "--batch", "2", "--allreduce", "custom", "--json"],
              ["infer", "--model", "llama3-405b", "--topology", "dgx-h100", "--tp", "8", "--json"],
              ["infer", "--model", "llama3-8b", "--tp", "2", "--gen", "8", "--speculative",
               "eagle", "--num-speculative-tokens", "2", "--acceptance-rate", "0.7", "--json"]],
    "serve": [["serve", "--model", "llama2-7b", "--tp", "1", "--requests", "20", "--prompt",
               "300", "--gen", "20", "--json"],
              ["serve", "--model", "llama2-7b", "--tp", "1", "--requests", "20", "--rate", "5",
               "--json"]],
    "serve_search": [["serve-search", "--model", "llama2-7b", "--gpus", "2", "--ttft-p99", "1",
                      "--tpot-p99", "0.05", "--requests", "40", "--prompt", "256", "--gen", "16",
                      "--usd-per-gpu-hour", "2", "--max-num-seqs", "64", "--json"],
                     ["serve-search", "--model", "llama2-7b", "--gpus", "2", "--ttft-p99",
                      "0.001", "--tpot-p99", "0.05", "--requests", "20", "--prompt", "256",
                      "--gen", "16", "--max-num-seqs", "64", "--rate", "1", "--json"]],
    "search": [["search", "--model", "gpt3-1.3b", "--topology", "dgx-a100", "--gpus", "8",
                "--global-batch", "8", "--top", "3", "--framework", "megatron-lm-2021",
                "--json"]],
    "collective": [["collective", "--topology", "dgx-h100", "--ranks", "8", "--bytes", "1GiB",
                    "--json"],
                   ["collective", "--topology", "dgx-a100,dgx-h100", "--ranks", "8", "--json"]],
}
MAPS = {"search": ("dropped", "dropped_reasons", "fixed"),   # keys are reason codes
        "serve_search": ("dropped", "dropped_reasons"),
        "predict": ("inputs.layout",)}                   # keys are Layout's field names
CODES = {"search": REASONS, "serve_search": SERVE_REASONS}
# the maps whose keys are Layout's field names, each documented as one key
FIELDS = {("predict", "inputs.layout"), ("search", "fixed")}
LAYOUT_FIELDS = {f.name for f in dataclasses.fields(Layout)}
SECTION = re.compile(r"^<!-- json-keys: (\w+) -->$(.*?)(?=^## |\Z)", re.S | re.M)
TICKED = re.compile(r"`([^`]+)`")


def documented() -> dict[str, set[str]]:
    """Per command, the key paths of its section: under each `### ` heading (`Top level`, or
    the parent paths it names in backticks), the backticked keys of each table row's first
    cell."""
    out = {}
    for name, body in SECTION.findall(DOC.read_text()):
        keys, parents = set(), None
        for line in body.splitlines():
            if line.startswith("### "):
                parents = [""] if "Top level" in line else TICKED.findall(line)
            elif line.startswith("| `") and parents is not None:
                first = line.split("|")[1]
                keys |= {f"{p}.{k}" if p else k for p in parents for k in TICKED.findall(first)}
        out[name] = keys
    return out


def paths(obj, prefix: str = "") -> set[str]:
    """Every key path of ``obj``; the objects of a list share ``parent[]``."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{prefix}.{k}" if prefix else k
            out |= {p} | paths(v, p)
    elif isinstance(obj, list):
        for x in obj:
            out |= paths(x, prefix + "[]" if prefix else "")
    return out


def emitted(name: str, capsys) -> set[str]:
    keys = set()
    for argv in RUNS[name]:
        assert main(argv) == 0
        keys |= paths(json.loads(capsys.readouterr().out))
    return keys


def split_maps(name: str, keys: set[str]) -> tuple[set[str], dict[str, set[str]]]:
    """(keys outside the maps, map name -> its child keys)."""
    maps = MAPS.get(name, ())
    inside = {m: {k[len(m) + 1:] for k in keys if k.startswith(m + ".")} for m in maps}
    rest = {k for k in keys if not any(k.startswith(m + ".") for m in maps)}
    return rest, inside


def test_every_command_has_a_section():
    assert set(documented()) == set(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_json_keys_are_documented(name, capsys):
    doc, out = split_maps(name, documented()[name]), split_maps(name, emitted(name, capsys))
    assert out[0] - doc[0] == set(), f"{name}: keys emitted but not in docs/json.md"
    assert doc[0] - out[0] == set(), f"{name}: keys in docs/json.md that no run emits"
    for m, codes in out[1].items():
        if (name, m) in FIELDS:
            assert m in doc[0] and codes and codes <= LAYOUT_FIELDS, \
                f"{name}: {m} is undocumented, empty, or holds keys that are not Layout fields"
            continue
        assert doc[1][m] == set(CODES[name]), f"{name}: docs/json.md's {m} codes are not REASONS"
        assert codes <= doc[1][m], f"{name}: {m} emits undocumented codes"


def test_nested_paths_are_checked():
    """The comparison reaches below the second level (a list inside an object)."""
    assert {"step.stages[].bubble_s", "collectives.decode[].op", "prefill.cost.hbm_s"} <= \
        documented()["predict"] | documented()["infer"]
    assert paths({"a": [{"b": {"c": 1}}]}) == {"a", "a[].b", "a[].b.c"}
