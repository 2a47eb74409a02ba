"""FlashAttention in Triton (llm-foundry's ``attn_impl: triton``) against its published timings.

    python bench/triton_attention_published.py

The kernel llm-foundry v0.3.0 runs is its copy of flash-attention's ``flash_attn_triton.py``
(Tri Dao, Triton's pre-MLIR compiler: 128 x 128 tiles, fp32 accumulators, a backward autotuned
between one program per (batch, head) and one per key block with fp32 atomic adds of dQ).
xformers pull request #479 ("Add Triton Flash Attention", merged 2022-12-06) wrapped the same
file as its ``tritonflashatt`` operator and posted its forward and backward times on their own
(``benchmark_mem_eff_attention.py``, the "optimized" column), batch 1-2, 160 heads of 128,
seq 4096 and 8192, with and without the causal mask: tests/data/published_compute/
attention_triton_xformers.csv (its README says why the GPU is an A100).

dgx-a100's ``triton`` kernel is fitted here on those rows alone, with scipy, in tpsim's own
pricing (tpsim.sim.price.kernel_time): the forward's efficiency, the backward's, and
``seq_half_efficiency`` on the plain rows; ``causal_efficiency`` and ``causal_block`` on the
causal forward rows, their ``backward_*`` on the causal backward ones. Head dim 64 has no timing of this kernel: each pass's efficiency is d = 128's
times the ratio of d = 64 to d = 128 of the nearest measured Triton FlashAttention, the
"FlashAttention Triton" bars of FlashAttention-2's A100 figure without the mask (attention.csv's
``triton-ops`` rows: OpenAI's ``triton.ops.flash_attention``, which that figure's script
imports, not this kernel), at the lengths d = 128's efficiency is fitted at here (4k and 8k:
1.053). Over all the bars' lengths, 512-16k, the ratio is 1.099: d = 64 gains most at short
lengths (1.15-1.20 at 512-1k), where the two head dims' bars ramp apart, a length term
``efficiency`` does not hold (tpsim has one ``seq_half_efficiency`` for both).
dgx-h100's is derived, per head dim and pass: A100's efficiency times
the two devices' FlashAttention-2 ratio (no H100 timing of this kernel was found).
"""
from __future__ import annotations

import csv
import math
import statistics
import sys
from pathlib import Path

from scipy.optimize import least_squares

from tpsim.cluster.topology import AttentionKernel, load_topology
from tpsim.layer.ops import Attention
from tpsim.sim.price import kernel_time

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compute_published import ATTENTION_LOW, priced_fit  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_compute"
KERNEL = "triton"
FA_BACKWARD = 2.5   # FlashAttention's convention: the backward is 2.5 forwards


def rows(name: str = "attention_triton_xformers.csv") -> list[dict]:
    with open(DATA / name) as f:
        return list(csv.DictReader(f))


def fa_flops(b: int, s: int, heads: int, d: int, causal: bool, backward: bool) -> float:
    """FLOPs in FlashAttention's convention: forward 4 b s^2 heads d, halved when causal."""
    return 4.0 * b * s * s * heads * d / (2 if causal else 1) * (FA_BACKWARD if backward else 1)


def seconds(r: dict, device) -> float:
    """tpsim's time of one published row (a forward or a backward) on ``device``."""
    b, s, heads, d = (int(r[k]) for k in ("batch", "seq", "heads", "head_dim"))
    op = Attention(b, heads, heads, s, s, d, "bf16", r["causal"] == "1", r["pass"] == "bwd",
                   KERNEL)
    return kernel_time(op, device)


def measured_tflops(r: dict) -> float:
    b, s, heads, d = (int(r[k]) for k in ("batch", "seq", "heads", "head_dim"))
    return fa_flops(b, s, heads, d, r["causal"] == "1", r["pass"] == "bwd") / \
        (float(r["time_us"]) * 1e-6) / 1e12


def with_kernel(device, kernel: AttentionKernel):
    import dataclasses
    return dataclasses.replace(device, attention_kernels={**device.attention_kernels,
                                                          KERNEL: kernel})


def _residuals(kernel_of, table: list[dict], device):
    def f(x):
        dev = with_kernel(device, kernel_of(x))
        return [math.log(float(r["time_us"]) * 1e-6 / seconds(r, dev)) for r in table]
    return f


def fit(device) -> AttentionKernel:
    """The kernel's terms from the published rows (see the module docstring)."""
    data = rows()
    plain = [r for r in data if r["causal"] == "0" and r["role"] == "fit"]
    causal = [r for r in data if r["causal"] == "1" and r["role"] == "fit"]
    plain_k = lambda x: AttentionKernel({"128": x[0]}, {"128": x[1]}, x[2])  # noqa: E731
    p = least_squares(_residuals(plain_k, plain, device), [0.4, 0.3, 100.0],
                      bounds=([0.01, 0.01, 0.0], [1.0, 1.0, 4096.0])).x
    e_f, e_b, half = round(float(p[0]), 3), round(float(p[1]), 3), float(round(p[2]))
    causal_terms = []
    for backward in ("fwd", "bwd"):
        table = [r for r in causal if r["pass"] == backward]
        one = lambda y: AttentionKernel({"128": e_f}, {"128": e_b}, half,  # noqa: E731
                                        causal_block=y[1], causal_efficiency=y[0])
        c = least_squares(_residuals(one, table, device), [0.9, 100.0],
                          bounds=([0.1, 0.0], [1.0, 4096.0])).x
        causal_terms.append((round(float(c[0]), 3), float(round(c[1]))))
    (ce_f, cb_f), (ce_b, cb_b) = causal_terms
    ratio = head_dim_ratio(device, half)
    return AttentionKernel({"64": round(e_f * ratio, 3), "128": e_f},
                           {"64": round(e_b * ratio, 3), "128": e_b}, half, cb_f, ce_f,
                           cb_b, ce_b)


def fit_lengths() -> set[str]:
    """The sequence lengths of this kernel's own rows, which d = 128's efficiency is fitted on."""
    return {r["seq"] for r in rows()}


def figure_efficiency(device, half: float, d: int) -> float:
    """The FlashAttention-2 figure's Triton bars without the mask at head dim ``d`` and the
    lengths of :func:`fit_lengths`, as one efficiency (both passes) at ``seq_half_efficiency``
    ``half``: the one minimising the priced error (compute_published's :func:`priced_fit`, every
    bar priced at each trial efficiency)."""
    figure = [r for r in rows("attention.csv") if r["kernel"] == "triton-ops"
              and r["head_dim"] == str(d) and r["causal"] == "0" and r["seq"] in fit_lengths()]

    def priced(r: dict, dev) -> float:
        s, b, heads = int(r["seq"]), int(r["tokens"]) // int(r["seq"]), 2048 // d
        t = sum(seconds({"batch": b, "seq": s, "heads": heads, "head_dim": d, "causal": "0",
                         "pass": p}, dev) for p in ("fwd", "bwd"))
        return fa_flops(b, s, heads, d, False, False) * (1 + FA_BACKWARD) / t / 1e12

    eff, _ = priced_fit([float(r["tflops"]) for r in figure], lambda e: [
        priced(r, with_kernel(device, AttentionKernel({str(d): e}, None, half)))
        for r in figure], ATTENTION_LOW)
    return eff


def head_dim_ratio(device, half: float) -> float:
    """Head dim 64's efficiency over 128's, both passes: the figure's Triton kernel's ratio,
    the one pair of head dims measured for a FlashAttention in Triton, at the lengths d = 128's
    efficiency is fitted at (the module docstring)."""
    return figure_efficiency(device, half, 64) / figure_efficiency(device, half, 128)


def derived_h100(a100_kernel: AttentionKernel) -> dict[str, dict[str, float]]:
    """dgx-h100's efficiencies: A100's times FlashAttention-2's H100 / A100 ratio, per head
    dim (both kernels issue Ampere's mma.sync, the only tensor-core path pre-MLIR Triton has)."""
    a100, h100 = (load_topology(t).device.attention_kernels for t in ("dgx-a100", "dgx-h100"))
    out = {}
    for name, table in (("efficiency", a100_kernel.efficiency),
                        ("backward_efficiency", a100_kernel.backward_efficiency or {})):
        out[name] = {d: round(e * h100["flash2"].at(int(d)) / a100["flash2"].at(int(d)), 3)
                     for d, e in table.items()}
    return out


def main() -> int:
    a100 = load_topology("dgx-a100").device
    k = fit(a100)
    shipped = a100.attention_kernels[KERNEL]
    print(f"fit (A100, xformers PR #479 rows; d=64 by the FlashAttention-2 figure's Triton ratio): "
          f"efficiency {k.efficiency}, backward_efficiency {k.backward_efficiency}, "
          f"seq_half_efficiency {k.seq_half_efficiency:g}, causal (efficiency, block) forward "
          f"{k.causal()}, backward {k.causal(True)}")
    print(f"shipped dgx-a100: efficiency {shipped.efficiency}, backward_efficiency "
          f"{shipped.backward_efficiency}, seq_half_efficiency {shipped.seq_half_efficiency:g}, "
          f"causal forward {shipped.causal()}, backward {shipped.causal(True)}")
    errors = []
    print(f"\n  {'row':40s} {'measured':>8s} {'tpsim':>7s}  TFLOP/s (FlashAttention's convention)")
    for r in rows():
        meas = measured_tflops(r)
        pred = meas * float(r["time_us"]) * 1e-6 / seconds(r, a100)
        errors.append(pred / meas - 1)
        label = (f"{r['dtype']} b={r['batch']} s={r['seq']} d={r['head_dim']} "
                 f"{'causal' if r['causal'] == '1' else 'full'} {r['pass']}")
        print(f"  {label:40s} {meas:8.1f} {pred:7.1f}  {errors[-1]:+6.1%}")
    print(f"  {len(errors)} rows: median |error| {statistics.median(map(abs, errors)):.1%}, "
          f"max {max(map(abs, errors)):.1%}")
    h100 = derived_h100(shipped)
    print(f"\nH100 (derived, no timing of this kernel found): {h100}; shipped dgx-h100: "
          f"efficiency {load_topology('dgx-h100').device.attention_kernels[KERNEL].efficiency}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
