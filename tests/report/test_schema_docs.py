"""topologies/README.md documents exactly the fields the loader accepts."""
from tpsim.report.schema_docs import reference

from tests.conftest import REPO


def test_topology_readme_field_reference_is_current():
    text = (REPO / "topologies" / "README.md").read_text()
    assert reference().strip() in text, "regenerate with: python -m tpsim.report.schema_docs"
