"""One level of a cluster's link hierarchy (:class:`Level`, innermost first in a
:class:`~tpsim.cluster.topology.Topology`) and the share of its line rate each collective
algorithm sustains (:class:`Efficiency`)."""
from __future__ import annotations

from ..base.record import record
from ..base.errors import ConfigError
from ..base.memo import value_hash
from ..base.schema import check_built, spec
from ..base.units import GB, US
from .protocol import PROTOCOLS

HOP_ALGORITHMS = ("ring", "tree", "nvls", "nvls_tree")
LEVEL_KINDS = ("nvlink-domain", "pcie", "network")


@record
class Efficiency:
    """Fraction of a link's line rate that each collective algorithm sustains."""
    ring: float = spec(gt=0, le=1, default=1.0, doc="ring algorithms (all-reduce, all-gather, ...)")
    tree: float = spec(gt=0, le=1, default=1.0, doc="double binary tree all-reduce")
    nvls: float = spec(gt=0, le=1, default=1.0, doc="in-switch reduction (NVLink SHARP)")
    hybridep: float | None = spec(gt=0, le=1, default=None, doc="HybridEP's kernels across nodes, 16 SMs or more (null: ring)")
    deepep: float | None = spec(gt=0, le=1, default=None, doc="DeepEP's normal kernels, SMs not binding (null: ring)")

    __post_init__ = check_built   # built in code: checked as the loader checks a file


@record
class Level:
    """One level of the link hierarchy: ``size`` units of the level below, joined by links."""
    name: str = spec(doc="level name, e.g. nvlink, pcie, infiniband (a label: the code reads kind)")
    size: int = spec(ge=1, doc="units of the level below joined at this level (GPUs per node "
                               "for the innermost level, nodes for the next)")
    bandwidth_Bps: float = spec("bandwidth_GBps", scale=GB, gt=0,
                                doc="per device (innermost level) or per NIC, per direction, GB/s")
    latency_s: float = spec("latency_us", scale=US, ge=0,
                            doc="per-hop latency of a pipelined step, us: every algorithm/"
                                "protocol pair hop_latency_us does not list, and kernels outside "
                                "NCCL (the custom all-reduce's barrier)")
    kind: str | None = spec(
        default=None,
        doc="what joins the units: nvlink-domain (GPU-to-GPU NVLink, directly or through "
            "NVSwitches: a DGX's 8 GPUs, or a GB200/GB300 NVL72 rack's 72 across its 18 trays), "
            "pcie (GPUs that reach each other over PCIe), network (NICs between nodes); a "
            "node is the set of devices joined by the levels below the first network level. "
            "Default: network where inter_node is true, otherwise nvlink-domain (with inter_node "
            "at its default: the innermost level nvlink-domain, every other network)")
    nics_per_node: int | None = spec(ge=1, default=None,
                                     doc="outer levels: NICs per node that carry this level's "
                                         "traffic (default: one per device)")
    efficiency: Efficiency = spec(default=Efficiency(), doc="per-algorithm fraction of line rate")
    in_switch_reduction: bool = spec(default=False,
                                     doc="the switch can reduce (NVLink SHARP / NVLS on NVSwitch 3)")
    hop_latencies: dict[str, dict[str, float]] | None = spec(
        "hop_latency_us", scale=US, ge=0, default=None,
        doc="per-hop latency by algorithm (ring, tree, nvls, nvls_tree) and protocol (simple, "
            "ll, ll128), us: NCCL tuning.cc hwLat for this link type; a pair not listed takes "
            "latency_us; nvls is paid once per collective, not per hop")
    nvls_step_s: float = spec("nvls_step_us", scale=US, ge=0, default=0.0,
                               doc="in_switch_reduction: fixed cost of one NVLS pipeline step "
                                   "(flag wait and switch round trip), us")
    nvls_chunk_bytes: int = spec(ge=1, default=131072, doc="in_switch_reduction: largest NVLS "
                                 "chunk, bytes (NCCL_NVLS_CHUNKSIZE)")
    nvls_channels: int = spec(ge=1, default=16, doc="in_switch_reduction: channels (CTAs) NVLS "
                              "runs on (NCCL_NVLS_NCHANNELS)")
    nvls_fixed_grid: bool = spec(
        default=False,
        doc="in_switch_reduction: NVLS lays a message on a fixed grid of chunks, channel by "
            "channel (NCCL 2.18-2.19), not split evenly over its channels (2.20+); --nccl")
    ll_busbw_caps_Bps: tuple[float, ...] | None = spec(
        "ll_max_busbw_GBps", scale=GB, gt=0, default=None,
        doc="network levels: LL's bus bandwidth cap across 2 nodes, then more, GB/s (NCCL "
            "tuning.cc llMaxBws by host CPU: LL crosses the network through host memory)")
    ll_host_latency_s: float = spec(
        "ll_host_latency_us", scale=US, ge=0, default=0.0,
        doc="network levels: latency an LL hop across this level pays beyond NCCL's hwLat, us "
            "(LL's buffers are in host memory, polled across PCIe: 0 on NCCL's hosts; fit it)")
    tree_busbw_caps_Bps: dict[str, tuple[float, ...]] | None = spec(
        "tree_max_busbw_GBps", scale=GB, gt=0, default=None,
        doc="network levels: a tree all-reduce's bus bandwidth cap by protocol (simple, ll128), 2 "
            "nodes then more, GB/s (NCCL tuning.cc: tree channels x perChMaxTree(LL128)Bws)")
    inter_node: bool | None = spec(default=None,
                                   doc="a hop at this level leaves the node through its NICs: "
                                       "true exactly for kind network; default: from kind, or "
                                       "every level but the innermost where kind is not given")
    custom_two_shot_sync_s: float = spec(
        "custom_two_shot_sync_us", scale=US, ge=0, default=0.0,
        doc="vLLM's two-shot custom all-reduce: fixed cost its second pass adds (the barrier "
            "that makes the reduce-scatter's stores visible to the peers, and the pass's start), "
            "us")
    custom_two_shot_efficiency: float = spec(
        gt=0, le=1, default=1.0,
        doc="vLLM's two-shot custom all-reduce: fraction of bandwidth x efficiency.ring its two "
            "passes sustain")

    def validate(self, source: str, path: str) -> None:
        if self.kind is not None and self.kind not in LEVEL_KINDS:
            raise ConfigError(source, f"{path}.kind", f"one of {LEVEL_KINDS}", self.kind)
        for algo, protos in (self.hop_latencies or {}).items():
            if algo not in HOP_ALGORITHMS:
                raise ConfigError(source, f"{path}.hop_latency_us.{algo}",
                                  f"an algorithm in {HOP_ALGORITHMS}")
            for proto in protos:
                if proto not in PROTOCOLS:
                    raise ConfigError(source, f"{path}.hop_latency_us.{algo}.{proto}",
                                      f"a protocol in {PROTOCOLS}")
        if set(self.tree_busbw_caps_Bps or {}) - {"simple", "ll128"}:
            raise ConfigError(source, f"{path}.tree_max_busbw_GBps", "keys simple, ll128")

    def hop_latency_s(self, algorithm: str, protocol: str) -> float:
        """Latency of one step of ``algorithm`` with ``protocol`` across this level, s."""
        return (self.hop_latencies or {}).get(algorithm, {}).get(protocol, self.latency_s)

    __hash__ = value_hash
    __post_init__ = check_built
