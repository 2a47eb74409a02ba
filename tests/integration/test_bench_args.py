"""The bench scripts' own flags refuse a bad value in one line with exit 2, as tpsim's do:
bench/whole_job_published.py's --clock-window priced a value it does not know as kernel."""
from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

_SPEC = importlib.util.spec_from_file_location("whole_job_published",
                                               REPO / "bench" / "whole_job_published.py")
whole_job = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(whole_job)


@pytest.mark.parametrize("argv, got", [(["--clock-window", "bogus"], "'bogus'"),
                                       (["--clock-window"], "None"),
                                       (["--clock-window", "--fit"], "'--fit'")])
def test_a_clock_window_it_does_not_know_is_refused(argv, got, capsys):
    assert whole_job.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert f"--clock-window: expected one of kernel, step (got {got})" in captured.err
