"""A process group's share of a node's NICs (:func:`tpsim.cluster.placement.spans`) against its
closed form, on hand-made two-level topologies (nodes of 8 devices on a network)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.spec.parallel import Parallelism

from tests.conftest import make_topology

NODE = {"name": "nvlink", "size": 8, "bandwidth_GBps": 300, "latency_us": 1}


def _cluster(nodes: int, nics: int, nic_GBps: float):
    return make_topology([NODE, {"name": "ib", "size": nodes, "bandwidth_GBps": nic_GBps,
                                 "nics_per_node": nics, "latency_us": 10}])


JOBS = st.tuples(st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([1, 2, 4, 8, 16]),
                 st.sampled_from([1, 2, 4, 8, 16, 32])).filter(
    lambda j: 16 <= j[0] * j[1] * j[2] <= 512)


@settings(max_examples=60, deadline=None)
@given(job=JOBS, dim=st.sampled_from(["tp", "pp", "dp"]),
       nics=st.sampled_from([1, 2, 4, 8]))
def test_network_share_is_the_nodes_bandwidth_over_its_devices(job, dim, nics):
    """In a job that fills its nodes every device of a node communicates at once, so a group
    with m members in a node is charged m / 8 of the node's NICs:

        unit bandwidth = min(nics, m, nics m / 8) x B = nics x B x m / 8     (m <= 8)

    It depends on the node's NIC bandwidth nics x B alone: 4 NICs of 25 GB/s and 8 of
    12.5 GB/s price every group alike (4 x HDR 200 Gb/s against 8 x HDR100)."""
    tp, pp, dp = job
    par = Parallelism(tp=tp, pp=pp, dp=dp)
    nodes = par.world // 8
    group = par.group(dim)
    place = _cluster(nodes, nics, 100.0 / nics).place(group)   # 100 GB/s a node, any split
    assert place.crosses_nodes == ((group.size - 1) * group.stride >= 8)   # its last rank
    for span in place.inter_node:
        m = span.devices_per_unit
        assert span.unit_bandwidth_Bps == pytest.approx(100e9 * m / 8, rel=1e-12)
