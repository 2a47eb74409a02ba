"""The package's shape, checked from the source (AST), as docs/dev/CONTRACTS.md states it:

* each folder of ``tpsim/`` has one job, and a module imports only from its own folder or from
  folders below it in ``LAYERS`` (folders on one row are siblings and import none of each other);
* ``tpsim/tp`` (torch) imports only ``tpsim.base``;
* no import cycle between modules: module-level, function-local and ``TYPE_CHECKING`` imports
  all count;
* at most 8 modules at the top of ``tpsim/``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

from tests.conftest import REPO

PACKAGE = REPO / "tpsim"
# bottom to top; a folder may import its own row's folder and every row below
LAYERS = (("base",), ("spec",), ("cluster",), ("cost",), ("layer",), ("sim",),
          ("training", "serving", "calibrate"), ("search",), ("report",), ("figures",), ("cli",))
RANK = {folder: i for i, row in enumerate(LAYERS) for folder in row}
ALLOWED_EXTRA = {"tp": {"base"}}          # folder -> the only folders it may import


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every tpsim module ``name`` imports, wherever the import statement stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:      # `from . import x` imports the submodule x
                full = f"{target}.{alias.name}"
                out.add(full if full in MODULES else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES and m != name}


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    GRAPH.add_edges_from((_name, dep) for dep in imports_of(_name, _path))


def folder(name: str) -> str | None:
    """The folder of a module (None for a top-level module or the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) \
        else None


def violations() -> list[str]:
    bad = []
    for src, dst in GRAPH.edges:
        a, b = folder(src), folder(dst)
        if a is None or a == b:
            continue                      # top-level modules see everything; a folder itself
        if b is None:
            if a != "cli":
                bad.append(f"{src} imports the top of the package ({dst})")
        elif a in ALLOWED_EXTRA or b in ALLOWED_EXTRA:
            if b not in ALLOWED_EXTRA.get(a, ()):
                bad.append(f"{src} -> {dst}: {a} may import only {ALLOWED_EXTRA.get(a)}")
        elif a not in RANK or b not in RANK:
            bad.append(f"{src} -> {dst}: folder {a if a not in RANK else b} is in no layer")
        elif RANK[b] >= RANK[a]:
            bad.append(f"{src} -> {dst}: {a} may import only folders below it")
    return bad


def test_every_folder_is_in_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(RANK) | set(ALLOWED_EXTRA)


def test_imports_go_down_the_layers():
    assert violations() == []


def test_no_module_import_cycle():
    cycles = [c for c in nx.simple_cycles(GRAPH)]
    assert cycles == [], f"{len(cycles)} cycles, e.g. {' -> '.join(cycles[0])}"


def test_at_most_eight_top_level_modules():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top


@pytest.mark.parametrize("edge, why", [
    (("tpsim.base.errors", "tpsim.sim.price"), "may import only folders below it"),
    (("tpsim.training.step", "tpsim.serving.infer"), "may import only folders below it"),
    (("tpsim.tp.layers", "tpsim.spec.model"), "may import only"),
    (("tpsim.cost.compute", "tpsim"), "imports the top of the package"),
])
def test_a_wrong_import_is_caught(edge, why):
    """The checks can fail: an upward, sibling, torch-side or top-level import is reported,
    and a cycle is found."""
    GRAPH.add_edge(*edge)
    try:
        assert any(why in v and edge[0] in v for v in violations())
    finally:
        GRAPH.remove_edge(*edge)
    g = nx.DiGraph([("a", "b"), ("b", "a")])
    assert list(nx.simple_cycles(g))


def test_function_local_imports_count(tmp_path):
    """An import inside a function (or under TYPE_CHECKING) is an edge like any other."""
    path = PACKAGE / "cost" / "compute.py"
    src = "def f():\n    from ..sim import price\n"
    fake = tmp_path / "compute.py"
    fake.write_text(src)
    assert "tpsim.sim.price" in imports_of("tpsim.cost.compute", fake)
    assert path.exists()
