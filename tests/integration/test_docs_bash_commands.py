"""The `tpsim` commands the README and docs/ give outside console blocks (which
test_docs_commands.py runs and compares): every flag they name, in ```bash blocks and inline
code, is a flag of that command; every ```bash command runs (a synopsis: its part before the
first `[optional]`), except those reading a calibration's output, which validate/ writes."""
from __future__ import annotations

import argparse
import re
import shlex

import pytest

from tpsim.cli import build_parser, main

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`(tpsim [a-z][a-z-]*(?: [a-z][a-z-]*)? --[^`]*)`")
FLAG = re.compile(r"--(\[no-\])?([a-z0-9][a-z0-9-]*)")
ALTERNATIVES = re.compile(r"(--[a-z0-9-]+) ([a-z0-9.+-]+(?:\|[a-z0-9.+-]+)+)")   # --dtype bf16|fp8
NEEDS_VALIDATE = "out/"          # a path validate/run.py writes (calibrated.yaml)


def _bash_commands(text: str) -> list[str]:
    cmds = []
    for block in BASH.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" # ")[0].split("&&"):
                part = part.strip()
                if part.startswith("tpsim "):
                    cmds.append(" ".join(part.split()))
    return cmds


def _all() -> tuple[list, list]:
    bash, inline = [], []
    for doc in DOCS:
        text = doc.read_text()
        bash += [(doc.name, c) for c in _bash_commands(text)]
        inline += [(doc.name, " ".join(c.split())) for c in INLINE.findall(text.replace("\n", " "))]
    return bash, inline


BASH_CMDS, INLINE_CMDS = _all()


def _options(words: list[str]) -> dict:
    """The options of the (sub)command ``words`` names (`predict`, `plot pipeline`) by string."""
    parser = build_parser(words[:1])
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            break
    return parser._option_string_actions


def _flags(cmd: str) -> list[str]:
    flags = []
    for no, name in FLAG.findall(cmd):
        flags += [f"--{name}", f"--no-{name}"] if no else [f"--{name}"]
    return flags


def test_the_docs_give_commands_outside_console_blocks():
    assert len(BASH_CMDS) >= 8 and len(INLINE_CMDS) >= 10


@pytest.mark.parametrize("doc, cmd", BASH_CMDS + INLINE_CMDS,
                         ids=[f"{d}: {c[:60]}" for d, c in BASH_CMDS + INLINE_CMDS])
def test_every_flag_the_docs_name_exists(doc, cmd):
    words = cmd.split()[1:]
    options = _options([w for w in words[:2] if not w.startswith("-")])
    missing = [f for f in _flags(cmd) if f not in options]
    assert not missing, f"{doc}: `{cmd}` names {missing}, which tpsim {words[0]} does not take"
    for flag, values in ALTERNATIVES.findall(cmd):      # the values a synopsis lists
        choices = options[flag].choices
        if choices is not None:
            choices = [str(c) for c in choices]
            wrong = [v for v in values.split("|") if v not in choices and v != "..."]
            assert not wrong, f"{doc}: `{flag} {values}`: {wrong} not among {choices}"


RUNNABLE = [(d, c.split(" [")[0]) for d, c in BASH_CMDS if NEEDS_VALIDATE not in c]


@pytest.mark.parametrize("doc, cmd", RUNNABLE, ids=[f"{d}: {c[:60]}" for d, c in RUNNABLE])
def test_every_bash_command_runs(doc, cmd, tmp_path, monkeypatch, capsys):
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "measurements").symlink_to(REPO / "docs" / "measurements")
    monkeypatch.chdir(tmp_path)
    rc = main(shlex.split(cmd)[1:])
    assert rc == 0, f"{doc}: `{cmd}` exits {rc}: {capsys.readouterr().err}"
