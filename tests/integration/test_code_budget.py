"""The line budget from STYLE.md, kept as a check (tinygrad keeps its own the same way):
modules under 400 lines, functions under 60 (the guide says ~50)."""
import ast

import pytest

from tests.conftest import REPO

SOURCES = sorted([*(REPO / "tpsim").rglob("*.py"), *(REPO / "validate").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name}: split it into modules that say what they model"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno < 60, f"{path.name}:{node.name} is too long"
