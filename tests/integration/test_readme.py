"""The README's commands are the ones CI runs, and its documented CLI calls work."""
from tests.conftest import REPO


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
    ops' `formula` carries (read off the function objects), and each is a real function of that
    name."""
    import importlib
    import re

    from tpsim.sim.price import FORMULAS, GROUPED
    named = set(FORMULAS.values()) | {GROUPED}
    for path in (REPO / "tpsim").rglob("*.py"):   # CollectiveCost(..., qualname(ring_time))
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        named |= {f"{module}.{f}" for f in re.findall(r"qualname\((\w+_time)\)", path.read_text())}
    text = (REPO / "README.md").read_text()
    section = text.split("## How time is computed", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(tpsim\.[\w.]+)` \|", section, re.M))
    assert listed == named
    for name in listed:
        module, func = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), func))


def test_readme_serving_table_is_what_infer_says():
    """The README's Llama 2 70B serving table (TP 2/4/8, batch 1/64) as tpsim.infer gives it."""
    import re

    import tpsim
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d) \| (\d+) \| ([\d.]+) (ms|s) \| ([\d.]+) ms \| ([\d,]+) \| "
                      r"([\d.]+) GiB[^|]*\| (\d+) \|$", text, re.M)
    assert len(rows) == 6
    for tp, batch, ttft, unit, tpot, tput, mem, largest in rows:
        p = tpsim.infer("llama2-70b", "dgx-h100", tp=int(tp), batch=int(batch), prompt=2048,
                        gen=256)
        scale = 1e3 if unit == "ms" else 1.0
        digits = len(ttft.split(".")[1]) if "." in ttft else 0
        assert round(p.prefill.time_s * scale, digits) == float(ttft)
        assert round(p.decode.time_per_token_s * 1e3, 1) == float(tpot)
        assert round(p.decode.tokens_per_s) == int(tput.replace(",", ""))
        assert round(p.memory.total_bytes / 2**30, 1) == float(mem)
        assert p.memory.max_batch == int(largest)
