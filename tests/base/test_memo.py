"""The one memo (tpsim.base.memo): bounded, keyed by value, a file read once per version."""
from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys

import pytest

from tests.conftest import make_topology
from tpsim.base import memo as memo_mod
from tpsim.base.errors import ConfigError
from tpsim.base.memo import Memo, file_key, memoised, memos, value_hash
from tpsim.cluster import topology as topology_mod
from tpsim.spec import model as model_mod

NVLINK = {"name": "nvlink", "size": 8, "bandwidth_GBps": 450, "latency_us": 2.0}
IB = {"name": "ib", "size": 4, "bandwidth_GBps": 50, "latency_us": 5.0}


@pytest.mark.parametrize("lru", [False, True])
def test_never_more_than_maxsize_entries(lru):
    m = Memo("test", 3, lru=lru)
    for k in range(20):
        assert m.get(k, lambda k=k: k * k) == k * k
        assert len(m) <= 3
    assert m.info() == (0, 20, 3, len(m))


def test_lru_drops_the_least_recently_used_and_clear_mode_empties():
    m = Memo("lru", 2, lru=True)
    m.get("a", str, 1), m.get("b", str, 2), m.get("a", str, 9)     # "a" used last
    m.get("c", str, 3)
    assert "a" in m and "b" not in m and "c" in m
    assert m.get("a", str, 9) == "1"                                 # kept, not remade
    whole = Memo("clear", 2)
    whole.get("a", str, 1), whole.get("b", str, 2), whole.get("c", str, 3)
    assert len(whole) == 1 and "c" in whole


def test_an_exception_is_not_kept():
    m = Memo("raises", 4)

    def boom():
        raise ValueError("no")
    with pytest.raises(ValueError):
        m.get("k", boom)
    assert "k" not in m and m.get("k", int) == 0


def test_memoised_counts_hits_and_clears():
    calls = []

    @memoised(2)
    def square(x):
        calls.append(x)
        return x * x
    assert [square(2), square(2), square(3), square(4), square(2)] == [4, 4, 9, 16, 4]
    assert calls == [2, 3, 4, 2] and square.cache_info() == (1, 4, 2, 2)
    square.cache_clear()
    assert square.cache_info() == (0, 0, 2, 0) and square.memo in memos()


def test_equal_topologies_built_apart_hash_alike_and_share_entries():
    a, b = make_topology([NVLINK, IB]), make_topology([NVLINK, IB])
    assert a is not b and a == b and hash(a) == hash(b)
    assert hash(a.device) == hash(b.device)
    other = make_topology([NVLINK, {**IB, "bandwidth_GBps": 25}])
    assert other != a and hash(other) != hash(a)
    from tpsim.sim.price import _COLLECTIVES, group_collective
    from tpsim.spec.parallel import Group
    g = Group("dp", 4, 8, 0, 32)
    first = group_collective("all-reduce", 2.0**20, g, a)
    hits = _COLLECTIVES.info().hits
    assert group_collective("all-reduce", 2.0**20, g, b) is first
    assert _COLLECTIVES.info().hits == hits + 1
    assert group_collective("all-reduce", 2.0**20, g, other).time_s > first.time_s


def test_the_value_hash_is_computed_once_and_ignores_caches(monkeypatch):
    a = make_topology([NVLINK, IB])
    h = hash(a)
    a.place(8)                                      # fills the per-topology placement memo
    monkeypatch.setattr(memo_mod, "freeze", lambda v: pytest.fail("hashed again"))
    assert hash(a) == h
    object.__setattr__(a, "path", "/elsewhere.yaml")
    assert hash(a) == h


CHILD = """
import pickle, sys
from tpsim.cluster.topology import load_topology
sent = pickle.loads(sys.stdin.buffer.read())
here = load_topology("dgx-h100")
assert sent is not here and hash(sent) == hash(here) and {here: 1}[sent] == 1
assert len(sent._placements) == 0
"""


def test_an_object_from_another_hash_seed_hashes_afresh():
    """A topology hashed here and pickled to a process with another string-hash seed (a
    search's spawned workers) finds the entries of its equal there."""
    topo = topology_mod.load_topology("dgx-h100")
    hash(topo), topo.place(8)
    env = {**os.environ, "PYTHONHASHSEED": "4242" if os.environ.get("PYTHONHASHSEED") != "4242"
           else "4243"}
    done = subprocess.run([sys.executable, "-c", CHILD], input=pickle.dumps(topo), env=env,
                          capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


TOPOLOGY = """name: tmp-topo
description: a topology for the memo tests
device: {name: toy, peak_tflops: {bf16: 100.0}, memory_GiB: 80, memory_bandwidth_GBps: 1000}
levels:
  - {name: nvlink, size: 8, bandwidth_GBps: 450, latency_us: 2.0}
  - {name: ib, size: 4, bandwidth_GBps: BW, latency_us: 5.0}
"""


@pytest.fixture
def settled(monkeypatch):
    """Files count as settled however recently written (no racy-clean re-reads)."""
    monkeypatch.setattr(memo_mod, "RECENT_NS", 0)


def _rewrite(path, text):
    """Write ``text`` and set the mtime a second before the last one (a version of its own
    whatever the clock's tick, and not in the future)."""
    before = os.stat(path).st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before - 10**9, before - 10**9))


def test_a_file_is_read_once_per_version(tmp_path, monkeypatch, settled):
    reads = []
    real = topology_mod.load_yaml
    monkeypatch.setattr(topology_mod, "load_yaml", lambda p: reads.append(p) or real(p))
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY.replace("BW", "50"))
    first = topology_mod.load_topology(str(path))
    assert topology_mod.load_topology(str(path)) is first and len(reads) == 1
    _rewrite(path, TOPOLOGY.replace("BW", "25"))
    second = topology_mod.load_topology(str(path))
    assert len(reads) == 2 and second is not first
    assert second.levels[1].bandwidth_Bps == 25e9 and first.levels[1].bandwidth_Bps == 50e9
    assert second.path == str(path)


def test_a_model_file_changed_in_place_is_read_again(tmp_path, settled):
    path = tmp_path / "m.yaml"
    text = "name: tiny\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 128\nseq_len: 32\n"
    path.write_text(text)
    first = model_mod.load_model(path)
    assert model_mod.load_model(path) is first
    _rewrite(path, text.replace("layers: 2", "layers: 3"))
    assert model_mod.load_model(path).layers == 3


def test_a_file_changed_just_now_is_read_every_time(tmp_path, monkeypatch):
    """Git's racy-clean rule: within RECENT_NS of its last change a file could change again
    inside the same clock tick, leaving its version as it was, so it is not kept."""
    reads = []
    real = topology_mod.load_yaml
    monkeypatch.setattr(topology_mod, "load_yaml", lambda p: reads.append(p) or real(p))
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY.replace("BW", "50"))
    st = os.stat(path)
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    monkeypatch.setattr(memo_mod, "_clock", lambda: changed + memo_mod.RECENT_NS - 1)
    topology_mod.load_topology(str(path)), topology_mod.load_topology(str(path))
    assert len(reads) == 2
    monkeypatch.setattr(memo_mod, "_clock", lambda: changed + memo_mod.RECENT_NS)
    topology_mod.load_topology(str(path)), topology_mod.load_topology(str(path))
    assert len(reads) == 3


def test_a_missing_file_is_not_kept_and_still_named(tmp_path):
    assert file_key(tmp_path / "none.yaml") is None and file_key(tmp_path) is None
    with pytest.raises(ConfigError, match="none.yaml"):
        topology_mod.load_topology(str(tmp_path / "none.yaml"))


def test_a_shipped_listing_sees_a_new_file(tmp_path, monkeypatch, settled):
    monkeypatch.setattr(model_mod, "shipped_dir", lambda: tmp_path)
    (tmp_path / "a.yaml").write_text("")
    assert list(model_mod.shipped_models()) == ["a"]
    before = os.stat(tmp_path).st_mtime_ns
    (tmp_path / "b.yaml").write_text("")
    os.utime(tmp_path, ns=(before - 10**9, before - 10**9))
    assert list(model_mod.shipped_models()) == ["a", "b"]


def _counting_reads(monkeypatch) -> list:
    reads = []
    for mod in (model_mod, topology_mod):
        real = mod.load_yaml
        monkeypatch.setattr(mod, "load_yaml", lambda p, real=real: reads.append(p) or real(p))
    model_mod._FILES.clear()
    topology_mod._FILES.clear()
    return reads


def test_predict_by_names_reads_each_file_once(monkeypatch, settled):
    from tpsim.report.render import prediction_json
    from tpsim.sim.simulate import _SIMULATIONS
    from tpsim.training.predict import predict
    reads = _counting_reads(monkeypatch)
    assert model_mod.load_model("gpt3") is model_mod.load_model("gpt3")
    job = {"tp": 8, "pp": 2, "dp": 2, "nodes": 4}
    first = predict("gpt3", "dgx-h100-ndr-cluster", **job)
    assert len(reads) == 2
    hits = _SIMULATIONS.info().hits
    again = predict("gpt3", "dgx-a100-hdr-cluster", **job)
    assert len(reads) == 3                         # the new topology, nothing else
    second = predict("gpt3", "dgx-h100-ndr-cluster", **job)
    assert len(reads) == 3 and _SIMULATIONS.info().hits > hits
    assert prediction_json(second) == prediction_json(first) != prediction_json(again)


def test_with_nodes_is_memoised_by_value(tmp_path):
    from tpsim.training.nodes import with_nodes
    topo = topology_mod.load_topology("dgx-h100-ndr-cluster")
    two = with_nodes(topo, 2)
    assert with_nodes(topo, 2) is two and two.levels[-1].size == 2
    copy = dataclasses.replace(topo)
    object.__setattr__(copy, "path", topo.path)
    assert with_nodes(copy, 2) is two
    path = tmp_path / "same.yaml"
    path.write_text(topology_mod.shipped_topologies()["dgx-h100-ndr-cluster"].read_text())
    elsewhere = with_nodes(topology_mod.load_topology(str(path)), 2)
    assert elsewhere == two and elsewhere is not two and elsewhere.path == str(path)
    for bad in (0, True, [2]):
        with pytest.raises(ConfigError, match="--nodes"):
            with_nodes(topo, bad)


def test_a_second_search_run_by_names_is_equal_to_the_first():
    from tpsim.search.driver import _run
    from tpsim.search.parts import _PARTS, layer_parts
    a = _run("gpt3-350m", "dgx-h100", None, None, "bf16", 64)
    b = _run("gpt3-350m", "dgx-h100", None, None, "bf16", 64)
    assert a == b and hash(a) == hash(b) == value_hash(a)
    parts = layer_parts(a, 2, 1, False, "none", False)
    hits = _PARTS.info().hits
    assert layer_parts(b, 2, 1, False, "none", False) is parts
    assert _PARTS.info().hits == hits + 1
    assert _run("gpt3-350m", "dgx-h100", None, None, "bf16", 128) != a
