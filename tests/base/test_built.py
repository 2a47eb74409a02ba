"""Cluster and model objects built in code pass the loader's checks (tpsim.base.schema.check_built):
each field's type and bounds, scaled to SI, then the class's validate; an error names the class
and the field. A file's errors still name the file and its keys, the flags' the flags."""
from __future__ import annotations

import dataclasses
import math
import re

import pytest

import tpsim
from tpsim import TpsimError
from tpsim.cluster.level import Level
from tpsim.cluster.sustained import sustained
from tpsim.cluster.topology import Topology
from tpsim.spec.model import with_overrides


@pytest.fixture(scope="module")
def topo():
    return tpsim.load_topology("dgx-h100")


@pytest.mark.parametrize("field, value, says", [
    ("clock_window", "window", "Device.clock_window: expected one of"),
    ("memory_bandwidth_Bps", -1.0, "Device.memory_bandwidth_Bps: expected a number > 0"),
    ("sm_count", 0, "Device.sm_count: expected a number >= 1"),
    ("gemm_max_efficiency", 1.5, "Device.gemm_max_efficiency: expected a number <= 1"),
    ("memory_bytes", math.nan, "Device.memory_bytes: expected a finite number"),
    ("sm_count", "132", "Device.sm_count: expected an integer"),
    ("sm_count", 132.0, "Device.sm_count: expected an integer"),
    ("peak_flops", {"bf16": "x"}, "Device.peak_flops.bf16: expected a number"),
    ("peak_flops", {"bf17": 1e15}, "Device.peak_tflops.bf17: expected a dtype"),
    ("gemm_tile", [128, 256], "Device.gemm_tile: expected a non-empty tuple"),
    ("persistent_kernels", ("matmul",), "Device.persistent_kernels.matmul: expected one of"),
    ("name", None, "Device.name: expected a non-empty string"),
    ("kernel_launch_s", 1e10, "Device.kernel_launch_s: expected a finite number of magnitude "
                              "at most 1e+09"),          # 1e15 us, in seconds
])
def test_a_device_built_in_code_is_checked(topo, field, value, says):
    with pytest.raises(TpsimError, match="^tpsim API: " + re.escape(says)):
        dataclasses.replace(topo.device, **{field: value})


def test_the_bounds_are_the_files_scaled_to_si(topo):
    """gt 0 in GB/s is at least 1e-9 GB/s: 1 B/s in SI; a value inside passes and is kept."""
    with pytest.raises(TpsimError, match="memory_bandwidth_Bps: expected a number >= 1"):
        dataclasses.replace(topo.device, memory_bandwidth_Bps=0.5)
    dev = dataclasses.replace(topo.device, memory_bandwidth_Bps=2, sm_count=100)
    assert dev.memory_bandwidth_Bps == 2 and dev.sm_count == 100


def test_levels_topologies_and_models_built_in_code_are_checked(topo):
    with pytest.raises(TpsimError, match="Level.bandwidth_Bps: expected a number > 0"):
        dataclasses.replace(topo.levels[0], bandwidth_Bps=0.0)
    with pytest.raises(TpsimError, match="Efficiency.ring: expected a number <= 1"):
        dataclasses.replace(topo.levels[0].efficiency, ring=1.2)
    with pytest.raises(TpsimError, match="Topology.levels: expected a non-empty tuple"):
        topo.replaced(levels=())
    with pytest.raises(TpsimError, match="Topology.levels: expected distinct level names"):
        topo.replaced(levels=(topo.levels[0], topo.levels[0]))
    model = tpsim.load_model("gpt3-125m")
    with pytest.raises(TpsimError, match="ModelConfig.activation: expected one of gelu"):
        dataclasses.replace(model, activation="relu")
    with pytest.raises(TpsimError, match="ModelConfig.layers: expected a number > 0"):
        dataclasses.replace(model, layers=0)


def test_a_topology_built_in_code_resolves_its_levels_as_a_file_does(topo):
    """Level.kind and inter_node at their defaults: resolved by Topology.validate, which a
    topology built in code now runs (it priced with kind None before)."""
    levels = tuple(Level(lv.name, lv.size, lv.bandwidth_Bps, lv.latency_s) for lv in topo.levels)
    built = Topology("mine", "built in code", topo.device, levels)
    assert [lv.kind for lv in built.levels] == ["nvlink-domain"]
    assert built.levels[0].inter_node is False


def test_files_and_flags_keep_their_own_names(tmp_path, topo):
    text = tpsim.load_topology("dgx-h100").path
    bad = tmp_path / "t.yaml"
    bad.write_text(open(text).read().replace("clock_window: kernel", "clock_window: window"))
    with pytest.raises(TpsimError, match=r"t\.yaml: device\.clock_window: expected one of"):
        tpsim.load_topology(str(bad))
    with pytest.raises(TpsimError, match="gpt3-125m with command-line overrides: heads: expected a divisor"):
        with_overrides(tpsim.load_model("gpt3-125m"), heads=5)


def test_the_derived_devices_are_made_without_a_complaint(topo):
    """sustained() and at_clock() build devices from a checked one (the sustained one in a
    state no file states: sustained_utilisation at clock 1)."""
    h200 = tpsim.load_topology("dgx-h200")
    assert sustained(h200).device.sustained_clock == 1.0
    assert tpsim.predict("gpt3-125m", h200, tp=2).step.time_s > 0
