"""Rates below 1 TFLOP/s (a CPU's) keep three significant digits; a GPU's print as before."""
from tpsim.base.units import tflops_text


def test_gpu_rates_keep_one_decimal():
    assert tflops_text(312.04) == "312.0" and tflops_text(1.0) == "1.0" and tflops_text(0) == "0.0"


def test_cpu_rates_keep_three_digits():
    assert tflops_text(0.046312) == "0.0463" and tflops_text(0.5) == "0.5"
