"""Topology loading: every shipped file loads, units convert once, bad files fail in one line."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim.cli import main
from tpsim.base.errors import ConfigError
from tpsim.cluster.topology import load_topology, shipped_topologies

from tests.conftest import REPO, make_topology

REQUIRED = {"dgx-a100", "dgx-h100", "dgx-h200", "dgx-a100-hdr-cluster", "dgx-h100-ndr-cluster"}


def test_shipped_set():
    names = set(shipped_topologies())
    assert REQUIRED <= names
    assert any(load_topology(n).levels[0].name == "pcie" for n in names)


@pytest.mark.parametrize("name", sorted(shipped_topologies()))
def test_every_shipped_topology_loads_and_cites_sources(name):
    topo = load_topology(name)
    assert topo.name == name
    assert topo.max_ranks >= 8
    # every number in a shipped file carries a comment (on its line or the line above) with its source
    lines = (REPO / "topologies" / f"{name}.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        value = line.split("#")[0].split(":", 1)[-1].strip()
        if re.fullmatch(r"-?[0-9.]+|\{[^}]*[0-9][^}]*\}", value):
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), \
                f"{name}.yaml:{i + 1}: a number without its source"


def test_units_convert_to_si_once():
    topo = load_topology("dgx-a100-hdr-cluster")
    nvl, ib = topo.levels
    assert nvl.bandwidth_Bps == 300e9 and nvl.latency_s == pytest.approx(2.49e-6)
    assert nvl.hop_latency_s("ring", "ll") == pytest.approx(0.6e-6)      # hop_latency_us table
    assert nvl.hop_latency_s("ring", "simple") == pytest.approx(3.4e-6)
    assert nvl.hop_latency_s("nvls", "simple") == nvl.latency_s           # not listed: latency_us
    assert ib.bandwidth_Bps == 25e9            # 200 Gb/s HDR / 8
    assert topo.device.peak("bf16") == 312e12
    assert topo.device.memory_bytes == 79.25 * 2**30    # memory_GiB: what CUDA exposes
    assert topo.max_ranks == 8 * 64


@pytest.mark.parametrize("name, exposed_gib", [("dgx-a100", 79.25), ("dgx-h100", 79.11),
                                               ("dgx-h200", 139.80), ("pcie-l40s", 44.39)])
def test_memory_is_what_the_runtime_exposes_less_the_reserve(name, exposed_gib):
    """The vendors' "80 GB", "141 GB" and "48 GB" are binary: each device exposes just under
    that many GiB (PyTorch's total capacity), far above the decimal figure; the tensors get
    (exposed - 1.5 GiB) x (1 - headroom), less 0.047 of the bytes a step churns."""
    dev = load_topology(name).device
    assert dev.memory_bytes == exposed_gib * 2**30
    vendor_gb = {"dgx-a100": 80, "dgx-h100": 80, "dgx-h200": 141, "pcie-l40s": 48}[name]
    ecc = 15 / 16 if name == "pcie-l40s" else 1       # GDDR6's ECC keeps 1/16; HBM's is inline
    assert 0 < vendor_gb * ecc - exposed_gib < 1.5     # GiB, less what the driver keeps
    assert dev.memory_reserved_bytes == 1.5 * 2**30 and dev.memory_fragmentation == 0.047
    usable = (exposed_gib - 1.5) * 2**30
    assert dev.usable_bytes() == pytest.approx(usable, rel=1e-15)
    assert dev.usable_bytes(0.1) == pytest.approx(usable * 0.9, rel=1e-15)
    assert dev.usable_bytes(0.1, 2**30) == pytest.approx(usable * 0.9 - 0.047 * 2**30, rel=1e-15)


def test_placement_fills_a_node_first():
    topo = load_topology("dgx-h100-ndr-cluster")
    (nvl,) = topo.place(8).spans
    assert nvl.fanout == 8
    nvl, ib = topo.place(16).spans
    assert (ib.units, ib.devices_per_unit, ib.ports) == (2, 8, 8)
    assert ib.unit_bandwidth_Bps == 8 * 50e9


GOOD = {
    "name": "t", "description": "d",
    "device": {"name": "x", "peak_tflops": {"bf16": 1.0}, "memory_GiB": 1, "memory_bandwidth_GBps": 1},
    "levels": [{"name": "l0", "size": 2, "bandwidth_GBps": 1, "latency_us": 1}],
}


def _bad(mutate):
    import copy
    d = copy.deepcopy(GOOD)
    mutate(d)
    return d


BAD_FILES = [
    ("missing key", _bad(lambda d: d["levels"][0].pop("bandwidth_GBps")), "levels[0].bandwidth_GBps"),
    ("mistyped key", _bad(lambda d: d["levels"][0].update(bandwith_GBps=1)), "levels[0].bandwith_GBps"),
    ("zero bandwidth", _bad(lambda d: d["levels"][0].update(bandwidth_GBps=0)), "levels[0].bandwidth_GBps"),
    ("negative bandwidth", _bad(lambda d: d["levels"][0].update(bandwidth_GBps=-5)), "bandwidth_GBps"),
    ("non-numeric", _bad(lambda d: d["device"].update(memory_GiB="lots")), "device.memory_GiB"),
    ("bool is not a number", _bad(lambda d: d["levels"][0].update(latency_us=True)), "latency_us"),
    ("unknown dtype", _bad(lambda d: d["device"]["peak_tflops"].update(fp64x=1)), "peak_tflops.fp64x"),
    ("size not an integer", _bad(lambda d: d["levels"][0].update(size=2.5)), "levels[0].size"),
    ("NICs on the innermost level", _bad(lambda d: d["levels"][0].update(nics_per_node=1)),
     "nics_per_node"),
    ("efficiency above one", _bad(lambda d: d["levels"][0].update(efficiency={"ring": 1.5})),
     "efficiency.ring"),
    ("no levels", _bad(lambda d: d.update(levels=[])), "levels"),
    ("a collective holding more SMs than the device has",
     _bad(lambda d: d["device"].update(sm_count=132, collective_sms=133)), "device.collective_sms"),
    ("a clock window tpsim does not know", _bad(lambda d: d["device"].update(clock_window="bogus")),
     "device.clock_window"),
    ("a negative CUDA-core pipe rate",
     _bad(lambda d: d["device"].update(cuda_core_pipes={"issue": 128, "fma": -1})),
     "device.cuda_core_pipes.fma"),
    ("no issue rate among the CUDA-core pipes",
     _bad(lambda d: d["device"].update(cuda_core_pipes={"fma": 128, "alu": 64})),
     "device.cuda_core_pipes: expected issue and fma rates beside the others (instructions a "
     "clock an SM); no issue"),
    ("a CUDA-core pipe tpsim does not know",
     _bad(lambda d: d["device"].update(cuda_core_pipes={"issue": 128, "fma": 128, "tensor": 1})),
     "device.cuda_core_pipes.tensor"),
]


@pytest.mark.parametrize("case,data,key", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_topology_file_one_line_exit_2(case, data, key, write_yaml, capsys):
    path = write_yaml(data)
    assert main(["collective", "--topology", str(path), "--ranks", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and key in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError):
        load_topology(path)


def test_exponent_without_a_dot_is_a_number(write_yaml):
    """YAML 1.1 reads `1e6` as a string; tpsim takes it as the number a person meant."""
    import copy
    d = copy.deepcopy(GOOD)
    d["levels"][0]["bandwidth_GBps"] = "1e6"
    assert load_topology(write_yaml(d)).levels[0].bandwidth_Bps == 1e6 * 1e9


def test_invalid_yaml(write_yaml, capsys):
    path = write_yaml("name: [unclosed\n  levels: {\n")
    assert main(["collective", "--topology", str(path)]) == 2
    err = capsys.readouterr().err
    assert "valid YAML" in err and str(path) in err and err.count("\n") == 1


def test_yaml_that_is_not_a_mapping(write_yaml, capsys):
    assert main(["collective", "--topology", str(write_yaml("- just\n- a list\n"))]) == 2
    assert "mapping" in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main(["collective", "--topology", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["collective", "--topology", "dgx-a1000"], "dgx-a100"),                 # lists the choices
    (["collective", "--topology", "dgx-a100", "--ranks", "9"], "--ranks: expected at most the 8 GPUs"),
    (["collective", "--topology", "dgx-a100", "--ranks", "0"], "positive"),
    (["collective", "--topology", "dgx-a100", "--bytes", "64QB"], "--bytes"),
    (["collective", "--topology", "dgx-a100", "--bytes", "-1"], "--bytes"),
    (["collective", "--topology", "dgx-a100", "--bytes", "0.5"], "whole number"),
    (["collective", "--topology", "dgx-a100", "--algo", "nvls"], "ring"),
    (["collective", "--topology", "dgx-a100", "--ranks", "eight"], "--ranks"),
    (["collective", "--op", "alltogether"], "--op"),
    (["collective", "--op", "all-to-all", "--protocol", "ll"], "simple for the p2p"),
])
def test_bad_flags_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_collective_cli_does_not_import_torch_matplotlib_or_networkx():
    code = ("import sys, io, contextlib; from tpsim.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['collective', '--topology', 'dgx-a100'])\n"
            "import tpsim\n"
            "bad = [m for m in ('torch', 'matplotlib', 'networkx') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_collective_sweep_table_and_json(capsys):
    import json
    assert main(["collective", "--topology", "dgx-h100", "--ranks", "8", "--sweep"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    assert lines[0].split()[:5] == ["size", "bytes", "time_us", "algbw_GBps", "busbw_GBps"]
    assert len(lines) == 1 + 24                       # 1 KiB .. 8 GiB, powers of two
    assert main(["collective", "--topology", "dgx-h100", "--sweep", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 24 and rows[0]["size_bytes"] == 1024 and rows[-1]["size_bytes"] == 8 * 2**30
    assert {"time_us", "algbw_GBps", "busbw_GBps", "algorithm"} <= set(rows[0])


@settings(max_examples=300, deadline=None)
@given(first=st.integers(0, 500), stride=st.sampled_from([1, 2, 3, 4, 5, 8, 16, 24, 64, 128]),
       n=st.integers(1, 300), unit=st.sampled_from([1, 2, 3, 4, 7, 8, 16, 64]),
       size=st.sampled_from([1, 2, 3, 4, 8, 16, 64]))
def test_placement_counts_equal_counting_every_rank(first, stride, n, unit, size):
    """The arithmetic behind Topology.place against counting the ranks first + i*stride one by
    one: units touched, the fullest unit, the most units inside one unit of the level above."""
    from tpsim.cluster.placement import _unit_counts, _units_per_unit
    per: dict[int, int] = {}
    for r in range(first, first + n * stride, stride):
        per[r // unit] = per.get(r // unit, 0) + 1
    above: dict[int, int] = {}
    for u in per:
        above[u // size] = above.get(u // size, 0) + 1
    assert _unit_counts(first, stride, n, unit) == (len(per), max(per.values()))
    assert _units_per_unit(first, stride, n, unit, size) == max(above.values())


def test_placing_a_billion_ranks_takes_no_time():
    """No rank is visited: a 2^30-rank group is placed as fast as an 8-rank one."""
    import time
    topo = make_topology([{"name": "nvlink", "size": 8, "bandwidth_GBps": 450, "latency_us": 1},
                          {"name": "ib", "size": 2**27, "bandwidth_GBps": 50, "latency_us": 5,
                           "nics_per_node": 8}])
    t0 = time.process_time()
    nvl, ib = topo.place(2**30).spans
    assert time.process_time() - t0 < 0.5
    assert (nvl.fanout, ib.units, ib.fanout, ib.devices_per_unit) == (8, 2**27, 2**27, 8)


def test_h100_triton_attention_is_a100s_scaled_by_flash2():
    """dgx-h100's FlashAttention-in-Triton kernel, timed on A100 only, is dgx-a100's times the
    two devices' FlashAttention-2 ratio per head dim, forward and backward, its other terms
    A100's; the clusters carry their node's kernels."""
    a100, h100 = (load_topology(t).device.attention_kernels for t in ("dgx-a100", "dgx-h100"))
    for d, eff in h100["triton"].efficiency.items():
        ratio = h100["flash2"].efficiency[d] / a100["flash2"].efficiency[d]
        assert eff == pytest.approx(a100["triton"].efficiency[d] * ratio, abs=5e-4)
        assert h100["triton"].backward_efficiency[d] == pytest.approx(
            a100["triton"].backward_efficiency[d] * ratio, abs=5e-4)
    for term in ("seq_half_efficiency", "causal_efficiency", "causal_block",
                 "backward_causal_efficiency", "backward_causal_block"):
        assert getattr(h100["triton"], term) == getattr(a100["triton"], term)
    for node in ("dgx-h100", "dgx-a100"):
        cluster = {"dgx-h100": "dgx-h100-ndr-cluster", "dgx-a100": "dgx-a100-hdr-cluster"}[node]
        assert (load_topology(cluster).device.attention_kernels["triton"]
                == load_topology(node).device.attention_kernels["triton"])
