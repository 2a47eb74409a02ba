"""A cluster as data: one device type and a hierarchy of link levels, innermost first.

Loaded from ``topologies/*.yaml`` (or any path) into frozen dataclasses, converted to SI once;
fields documented in ``topologies/README.md`` (``python -m tpsim.report.schema_docs``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path

from ..base.record import record
from ..base.errors import ConfigError
from ..base.memo import Memo, value_hash
from ..spec.parallel import Group
from ..spec.precision import QUANTIZED_BYTES
from .placement import LevelSpan, Placement, spans  # noqa: F401 (LevelSpan: re-exported)
from .attention import AttentionKernel  # noqa: F401 (re-exported)
from .protocol import PROTOCOLS, SIMPLE, Protocol  # noqa: F401 (re-exported)
from .level import HOP_ALGORITHMS, LEVEL_KINDS, Efficiency, Level  # noqa: F401 (re-exported)
from ..base.schema import (check_built, from_mapping, key_at, load_yaml, shipped_files,
                           shipped_or_path, spec)
from ..base.units import GB, GiB, TERA, US

BYTES_PER_ELEMENT = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, **QUANTIZED_BYTES}
DTYPES = tuple(BYTES_PER_ELEMENT)
CLOCK_WINDOWS = ("kernel", "step")   # Device.clock_window (tpsim.cluster.sustained)
CUDA_CORE_PIPES = ("issue", "fma", "fp16", "alu", "xu", "lsu")   # tpsim.cost.mmha
DECOMPOSITIONS = ("split_k", "data_parallel", "stream_k")   # Device.gemm_decomposition (tpsim.cost.stream_k)



@record
class Device:
    """One accelerator (or CPU socket): compute peaks, memory, and kernel-level efficiencies."""
    name: str = spec(doc="device model name")
    peak_flops: dict[str, float] = spec("peak_tflops", scale=TERA, gt=0,
        doc="dense peak TFLOP/s per dtype (fp64, fp32, tf32, fp16, bf16, fp8, mxfp8, nvfp4); no sparsity")
    memory_bytes: float = spec("memory_GiB", scale=GiB, gt=0, doc="device memory as the CUDA runtime "
                               "exposes it, GiB (2^30 bytes): the total of torch.cuda.mem_get_info(), "
                               "below the vendor's figure by what the driver keeps")
    memory_bandwidth_Bps: float = spec("memory_bandwidth_GBps", scale=GB, gt=0, doc="peak memory bandwidth, GB/s")
    l2_bandwidth_Bps: float | None = spec(
        "l2_bandwidth_GBps", scale=GB, gt=0, default=None,
        doc="L2 read rate of all SMs, GB/s, as microbenchmarks measure it (--decode-attention trtllm-mmha)")
    memory_reserved_bytes: float = spec("memory_reserved_GiB", scale=GiB, ge=0, default=1.5 * GiB,
        doc="memory a training or serving process holds outside its tensors, GiB: the CUDA context "
            "with its kernel images and library workspaces (~0.5 GiB on Hopper with CUDA's lazy "
            "module loading; cuBLAS's 32 MiB workspace per stream) and NCCL's buffers (NCCL_BUFFSIZE, "
            "4 MiB, per channel, peer and protocol of each communicator, and NVLS's; NCCL "
            "environment-variable docs), ~1 GiB for Megatron's TP, PP, DP and embedding communicators")
    memory_fragmentation: float = spec(ge=0, le=1, default=0.047,
        doc="share of the bytes a step allocates and frees (activations, temporaries) the caching "
            "allocator holds but cannot hand out (PyTorch CUDA semantics docs); weights, gradient "
            "buffers, optimizer state and preallocated pools waste nothing. (max reserved - max "
            "allocated) / (max allocated - allocated) of Megatron's memory report: 0.047 in a "
            "Megatron-LM GPT 345M run (liguodongiot/llm-action)")
    memory_efficiency: float = spec(gt=0, le=1, default=0.8, doc="fraction of memory bandwidth that elementwise kernels reach")
    elementwise_element_s: dict[str, float] | None = spec(
        "elementwise_ns_per_element", scale=1e-9, ge=0, default=None,
        doc="ns of arithmetic per element of elementwise kernels, by kind; null: memory-bound")
    cast_transpose_efficiency: float | None = spec(
        gt=0, le=1, default=None, doc="the same for the fp8 cast-transpose kernels (a "
                                      "transposed write); default: memory_efficiency")
    fp8_any_layout: bool = spec(default=False, doc="FP8 GEMMs take operands in any layout "
                                "(Blackwell, compute capability 10.x: Transformer Engine's "
                                "is_non_tn_fp8_gemm_supported): one fp8 copy, no transpose")
    gemm_max_efficiency: float = spec(gt=0, le=1, default=0.8, doc="fraction of peak FLOP/s that large GEMMs reach")
    gemm_max_efficiency_fp8: float | None = spec(
        gt=0, le=1, default=None, doc="the same for fp8 and MXFP8 GEMMs (default: gemm_max_efficiency)")
    gemm_max_efficiency_fp4: float | None = spec(
        gt=0, le=1, default=None, doc="the same for NVFP4 GEMMs (default: gemm_max_efficiency_fp8)")
    gemm_half_efficiency_dim: float = spec(ge=0, default=64.0, doc="GEMM dimension m or n at which "
                                           "that dimension alone halves the efficiency (a smooth size "
                                           "curve: 0 where gemm_tile models the size effect)")
    gemm_k_half_dim: float | None = spec(ge=0, default=None,
                                         doc="the same for the inner dimension k (each output "
                                             "tile's fixed prologue and epilogue); default: "
                                             "gemm_half_efficiency_dim")
    gemm_k_half_dim_fp8: float | None = spec(ge=0, default=None, doc="the same for fp8, MXFP8 "
                                             "and NVFP4 GEMMs (default: gemm_k_half_dim)")
    gemm_memory_serial: float = spec(ge=0, default=0.0, doc="memory time of a GEMM's bytes "
                                     "past gemm_cache_MiB its arithmetic does not hide, in "
                                     "passes over them (CPUs; 0: a roofline)")
    gemm_cache_bytes: float = spec("gemm_cache_MiB", scale=GiB / 1024, ge=0, default=0.0,
                                   doc="bytes of a GEMM's operands its core's cache holds (a CPU core's L2), MiB")
    gemm_tile: tuple[int, ...] | None = spec(ge=1, default=None, doc="output tile [rows, cols] of "
                                             "the device's large GEMM kernels: null for no tile quantization")
    gemm_tile_sms: int = spec(ge=1, default=1, doc="SMs that compute one gemm_tile together (2: "
                                                   "Blackwell's CTA-pair tcgen05 MMA)")
    gemm_tiles: dict[str, float] | None = spec(ge=1, default=None, doc="the other output tiles "
        "the device's GEMM library picks among, \"RxC\": SMs computing one (tpsim.cost.gemm_tiles)")
    sm_count: int | None = spec(ge=1, default=None, doc="streaming multiprocessors: tiles run in "
                                                        "waves of sm_count / gemm_tile_sms")
    gemm_decomposition: str = spec(default="split_k", doc="how a GEMM's tiles share the SMs' last "
        "wave (tpsim.cost.stream_k): split_k, a one-wave GEMM's k loop split over the idle SMs; data_parallel, "
        "unsplit where its tiles fill half the SMs; stream_k, CUTLASS's stream-K heuristic (also a tail under half a wave)")
    cuda_core_pipes: dict[str, float] | None = spec(gt=0, default=None, doc=(
        "thread instructions a clock an SM by pipe (issue, fma, fp16, alu, xu, lsu; issue and "
        "fma required, a pipe not listed shares fma), the CUDA C++ Programming Guide's arithmetic throughput table "
        "(tpsim.cost.mmha); null: every CUDA-core instruction at the FP32 lanes' rate"))
    attention_kernels: dict[str, AttentionKernel] | None = spec(
        default=None, doc="fused attention kernels by name (flash2, flash3, triton): efficiency, "
                          "seq_half_efficiency, causal_block, causal_efficiency and the backward's; "
                          "null: priced with the GEMM efficiency of its per-head products")
    attention_kernel: str | None = spec(default=None, doc="the kernel `--attention fused` runs "
                                        "(a key of attention_kernels)")
    kernel_launch_s: float = spec("kernel_launch_us", scale=US, ge=0, default=0.0,
                                  doc="fixed time per compute kernel, us")
    host_launch_s: float = spec("host_launch_us", scale=US, ge=0, default=5e-6, doc="CPU time of "
                                "one kernel launch a C++ loop issues inside an op, us (sim.launches)")
    host_dispatch_s: float = spec("host_dispatch_us", scale=US, ge=0, default=0.0, doc="CPU time to issue one op (framework "
        "dispatch and launch call), us; an op starts no earlier than the host, issuing in program order, has issued it; 0: the host runs ahead")
    engine_dispatch_s: float = spec("engine_dispatch_us", scale=US, ge=0, default=0.0, doc=(
        "CPU time to issue one op of a serving engine's eager forward (vLLM, SGLang: inference "
        "mode, fused custom ops), us; 0: not modelled (tpsim.serving.host)"))
    comm_compute_interference: float = spec(ge=0, le=1, default=0.0, doc="fraction of a compute kernel's speed lost while a "
        "collective runs beside it; with collective_sms, a persistent GEMM's (the step's overlaps); 0: free, 1: no gain")
    collective_sms: int | None = spec(ge=1, default=None, doc="SMs an NCCL collective's kernel holds (one CTA a channel): "
        "each kernel beside it loses by its kind (tpsim.cost.interference); null: comm_compute_interference for all")
    persistent_kernels: tuple[str, ...] = spec(default=(), doc="compute kinds run as persistent kernels (gemm, attention)")
    ep_comm_slowdown: float = spec(ge=0, le=1, default=0.0, doc="fraction of an EP dispatch or combine kernel's speed lost while "
        "compute runs beside it in the merged micro-batches (tpsim.training.moe_overlap.beside); 0: not modelled")
    deepep_sm_copy_Bps: float | None = spec(
        "deepep_sm_copy_GBps", scale=GB, gt=0, default=None,
        doc="GB/s each SM of DeepEP's intranode kernel copies of all a rank sends "
            "(tpsim.cost.all_to_all), and a CTA of NCCL's p2p kernel (tpsim.cost.p2p_pipeline); null: none")
    sustained_clock: float = spec(gt=0, le=1, default=1.0, doc="share of a kernel benchmark's tensor-core rate that a "
                                  "training step sustains at the board's power limit (tpsim.cluster.sustained); 1: no drop")
    sustained_utilisation: float | None = spec(gt=0, le=1, default=None, doc="utilisation (achieved / peak at the boost "
        "clock) of the FP8 kernels that run at sustained_clock; a kernel at u runs at min(1, sustained_clock x (this / "
        "(u w))^(1/3)), w its sustained_power_16bit or 1 (tpsim.cluster.sustained); null: every kernel at sustained_clock")
    sustained_power_16bit: float = spec(gt=0, le=2, default=1.0, doc="a bf16 or fp16 tensor kernel's draw against an "
                                        "FP8 one's at the same utilisation and clock (the w of sustained_utilisation)")
    clock_window: str = spec(default="kernel", doc="what the power limit's clock follows in a training step "
        "(tpsim.cluster.sustained): kernel, each tensor kernel's own draw; step, the mean draw of a layer's compute kernels")
    collective_launch_s: float = spec("collective_launch_us", scale=US, ge=0, default=0.0,
                                      doc="fixed time per collective call (launch, setup, sync), us")
    collective_copy_Bps: float | None = spec(
        "collective_copy_bandwidth_GBps", scale=GB, gt=0, default=None,
        doc="rate at which the collective kernel streams its own input and output buffers "
            "through device memory, GB/s; null: not modelled")
    collective_protocols: dict[str, Protocol] | None = spec(
        default=None, doc="protocols NCCL may pick (simple, ll, ll128), each a mapping of "
                          "launch_us and bandwidth_fraction; null: simple only")
    collective_latency_scale: float = spec(gt=0, default=1.0, doc="multiplies every collective latency (launch, "
        "protocol start-up, per-hop and NVLS step latencies): NCCL's tuning-model latencies hold for Hopper; "
        "latency-bound protocol steps run at the SM clock, so another device scales them by Hopper's clock / its own")
    host_link_Bps: float | None = spec(
        "host_link_bandwidth_GBps", scale=GB, gt=0, default=None,
        doc="copies between this GPU's memory and its host's, per direction, GB/s (PCIe or "
            "NVLink-C2C): activation offloading's transfers; null: not known (offloading refused)")
    tdp_W: float | None = spec(gt=0, default=None, doc="board power limit (max TDP), W, from the vendor's "
                               "datasheet: the draw at full activity (tpsim.cluster.power); null: no energy figures")
    idle_W: float | None = spec(ge=0, default=None, doc="board power with no kernel running, W (nvidia-smi's "
                                "power draw of an idle GPU); null: 0.1 x tdp_W")

    __hash__ = value_hash      # by value, once: its dicts leave it unhashable to dataclasses
    __post_init__ = check_built   # built in code: checked as the loader checks a file

    def validate(self, source: str, path: str) -> None:
        for dtype in self.peak_flops:
            if dtype not in DTYPES:
                raise ConfigError(source, f"{path}.peak_tflops.{dtype}", f"a dtype in {DTYPES}")
        pipes = self.cuda_core_pipes or {"issue": 1, "fma": 1}
        if missing := [k for k in ("issue", "fma") if k not in pipes]:
            raise ConfigError(source, f"{path}.cuda_core_pipes", "issue and fma rates beside "
                              "the others (instructions a clock an SM)",
                              hint=f"no {' nor '.join(missing)}")
        for key, names, allowed in (("collective_protocols", self.collective_protocols or {}, PROTOCOLS),
                                    ("cuda_core_pipes", self.cuda_core_pipes or {}, CUDA_CORE_PIPES),
                                    ("persistent_kernels", self.persistent_kernels, ("gemm", "attention"))):
            for name in names:
                if name not in allowed:
                    raise ConfigError(source, f"{path}.{key}.{name}", f"one of {allowed}")
        if self.gemm_decomposition not in DECOMPOSITIONS:
            raise ConfigError(source, f"{path}.gemm_decomposition", f"one of {DECOMPOSITIONS}",
                              self.gemm_decomposition)
        kernels = self.attention_kernels or {}
        if self.attention_kernel is not None and self.attention_kernel not in kernels:
            raise ConfigError(source, f"{path}.attention_kernel",
                              f"one of attention_kernels ({', '.join(kernels) or 'none listed'})",
                              self.attention_kernel)
        if kernels and self.attention_kernel is None:
            raise ConfigError(source, f"{path}.attention_kernel", "the default of attention_kernels")
        if self.gemm_tile is not None and len(self.gemm_tile) != 2:
            raise ConfigError(source, f"{path}.gemm_tile", "[rows, cols]", list(self.gemm_tile))
        if self.gemm_tiles and self.gemm_tile is None:
            raise ConfigError(source, f"{path}.gemm_tiles", "a gemm_tile beside it (the reference tile)")
        for name, sms in (self.gemm_tiles or {}).items():
            if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", name) or sms != int(sms):
                raise ConfigError(source, f"{path}.gemm_tiles.{name}",
                                  "\"RxC\" (rows x cols) keys and whole SM counts", sms)
        if self.collective_sms and self.sm_count and self.collective_sms > self.sm_count:
            raise ConfigError(source, f"{path}.collective_sms", "at most sm_count", self.collective_sms)
        if self.idle_W is not None and (self.tdp_W is None or self.idle_W >= self.tdp_W):
            raise ConfigError(source, f"{path}.idle_W", "below tdp_W", self.idle_W)
        if self.sustained_utilisation is not None and self.sustained_clock == 1:
            raise ConfigError(source, f"{path}.sustained_utilisation", "a sustained_clock below 1")
        if self.clock_window not in CLOCK_WINDOWS:
            raise ConfigError(source, f"{path}.clock_window", f"one of {CLOCK_WINDOWS}", self.clock_window)
        if self.collective_protocols and "simple" not in self.collective_protocols:
            raise ConfigError(source, f"{path}.collective_protocols",
                              "a 'simple' entry (hierarchical and NVLS algorithms run on it)")

    @property
    def protocols(self) -> dict[str, Protocol]:
        """The protocols a collective may run with; Simple alone unless the device lists more."""
        return dict(self.collective_protocols) if self.collective_protocols else {"simple": SIMPLE}

    def allocator_waste_bytes(self, churned):
        """fragmentation x ``churned``: the caching allocator's waste on a step's churned bytes."""
        return self.memory_fragmentation * churned

    def usable_bytes(self, headroom: float = 0.0, churned: float = 0.0) -> float:
        """(memory - reserved) (1 - headroom) - fragmentation x ``churned``: what tensors may take."""
        room = max(self.memory_bytes - self.memory_reserved_bytes, 0.0)
        return room * (1 - headroom) - self.allocator_waste_bytes(churned)

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; a clear error when the device does not list it."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            have = ", ".join(sorted(self.peak_flops))
            raise ConfigError("--dtype", "", f"a dtype this device lists ({have})", dtype) from None


@record
class Topology:
    name: str = spec(doc="short name, used by --topology")
    description: str = spec(doc="one line shown by `tpsim topologies`")
    device: Device = spec(doc="the device every rank runs on")
    levels: tuple[Level, ...] = spec(doc="link levels, innermost first")
    pue: float = spec(ge=1, le=10, default=1.2,
                      doc="the data centre's power usage effectiveness, facility / IT energy, by "
                          "which energy figures multiply the GPUs' draw (1.2 assumed: hyperscalers "
                          "~1.1, Google's fleet 1.10 in 2023; Uptime Institute's 2023 mean 1.58)")
    path: str = dataclasses.field(default="", init=False, compare=False)
    _placements: Memo = dataclasses.field(default_factory=lambda: Memo("placements", 4096),
                                          init=False, compare=False, repr=False)

    __hash__ = value_hash      # by value (the memos' keys), computed once per topology
    __post_init__ = check_built

    def replaced(self, **changes) -> "Topology":
        """This topology with ``changes`` (dataclasses.replace), its file path kept: a
        topology resized, re-released or priced at another clock still names its file."""
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "path", self.path)
        return new

    def validate(self, source: str, path: str) -> None:
        if self.levels[0].nics_per_node is not None:
            raise ConfigError(source, key_at(path, "levels[0].nics_per_node"),
                              "no NICs on the innermost level (it joins devices directly)")
        names = [lv.name for lv in self.levels]
        if len(set(names)) != len(names):
            raise ConfigError(source, key_at(path, "levels"), "distinct level names", names)
        resolved = []     # the defaults (Level.kind, inter_node) resolved on copies: a Level
        for i, lv in enumerate(self.levels):     # shared by two topologies may sit at two depths
            leaves = lv.inter_node if lv.inter_node is not None else (
                lv.kind == "network" if lv.kind is not None else i > 0)
            kind = lv.kind or ("network" if leaves else "nvlink-domain")
            if leaves != (kind == "network"):
                raise ConfigError(source, key_at(path, f"levels[{i}].inter_node"),
                                  f"{kind == 'network'} for a level of kind {kind}", leaves)
            resolved.append(lv if (lv.inter_node, lv.kind) == (leaves, kind) else copy.copy(lv))
            object.__setattr__(resolved[-1], "inter_node", leaves)
            object.__setattr__(resolved[-1], "kind", kind)
        object.__setattr__(self, "levels", tuple(resolved))
        flags = [lv.inter_node for lv in self.levels]
        if flags[0] or flags != sorted(flags):
            raise ConfigError(source, key_at(path, "levels"), "intra-node levels first (inter_node false), "
                              "then the levels between nodes", flags)

    @property
    def max_ranks(self) -> int:
        return math.prod(lv.size for lv in self.levels)

    @property
    def devices_per_node(self) -> int:
        """Devices joined without leaving the node: the product of the intra-node levels'
        sizes. A node is what no NIC divides: a DGX's 8 GPUs, an NVL72 rack's 72 (its 4-GPU
        trays are chassis, not a level: each GPU's NVLink ports reach the rack's NVSwitches
        alike), so TP/EP groups of up to this many ranks stay on NVLink, ``--nodes`` counts
        racks there, and the tp_spans_nodes notice speaks of TP beyond the rack."""
        return math.prod(lv.size for lv in self.levels if not lv.inter_node)

    @property
    def network(self) -> Level | None:
        """The innermost level between nodes, or None for a single node."""
        return next((lv for lv in self.levels if lv.inter_node), None)

    def place(self, group: Group | int) -> Placement:
        """The levels a process group spans; an int is a group of that many consecutive ranks.

        For each level k, with ``below`` devices in one unit of the level below: the group
        touches ``units`` distinct units below (``rank // below``), at most ``fanout`` of them
        inside one unit of level k, with at most ``devices_per_unit`` members in each. A unit's
        ``ports`` out of level k are its devices (innermost level: one, a device's own links),
        or its NICs (``nics_per_node``), capped at the members using them; when the job runs
        more ranks in the unit than this group has there (a strided group: every data-parallel
        group of a node communicates at once), the groups share the NICs evenly:
        ports = min(nics, members, nics * members / job ranks in the unit).
        """
        if isinstance(group, int) and not isinstance(group, bool):
            group = Group("ranks", group) if group >= 1 else group
        if not isinstance(group, Group) or group.size < 1:
            raise ConfigError("--ranks", "", "a positive integer", getattr(group, "size", group))
        key = (group.size, group.stride, group.first, group.world)
        hit = self._placements.get(key, self._place, group)
        return Placement(group, hit.spans) if hit.group != group else hit

    def _place(self, group: Group) -> Placement:
        last = group.first + (group.size - 1) * group.stride
        if last >= self.max_ranks or group.world > self.max_ranks:
            raise ConfigError(self.path or self.name, "levels",
                              f"at most {self.max_ranks} ranks in this topology",
                              max(last + 1, group.world))
        return Placement(group, spans(self.levels, group))


_PACKAGE = Path(__file__).resolve().parents[1]     # tpsim/


def shipped_dir() -> Path:
    """topologies/ in a source checkout, or its copy inside an installed wheel."""
    for d in (_PACKAGE / "_topologies", _PACKAGE.parent / "topologies"):
        if d.is_dir():
            return d
    return _PACKAGE.parent / "topologies"


def shipped_topologies() -> dict[str, Path]:
    return shipped_files(shipped_dir())


_FILES = Memo("topology files", 64, lru=True)


def load_topology(name_or_path: str | Path) -> Topology:
    """Load a shipped topology by name, or any topology YAML by path: read once per version of
    the file (:meth:`tpsim.base.memo.Memo.load`), the same frozen object after that."""
    path = shipped_or_path(name_or_path, shipped_topologies(), "--topology", "topology")
    return _FILES.load(path, _read)


def _read(path: Path) -> Topology:
    topo = from_mapping(Topology, load_yaml(path), str(path))
    object.__setattr__(topo, "path", str(path))
    return topo
