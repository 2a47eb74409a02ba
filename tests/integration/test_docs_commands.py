"""Every `$ tpsim ...` line in a ```console block of the README and docs/ runs, and the output
shown under it is real: each shown line appears, in order, in what the command prints.

Conventions in those blocks: a line `$ tpsim ARGS` is a command (a trailing `# comment` is
dropped); the lines up to the next `$` are its output (stdout, then stderr); a line `...` stands
for lines left out. Times the machine measures as it runs (`in 1.18 s`, `0.079 CPU s`) are
compared as `in X s`. A command whose shown output starts with `tpsim: error:` must exit with 2.
Commands run in-process, in a scratch directory (plots write there).
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

from tpsim.cli import main

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
# what a run measures about itself rather than about the model
MEASURED = [(re.compile(r"\bin [\d.,]+ (CPU )?s\b"), "in X s"),
            (re.compile(r"[\d.,]+ CPU s"), "X CPU s"),
            (re.compile(r"\([\d.]+ ms each\)"), "(X ms each)")]


def _normal(line: str) -> str:
    for pattern, repl in MEASURED:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def _commands():
    for doc in DOCS:
        for block in BLOCK.findall(doc.read_text()):
            cmd, shown = None, []
            for line in block.splitlines() + ["$"]:
                if line.startswith("$"):
                    if cmd is not None:
                        yield pytest.param(cmd, shown, id=f"{doc.name}: {cmd[:70]}")
                    text = line[1:].split(" #")[0].strip()
                    cmd = text if text.startswith("tpsim ") else None
                    shown = []
                else:
                    shown.append(line)


CASES = list(_commands())


def test_the_docs_have_commands():
    assert len(CASES) >= 20


@pytest.mark.parametrize("cmd, shown", CASES)
def test_documented_command_prints_what_the_docs_show(cmd, shown, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(shlex.split(cmd)[1:])
    expect_error = bool(shown) and shown[0].startswith("tpsim: error:")
    assert rc == (2 if expect_error else 0), err.getvalue()
    printed = [_normal(ln) for ln in (out.getvalue() + err.getvalue()).splitlines()]
    at = 0
    for line in shown:
        if line.strip() in ("", "..."):
            continue
        want = _normal(line)
        try:
            at = printed.index(want, at) + 1
        except ValueError:
            pytest.fail(f"`{cmd}` no longer prints (in this order):\n{line}")
