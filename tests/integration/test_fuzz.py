"""A sample of bench/fuzz.py's cases (the command line, the API, input files): each ends in a
result or a one-line refusal; none raises another exception, hangs, or takes a value no run
can take (NaN, an empty string, non-ASCII digits, a float for a count) without a word."""
from __future__ import annotations

import importlib.util

from tests.conftest import REPO

_SPEC = importlib.util.spec_from_file_location("fuzz", REPO / "bench" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fuzz)


def test_a_fuzz_sample_has_no_failure():
    outcomes, failures = fuzz.fuzz(60, seed=7, report=lambda _: None)
    assert failures == []
    kinds = {kind for kind, _ in outcomes}
    assert kinds == {"cli", "api", "file"} and sum(outcomes.values()) == 120
    assert outcomes[("cli", "refused")] and outcomes[("cli", "ok")]     # both ends reached


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
