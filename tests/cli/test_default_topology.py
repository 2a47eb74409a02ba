"""One default topology for every command run without --topology: dgx-h100 for a job of one
node's GPUs, dgx-h100-ndr-cluster (the same nodes on NDR InfiniBand) for a larger one; the
same refusal where even that cannot hold the job (tpsim.cluster.defaults)."""
import json

import pytest

import tpsim
from tpsim.cli import main
from tpsim.cluster.defaults import CLUSTER, NODE, NODE_GPUS, default_topology
from tpsim.cluster.topology import load_topology


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cluster_is_the_node_on_a_network():
    """The story's claim: the cluster's node is dgx-h100, so a job inside one node is priced
    the same on either (the default switches without a jump at 8 GPUs)."""
    node, cluster = load_topology(NODE), load_topology(CLUSTER)
    assert node.max_ranks == node.devices_per_node == cluster.devices_per_node == NODE_GPUS
    assert node.device == cluster.device and cluster.max_ranks > NODE_GPUS
    a, b = (tpsim.predict("llama3-8b", t, tp=8, global_batch=8) for t in (NODE, CLUSTER))
    assert a.step.time_s == b.step.time_s and a.memory.total_bytes == b.memory.total_bytes
    assert [default_topology(g) for g in (None, 1, 8, 9, 512)] == [NODE] * 3 + [CLUSTER] * 2


@pytest.mark.parametrize("argv, gpus", [
    (["predict", "--model", "gpt3-125m", "--tp", "4", "--json"], 4),
    (["predict", "--model", "gpt3-125m", "--tp", "4", "--pp", "2", "--dp", "2",
      "--global-batch", "8", "--json"], 16),
    (["search", "--model", "gpt3-125m", "--gpus", "8", "--global-batch", "8", "--top", "1",
      "--json"], 8),
    (["search", "--model", "gpt3-125m", "--gpus", "16", "--global-batch", "16", "--top", "1",
      "--json"], 16),
    (["infer", "--model", "llama3-8b", "--tp", "2", "--json"], 2),
    (["serve", "--model", "llama3-8b", "--tp", "2", "--requests", "4", "--json"], 2),
    (["collective", "--op", "all-reduce,all-gather", "--json"], 8),
    (["collective", "--op", "all-reduce,all-gather", "--ranks", "16", "--json"], 16),
])
def test_every_command_runs_on_the_default(capsys, argv, gpus):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert _topologies(json.loads(out)) == {default_topology(gpus)}


def _topologies(obj) -> set:
    """Every value of a "topology" key in a JSON answer."""
    if isinstance(obj, dict):
        return {v for k, v in obj.items() if k == "topology"} | \
            set().union(*map(_topologies, obj.values()))
    if isinstance(obj, list):
        return set().union(*map(_topologies, obj))
    return set()


def test_plots_use_the_default(capsys, tmp_path):
    job = ["--model", "gpt3-125m", "--tp", "2", "--pp", "4", "--dp", "2", "--global-batch", "16"]
    for name, given in (("p", []), ("q", ["--topology", CLUSTER])):
        code, _, err = run(capsys, "plot", "pipeline", *job, *given, "--out", tmp_path / f"{name}.png")
        assert code == 0, err
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "q.csv").read_text()
    code, _, err = run(capsys, "plot", "collective", "--max-bytes", "4KiB",
                       "--out", tmp_path / "c.png")
    assert code == 0, err
    assert NODE in (tmp_path / "c.csv").read_text() and CLUSTER not in \
        (tmp_path / "c.csv").read_text()


def test_a_job_the_default_cannot_hold_is_refused_alike(capsys, tmp_path):
    """More GPUs than the cluster's 64 nodes: the same one line from predict and plot
    pipeline, naming the --nodes that hold them."""
    job = ["--model", "gpt3", "--tp", "8", "--pp", "96", "--dp", "1", "--global-batch", "96"]
    errors = []
    for argv in (["predict", *job], ["plot", "pipeline", *job, "--out", tmp_path / "x.png"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        errors.append(err)
    assert errors[0] == errors[1] and "--nodes 96" in errors[0] and CLUSTER in errors[0]


@pytest.mark.parametrize("topology", [None, NODE])
def test_a_collective_larger_than_the_topology_names_ranks(capsys, topology):
    """tpsim collective has no --nodes: more ranks than the topology holds is refused in one
    line naming --ranks and the topology's GPUs, not the topology file's levels."""
    topo = load_topology(topology or CLUSTER)
    argv = ["collective", "--op", "all-reduce", "--ranks", topo.max_ranks + 8]
    code, out, err = run(capsys, *argv, *(["--topology", topology] if topology else []))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"tpsim: error: --ranks: expected at most the {topo.max_ranks} GPUs")


@pytest.mark.parametrize("argv", [
    ["predict", "--model", "llama3-8b", "--tp", "2", "--nodes", "2", "--json"],
    ["search", "--model", "gpt3-125m", "--gpus", "8", "--global-batch", "8", "--nodes", "2",
     "--top", "1", "--json"],
])
def test_a_job_given_nodes_runs_on_the_cluster(capsys, argv):
    """--nodes sizes a network: without --topology the default is the cluster (the node has
    none, and refused --nodes on a topology the user never named)."""
    code, out, _ = run(capsys, *argv)
    assert code == 0
    doc = json.loads(out)
    inputs = doc["inputs"] if "inputs" in doc else doc
    assert inputs["topology"] == CLUSTER
    assert default_topology(2, nodes=2) == CLUSTER and default_topology(2) == NODE


def test_the_api_and_the_command_line_share_the_default_and_count_cp():
    """predict() without a topology picks the command line's default: 16 GPUs (TP 8 x CP 2, or
    TP 2 x DP 8) and a job given nodes run on the cluster (dgx-h100 refused them: CP was not
    counted, and the API defaulted to the node whatever the job)."""
    for kw in ({"tp": 8, "cp": 2}, {"tp": 2, "dp": 8}, {"tp": 2, "nodes": 2}):
        assert tpsim.predict("llama3-8b", **kw).inputs.topology == CLUSTER
    small = tpsim.predict("llama3-8b", tp=2)
    assert small.inputs.topology == NODE
    assert small.step.time_s == tpsim.predict("llama3-8b", NODE, tp=2).step.time_s
    assert tpsim.predict_layer("llama3-8b", tp=2) == tpsim.predict_layer("llama3-8b", NODE, tp=2)


def test_predict_counts_cp_in_the_jobs_gpus(capsys):
    code, out, err = run(capsys, "predict", "--model", "llama3-8b", "--tp", "8", "--cp", "2",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["inputs"]["topology"] == CLUSTER
