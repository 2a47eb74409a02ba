"""What the harness knows about the machine it runs on: device name, memory, a CPU's peak from
its instruction set, the software versions for the report (torch)."""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import torch

# Single-precision FLOPs per cycle of one core: SIMD lanes x 2 (a fused multiply-add) x 2 FMA
# ports (every x86 server core since Haswell issues two FMAs a cycle; Intel's optimization
# manual, AMD's Zen software optimization guides). AVX-512: 16 lanes, AVX2: 8, else SSE: 4.
FMA_PORTS = 2


def _cpuinfo() -> dict:
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_peak_flops(threads: int) -> float | None:
    """fp32 FLOP/s of ``threads`` cores from /proc/cpuinfo (SIMD width, clock); None when it
    does not say. The clock is the one reported now: a core in turbo can beat it, which the
    calibration catches (a stated peak below a measured rate is replaced)."""
    info = _cpuinfo()
    flags, mhz = info.get("flags", "").split(), info.get("cpu MHz")
    if not flags or not mhz:
        return None
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= set(flags) else 4
    return threads * lanes * 2 * FMA_PORTS * float(mhz) * 1e6


def cpu_l2_bytes() -> float | None:
    """One core's level-2 cache, bytes (sysfs, as lscpu reads it); None when it does not say."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return float(size[:-1]) * {"K": 2**10, "M": 2**20}[size[-1]]
        except (OSError, ValueError, KeyError, IndexError):
            return None
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {_cpuinfo().get('model name') or platform.processor() or platform.machine()}"


def memory_GiB(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return kb * 1024 / 2**30 / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except (OSError, ValueError, IndexError):
        return 1.0


def versions(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "host": platform.node()}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        v = torch.cuda.nccl.version()
        env["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        env["driver"] = _nvidia_driver()
    return env


def _nvidia_driver() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0]
    except Exception:                                        # noqa: BLE001
        return "unknown"


def shipped_peak(name: str, dtype: str) -> tuple[float, str] | None:
    """(FLOP/s, topology) of a shipped topology whose device model (``H100`` of
    ``H100-SXM5-80GB``) appears in ``name``: its datasheet peak for ``dtype``."""
    from tpsim.cluster.topology import load_topology, shipped_topologies
    for stem in shipped_topologies():
        dev = load_topology(stem).device
        model = dev.name.split("-")[0]
        if model and model in name and dtype in dev.peak_flops:
            return dev.peak_flops[dtype], stem
    return None


def pin_to_cores(local_rank: int, local: int) -> list[int] | None:
    """Give each local rank its own share of this process's allowed cores (rank i: the i-th
    slice), so that two ranks never share a core while another idles; None where the OS cannot
    pin or there are fewer cores than ranks. Returns the cores this rank got."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    per = len(cores) // local
    if per < 1:
        return None
    mine = cores[local_rank * per:(local_rank + 1) * per]
    os.sched_setaffinity(0, mine)
    return mine


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_MAX_BYTES = 32 * 2**20     # the largest mmap threshold glibc takes on 64-bit systems
KEEP_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Keep the memory the process frees for its next allocations, as PyTorch's CUDA caching
    allocator keeps GPU memory: glibc otherwise maps each tensor above its mmap threshold
    afresh and trims the heap's top, and the OS zero-fills every new page on its first touch
    (on the validation guest 3.2 us a 4 KiB page, ~6x a warm copy: a backward's fresh
    score-sized tensors cost 5-15% of an attention layer). tpsim prices kernels on warm
    memory. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX_BYTES)
                    and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    except (OSError, AttributeError):
        return False
