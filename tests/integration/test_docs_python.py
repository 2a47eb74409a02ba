"""The Python blocks of the topic docs run as shown (a newcomer pastes them first): each
```python block of docs/training-step.md and docs/serving.md executes without an exception,
and one written as a session (>>>) prints what it shows."""
from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

BLOCKS = [(name, code) for name in ("docs/training-step.md", "docs/serving.md")
          for code in re.findall(r"^```python\n(.*?)^```", (REPO / name).read_text(), re.S | re.M)]


@pytest.mark.parametrize("name, code", BLOCKS, ids=[f"{n}#{i}" for i, (n, _) in enumerate(BLOCKS)])
def test_the_docs_python_runs(name, code):
    if code.startswith(">>>"):
        import doctest
        test = doctest.DocTestParser().get_doctest(code, {}, name, name, 0)
        assert doctest.DocTestRunner(verbose=False).run(test).failed == 0
    else:
        exec(compile(code, name, "exec"), {})


def test_the_release_example_prints_the_one_line_it_shows():
    code = next(c for n, c in BLOCKS if "TpsimError" in c)
    shown = re.search(r"print\(e\)\s+# (.*)", code).group(1)
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "docs/training-step.md", "exec"), {})
    head, tail = shown.split("...")
    assert buf.getvalue().startswith(head) and buf.getvalue().rstrip().endswith(tail.strip())
