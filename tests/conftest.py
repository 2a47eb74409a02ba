"""Shared test fixtures: hand-made topologies whose costs can be derived on paper."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tpsim.base.schema import from_mapping
from tpsim.cluster.topology import Topology

REPO = Path(__file__).resolve().parents[1]


def make_topology(levels, device=None, name="hand") -> Topology:
    """A Topology from plain dicts (YAML units), no copy pass and no launch unless given."""
    dev = {"name": "toy", "peak_tflops": {"bf16": 100.0, "fp32": 10.0}, "memory_GiB": 80,
           "memory_bandwidth_GBps": 1000}
    dev.update(device or {})
    return from_mapping(Topology, {"name": name, "description": "hand-derived test topology",
                                   "device": dev, "levels": levels}, "<test>")


HF = REPO / "tests" / "data" / "hf"     # sample Hugging Face config.json files


def hf_config_file(tmp_path, base: str, **changes):
    """A copy of sample ``base``'s config.json in ``tmp_path`` with keys changed (``...``:
    removed)."""
    import json
    cfg = json.loads((HF / base / "config.json").read_text())
    for k, v in changes.items():
        if v is ...:
            cfg.pop(k)
        else:
            cfg[k] = v
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


@pytest.fixture
def write_yaml(tmp_path):
    def _write(data, name="topo.yaml"):
        p = tmp_path / name
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return p
    return _write


# Markers by folder: tests/<package folder>/ are the model tests (fast: `pytest -m model`),
# tests/integration/ run the CLI, docs, goldens and published data end to end, and
# tests/distributed/ start gloo ranks under torch (`pytest -m "not distributed"` skips them).
FOLDER_MARKERS = {"integration": "integration", "distributed": "distributed"}


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(tests)
        item.add_marker(FOLDER_MARKERS.get(rel.parts[0], "model"))
