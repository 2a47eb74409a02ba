"""A sample of bench/fuzz.py's cases (the command line, the API, input files, objects built in
code): each ends in a
result or a one-line refusal; none raises another exception, hangs, or takes a value no run
can take (NaN, an empty string, non-ASCII digits, a float for a count) without a word."""
from __future__ import annotations

import importlib.util

from tests.conftest import REPO

_SPEC = importlib.util.spec_from_file_location("fuzz", REPO / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fuzz)
import fuzz_built  # noqa: E402 (bench/ is on the path once fuzz is loaded)


def test_a_fuzz_sample_has_no_failure():
    outcomes, failures = fuzz.fuzz(60, seed=7, report=lambda _: None)
    assert failures == []
    kinds = {kind for kind, _ in outcomes}
    assert kinds == {"cli", "api", "file", "built"} and sum(outcomes.values()) == 135
    assert outcomes[("cli", "refused")] and outcomes[("cli", "ok")]     # both ends reached
    assert outcomes[("built", "refused")]


def test_the_oracle_knows_a_bad_value():
    """must_refuse: NaN for any number, 1.5 for a count, a choice not offered; not a file
    name (any text may be one)."""
    actions = {a.option_strings[0]: a for a in fuzz._options(fuzz.SMALL["predict"])}
    assert fuzz.must_refuse(actions["--tp"], "nan") and fuzz.must_refuse(actions["--tp"], "1.5")
    assert not fuzz.must_refuse(actions["--tp"], "4")
    assert fuzz.must_refuse(actions["--dtype"], "fp7") and not fuzz.must_refuse(
        actions["--dtype"], "bf16")
    assert not fuzz.must_refuse(actions["--trace"], "nan")


def test_the_device_knobs_bad_values_are_fuzzed_and_refused(tmp_path):
    """The file cases reach inside a topology's device: clock_window and cuda_core_pipes'
    bad values each refused in one line (the fuzz had mutated only the top-level keys)."""
    import random

    import yaml
    from tpsim.cluster.topology import shipped_topologies
    doc = yaml.safe_load(shipped_topologies()["dgx-h100"].read_text())
    cases = [argv for argv, refuse in fuzz.device_cases(random.Random(0), tmp_path, doc) if refuse]
    assert len(cases) == 7
    assert all(fuzz.run_cli(argv)[0] == "refused" for argv in cases)


def test_the_built_oracle_knows_a_bad_value():
    """never_taken: NaN, a string, a bound crossed (in SI), None for a required field; not a
    name it cannot judge nor a value in bounds."""
    import dataclasses
    import math
    import typing

    from tpsim import load_topology
    dev = load_topology("dgx-h100").device
    hints, fields = typing.get_type_hints(type(dev)), {f.name: f for f in dataclasses.fields(dev)}

    def never(name, value):
        return fuzz_built.never_taken(hints[name], fields[name], value)
    assert never("memory_bandwidth_Bps", math.nan) and never("memory_bandwidth_Bps", -1)
    assert never("memory_bandwidth_Bps", "8") and never("gemm_max_efficiency", 1.5)
    assert never("sm_count", 0) and never("sm_count", 7.0) and never("name", None)
    assert not never("memory_bandwidth_Bps", 3e12) and not never("clock_window", "bogus")
    assert not never("l2_bandwidth_Bps", None) and never("memory_bytes", 1e30)


def test_built_cases_reach_every_class_and_all_bad_ones_are_refused():
    import random
    cases = list(fuzz_built.built_cases(random.Random(3), 60))
    assert {case.split("(")[0] for case, _, _ in cases} == {
        "Device", "Level", "Efficiency", "AttentionKernel", "Protocol", "Topology", "ModelConfig"}
    for case, fn, refuse in cases:
        outcome, detail = fuzz.run_api(fn, None, None)
        assert outcome == "refused" if refuse else outcome in ("ok", "refused"), (case, detail)
