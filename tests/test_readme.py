"""The README's commands are the ones CI runs, and its documented CLI calls work."""
from conftest import REPO


def _command_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme = _command_lines((REPO / "README.md").read_text())
    ci = _command_lines((REPO / ".ci" / "run").read_text())
    assert len(readme) == 2, "the README has exactly two set-up commands"
    assert ci == [readme[1]]
    assert "torch" not in readme[0] and "constraints" in readme[1]


def test_readme_lists_every_function_that_prices_an_op():
    """The README's "How time is computed" table names exactly the functions whose names the
    ops' `formula` carries, and each is a real function of that name."""
    import importlib
    import re

    from tpsim.price import FORMULAS
    named = set(FORMULAS.values())
    for path in (REPO / "tpsim").rglob("*.py"):
        named |= set(re.findall(r'"(tpsim\.\w+\.\w+_time)"', path.read_text()))
    text = (REPO / "README.md").read_text()
    section = text.split("## How time is computed", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(tpsim\.[\w.]+)` \|", section, re.M))
    assert listed == named
    for name in listed:
        module, func = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), func))
