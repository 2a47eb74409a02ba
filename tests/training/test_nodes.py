"""check_fits: a job larger than its topology is refused with each degree it multiplied, so a
defaulted --tp is visible in the product, and the --nodes that would hold it."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology
from tpsim.spec.parallel import Parallelism
from tpsim.training.nodes import check_fits


@pytest.mark.parametrize("tp,cp,pp,dp", [(8, 1, 8, 16), (2, 4, 8, 9), (1, 1, 1, 600)])
def test_too_large_names_each_degree_and_the_nodes(tp, cp, pp, dp):
    topo = load_topology("dgx-h100-ndr-cluster")
    par = Parallelism(tp=tp, cp=cp, pp=pp, dp=dp)
    nodes = -(-par.world // 8)
    assert par.world > topo.max_ranks
    with pytest.raises(ConfigError) as err:
        check_fits(topo, par)
    text = str(err.value)
    assert f"{par.world} GPUs for tp {tp} x cp {cp} x pp {pp} x dp {dp}" in text
    assert f"pass --nodes {nodes}" in text


def test_single_node_topology_says_it_has_no_network():
    with pytest.raises(ConfigError, match="tp 8 x cp 1 x pp 1 x dp 2 .*no network to size"):
        check_fits(load_topology("dgx-h100"), Parallelism(tp=8, dp=2))
