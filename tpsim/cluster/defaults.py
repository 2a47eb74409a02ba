"""The topology every command runs on when ``--topology`` is not given: DGX H100 nodes. A job
that fits in one node (at most its 8 GPUs) runs on ``dgx-h100``; a larger one, or one given
``--nodes`` (the node has no network to size), on ``dgx-h100-ndr-cluster``, the same nodes on
NDR InfiniBand (a job inside one of its nodes is priced on that node's NVLink alone, as on
``dgx-h100``), which holds 64 nodes and is sized to more by ``--nodes`` (the search sizes it to
``--gpus`` itself).

``tpsim predict``, ``search``, ``infer``, ``serve``, ``collective`` and ``plot`` read it here,
each with its job's GPUs (tp x pp x dp, --gpus, --tp, --ranks); the figures that compare a
node with a cluster by design (``plot intra-vs-inter``) compare these two.
"""
from __future__ import annotations

NODE = "dgx-h100"
CLUSTER = "dgx-h100-ndr-cluster"
NODE_GPUS = 8           # GPUs of one DGX H100 node (topologies/dgx-h100.yaml)


def default_topology(gpus: int | None = None, nodes: int | None = None) -> str:
    """The shipped topology of a job of ``gpus`` GPUs run without --topology (module
    docstring); None: one node's job; ``nodes``: the job's --nodes (the cluster's, sized)."""
    return NODE if (gpus is None or gpus <= NODE_GPUS) and nodes is None else CLUSTER
