"""Level.kind: what joins a level's units (nvlink-domain, pcie, network), read by the code
instead of level names; its default keeps every file written before it as it was; an NVL72
rack is one NVLink domain of 72 GPUs (tpsim's node), whatever its 4-GPU trays."""
from __future__ import annotations

import pytest

from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology, shipped_topologies
from tpsim.cost.collectives import applicable_algorithms, custom_all_reduce_unsupported
from tpsim.training.nodes import with_nodes

from tests.conftest import make_topology

NVL = {"size": 8, "bandwidth_GBps": 450, "latency_us": 2.0}
NET = {"size": 4, "bandwidth_GBps": 50, "latency_us": 10.0}


def test_default_is_innermost_nvlink_domain_and_network_outside():
    topo = make_topology([{"name": "a", **NVL}, {"name": "b", **NET}])
    assert [lv.kind for lv in topo.levels] == ["nvlink-domain", "network"]
    assert [lv.inter_node for lv in topo.levels] == [False, True]


@pytest.mark.parametrize("name", sorted(shipped_topologies()))
def test_shipped_kinds(name):
    topo = load_topology(name)
    kinds = [lv.kind for lv in topo.levels]
    assert kinds[0] == ("pcie" if name == "pcie-l40s" else "nvlink-domain")
    assert all(k == "network" for k in kinds[1:])
    assert [lv.inter_node for lv in topo.levels] == [k == "network" for k in kinds]


def test_custom_all_reduce_reads_the_kind_not_the_name():
    nbytes, n = 2**20, 4
    named_nvlink_on_pcie = make_topology([{"name": "nvlink", "kind": "pcie", **NVL}])
    named_fabric_on_nvlink = make_topology([{"name": "fabric", **NVL}])
    assert "not all joined by NVLink" in custom_all_reduce_unsupported(
        nbytes, named_nvlink_on_pcie.place(n))
    assert custom_all_reduce_unsupported(nbytes, named_fabric_on_nvlink.place(n)) == ""
    # the shipped PCIe server keeps refusing it beyond 2 ranks, as before kinds
    l40s = load_topology("pcie-l40s")
    assert custom_all_reduce_unsupported(nbytes, l40s.place(4))
    assert custom_all_reduce_unsupported(nbytes, l40s.place(2)) == ""


def test_two_nvlink_levels_make_one_node():
    """A rack written as trays of 4 joined by NVLink switches is still one node of 72."""
    topo = make_topology([{"name": "tray", **{**NVL, "size": 4}},
                          {"name": "switch-trays", "kind": "nvlink-domain", **{**NVL, "size": 18}},
                          {"name": "ib", **NET}])
    assert [lv.inter_node for lv in topo.levels] == [False, False, True]
    assert topo.devices_per_node == 72 and topo.network.name == "ib"
    assert not topo.place(72).crosses_nodes and topo.place(73).crosses_nodes


@pytest.mark.parametrize("levels, key", [
    ([{"name": "a", "kind": "ethernet", **NVL}], "levels[0].kind"),
    ([{"name": "a", "kind": "network", **NVL}], "levels"),               # a network inside the node
    ([{"name": "a", **NVL}, {"name": "b", "kind": "pcie", "inter_node": True, **NET}],
     "levels[1].inter_node"),
])
def test_bad_kinds_are_one_line_errors(levels, key):
    with pytest.raises(ConfigError) as e:
        make_topology(levels)
    assert key in str(e.value)


@pytest.mark.parametrize("name", ["gb200-nvl72", "gb300-nvl72"])
def test_nvl72_is_one_nvlink_domain_of_72(name):
    topo = load_topology(name)
    assert topo.devices_per_node == 72 and topo.levels[0].kind == "nvlink-domain"
    for n in (4, 8, 16, 64, 72):          # TP/EP groups past a 4-GPU tray never touch a NIC
        assert not topo.place(n).crosses_nodes
    assert "nvls" in applicable_algorithms("all-reduce", 72, topo)
    two_racks = with_nodes(topo, 2)       # --nodes counts racks (NVLink domains)
    assert two_racks.max_ranks == 144 and two_racks.place(144).crosses_nodes
    assert two_racks.place(144).spans[1].ports == 72      # one NIC per GPU


def test_a_level_shared_by_two_topologies_resolves_at_each_depth():
    """A Level built once in code with neither kind nor inter_node is the innermost level of one
    topology and the outer one of another: each topology resolves its own copy, so the first
    neither fixes the second's reading nor is changed by it."""
    import dataclasses
    base = make_topology([{"name": "a", **NVL}, {"name": "b", **NET}])
    bare = dataclasses.replace(base.levels[0], name="shared", kind=None, inter_node=None)
    first = dataclasses.replace(base, levels=(bare, dataclasses.replace(base.levels[1], name="x")))
    second = dataclasses.replace(base, levels=(dataclasses.replace(base.levels[0], name="y"), bare))
    assert [lv.kind for lv in first.levels] == ["nvlink-domain", "network"]
    assert [lv.kind for lv in second.levels] == ["nvlink-domain", "network"]
    assert (bare.kind, bare.inter_node) == (None, None)
