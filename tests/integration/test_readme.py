"""The README's set-up and test commands are the ones CI runs."""
from tests.conftest import REPO


def _command_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme = _command_lines((REPO / "README.md").read_text())
    ci = _command_lines((REPO / ".ci" / "run").read_text())
    assert len(readme) == 2, "the README has exactly two set-up commands"
    assert ci == [readme[1]]
    assert "torch" not in readme[0] and "constraints" in readme[1]
