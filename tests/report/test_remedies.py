"""The does-not-fit notice's remedies (tpsim.report.remedies): only what --framework can run,
the same in the summary, the --ops report, --json and stderr, and every suggested command line
one that runs."""
from __future__ import annotations

import json

import pytest

from tpsim.cli import build_parser, main
from tpsim.report.remedies import REMEDY_NAMES, remedy_flags
from tpsim.spec.frameworks import LACKS

# layouts that do not fit, between them every kind of remedy
JOBS = ["--model llama3-70b --tp 2 --dp 4 --global-batch 64 --seq 4k",
        "--model gpt3 --tp 8 --pp 4 --dp 4 --global-batch 64",
        "--model llama3-8b --tp 2 --dp 1 --global-batch 8 --micro-batch 8 --seq 8k"]
FRAMEWORKS = [None, "megatron-lm-2021", "torchtitan", "megatron-deepspeed"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _with(argv: list[str], flags: str) -> list[str]:
    """``argv`` with ``flags`` set: a flag given there is replaced, with its value."""
    new = flags.split()
    given = {w for w in new if w.startswith("--")}
    out, skip = [], False
    for w in argv:
        if skip and not w.startswith("--"):
            skip = False
            continue
        skip = w in given
        if not skip:
            out.append(w)
    return out + new


def _remedies(capsys, argv) -> list[dict]:
    code, out, _ = _run(capsys, [*argv, "--json"])
    assert code == 0
    return next(n["remedies"] for n in json.loads(out)["notices"]
                if n["code"] == "memory_does_not_fit")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("job", JOBS)
def test_every_remedy_offered_runs_under_the_framework(capsys, job, framework):
    argv = ["predict", *job.split(), *(["--framework", framework] if framework else [])]
    remedies = _remedies(capsys, argv)
    lacks = {field: only for field, only, _ in LACKS.get(framework, ())}
    for change in remedies:
        assert all(change[f] in (lacks[f], None) for f in change if f in lacks), change
        code, _, err = _run(capsys, _with(argv, remedy_flags(change)))
        assert code == 0, (remedy_flags(change), err)


def test_the_kinds_of_remedy_are_all_tried(capsys):
    seen = {next(iter(c)) for job in JOBS for c in _remedies(capsys, ["predict", *job.split()])}
    assert seen == set(REMEDY_NAMES)


def test_a_framework_without_them_is_not_told_to_add_them(capsys):
    """Megatron-LM 2021 had no distributed optimizer and no ZeRO: no output suggests either,
    where megatron-core's does."""
    job = JOBS[0].split()
    for framework, offered in ((None, True), ("megatron-lm-2021", False)):
        argv = ["predict", *job, *(["--framework", framework] if framework else [])]
        texts = [_run(capsys, argv)[1], *_run(capsys, [*argv, "--ops"])[1:],
                 _run(capsys, [*argv, "--json"])[1]]
        for text in texts:
            assert ("--distributed-optimizer" in text) == offered, (framework, text[-400:])
            assert ("--zero 3" in text) == offered
            assert "--tp 4 --dp 2" in text


@pytest.mark.parametrize("framework", [None, "megatron-lm-2021"])
def test_the_search_line_parses(capsys, framework):
    """The summary's `tpsim search` line, its continuations joined, is a command the parser
    takes whole."""
    argv = ["predict", *JOBS[0].split(), *(["--framework", framework] if framework else [])]
    out = _run(capsys, argv)[1]
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("tpsim search"))
    words = []
    for line in lines[start:]:
        words += line.strip().rstrip("\\").split()
        if not line.endswith("\\"):
            break
    args = build_parser(words[1:]).parse_args(words[1:])
    assert args.gpus == 8 and args.global_batch == 64 and args.framework == framework
