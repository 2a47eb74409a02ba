"""topologies/README.md documents exactly the fields the loader accepts."""
from tpsim.report.schema_docs import reference

from tests.conftest import REPO


def test_topology_readme_field_reference_is_current():
    text = (REPO / "topologies" / "README.md").read_text()
    assert reference().strip() in text, "regenerate with: python -m tpsim.report.schema_docs"


def test_the_smallest_topology_in_the_readme_loads_and_prices(tmp_path):
    """'Writing your own': the file of required keys only loads (every other at its default)
    and prices a job across its nodes."""
    import re

    import tpsim
    from tpsim.cluster.topology import load_topology
    text = (REPO / "topologies" / "README.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)
    path = tmp_path / "mine.yaml"
    path.write_text(block)
    topo = load_topology(path)
    assert topo.name == "my-a100-cluster" and topo.max_ranks == 32
    p = tpsim.predict("llama3-8b", path, tp=8, dp=4, global_batch=64)
    assert p.inputs.gpus == 32 and p.step.dp_comm_exposed_s > 0
