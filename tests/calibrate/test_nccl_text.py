"""nccl-tests' own text output read as measured points: the out-of-place size and time of
every row, published tables as nccl-tests printed them (tests/data/nccl_tests_output)."""
import pytest
from tests.conftest import REPO

from tpsim.base.errors import ConfigError
from tpsim.calibrate.measured import read_measured
from tpsim.cli import main
from tpsim.cost.collectives import bus_factor

DATA = REPO / "tests" / "data" / "nccl_tests_output"


def test_out_of_place_time_of_every_row():
    """all_reduce_perf, 8 GPUs: 1 KiB in 5.45 us out of place (5.35 in place) .. 32 KiB in
    7.45 us; busbw = size / time x 2(n-1)/n reproduces the table's 7.70 GB/s at 32 KiB."""
    points = read_measured(DATA / "all_reduce_8gpu_mscclpp507.txt", "all-reduce")
    assert [s for s, _ in points] == [1024, 2048, 4096, 8192, 16384, 32768]
    assert points[0][1] == pytest.approx(5.45e-6) and points[-1][1] == pytest.approx(7.45e-6)
    size, t = points[-1]
    assert size / t * bus_factor("all-reduce", 8) / 1e9 == pytest.approx(7.70, abs=0.01)


def test_zero_byte_rows_are_skipped():
    """reduce_scatter_perf prints 0-byte rows for counts below the ranks: nothing moved."""
    points = read_measured(DATA / "reduce_scatter_2x4_issue128.txt", "reduce-scatter")
    assert points == [(128, pytest.approx(32.31e-6)), (256, pytest.approx(24.01e-6))]


def test_lines_around_the_table_are_skipped_and_wrong_rows_refused(tmp_path):
    table = (DATA / "all_reduce_8gpu_mscclpp507.txt").read_text().splitlines()
    noisy = ["# nThread 1 nGpus 8 minBytes 1024 maxBytes 32768 step: 2(factor)", "#",
             "host:1:2 [0] NCCL INFO comm 0x1 rank 0 nranks 8 - Init COMPLETE", *table,
             "# Out of bounds values : 0 OK", "# Avg bus bandwidth    : 3.1 ", "#"]
    (tmp_path / "noisy.txt").write_text("\n".join(noisy) + "\n")
    assert read_measured(tmp_path / "noisy.txt", "all-reduce") == \
        read_measured(DATA / "all_reduce_8gpu_mscclpp507.txt", "all-reduce")
    cells = table[4].split()
    cells[8] = "3"                                  # the out-of-place #wrong column
    (tmp_path / "wrong.txt").write_text("\n".join(table[:4] + ["  ".join(cells)]) + "\n")
    with pytest.raises(ConfigError, match=r"line 5: #wrong"):
        read_measured(tmp_path / "wrong.txt", "all-reduce")


def test_plot_collective_overlays_nccl_tests_output(tmp_path, capsys):
    code = main(["plot", "collective", "--topology", "dgx-a100", "--ranks", "8", "--max-bytes",
                 "64KiB", "--measured", str(DATA / "all_reduce_8gpu_mscclpp507.txt"),
                 "--out", str(tmp_path / "m.png")])
    assert code == 0, capsys.readouterr().err
    text = (tmp_path / "m.csv").read_text().splitlines()
    measured = [ln for ln in text if ",measured," in ln]
    assert len(measured) == 6
