"""tpsim's GEMM and attention kernels against published benchmarks: the fit and the checks.

    python bench/compute_published.py

Reads tests/data/published_compute/{gemm,attention}.csv (sources in the README there). For each
device it fits, on the rows marked ``fit`` only, the parameters the topology YAML then carries:

* GEMM: ``gemm_max_efficiency`` and ``gemm_k_half_dim`` (``gemm_tile``, ``gemm_tiles``, ``gemm_tile_sms`` and
  ``sm_count`` come from the hardware and its kernels, not from a fit), by least squares on log(predicted / measured) over a grid of
  k_half, each with the efficiency minimising that priced error (every row priced through
  ``gemm_time`` at each trial efficiency: launch + max(compute, memory) is not proportional to it);
* attention: per kernel, the efficiency per head dim and ``seq_half_efficiency`` on the
  non-causal rows, then ``causal_efficiency`` and ``causal_block`` on the causal rows of the
  smallest head dim only (the other head dims' causal rows are the check), by the same priced
  error: for each ``seq_half_efficiency`` (``causal_block``) of its grid, the efficiency per head
  dim (``causal_efficiency``) minimising it with every row priced through ``attention_time``
  (launch + max(compute, memory)) at each trial value, then the best.

Then it prices every row, ``fit`` and ``check``, through tpsim.cost.compute itself and prints the
error: only the ``check`` rows are evidence. B200's ``fit`` rows are one source family's, XLA's
B200 table (bf16 and fp8): ``gemm_max_efficiency`` and ``gemm_k_half_dim`` on its bf16 rows,
then ``gemm_max_efficiency_fp8`` on its fp8 rows with ``gemm_k_half_dim_fp8``
derived (bf16's x the fp8 / bf16 peak: :func:`fit_fp8_gemm`), and the FP4 rows of one source,
on which ``gemm_max_efficiency_fp4`` alone is fitted (the tiles and k_half as
shipped); Blackwell's cuDNN and FlashAttention-4 rows are priced with the presets' flash3
kernel, H100's fit carried over, whose ``seq_half_efficiency`` is derived from H100's (printed last). Predictions use the shipped topologies' values, so
after pasting a refit into the YAML the printed errors are those of the shipped model.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import statistics
from pathlib import Path

from scipy.optimize import minimize_scalar

from tpsim.cost.compute import FP4, attention_exec_flops, attention_time, gemm_time
from tpsim.layer.ops import Attention
from tpsim.cluster.topology import AttentionKernel, load_topology

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_compute"
TOPOLOGY = {"H100-SXM5-80GB": "dgx-h100", "A100-SXM4-80GB": "dgx-a100", "B200-180GB": "dgx-b200",
            "B300-SXM": "dgx-b200", "GB200-186GB": "gb200-nvl72", "B200-or-B300": "dgx-b200",
            "GB200-or-GB300": "gb200-nvl72",   # B300 and the "-or-" devices: the README says why
            "H800-SXM5-80GB": "dgx-h100"}      # H100 SXM's SMs, clocks and HBM3, NVLink cut
K_HALF_GRID = [float(x) for x in range(0, 1001, 5)]
SEQ_HALF_GRID = [float(x) for x in range(0, 2001, 8)]


def rows(name: str) -> list[dict]:
    with open(DATA / name) as f:
        return list(csv.DictReader(f))


def gemm_tflops(r: dict, device) -> float:
    m, n, k, b = (int(r[c]) for c in ("m", "n", "k", "batch"))
    return 2.0 * m * n * k * b / gemm_time(m, n, k, device, r["dtype"], b) / 1e12


def priced_fit(measured: list[float], predict, low: float = 0.3) -> tuple[float, float]:
    """Efficiency e in (``low``, 1] minimising sum log^2(predict(e) / measured), and that sum:
    ``predict(e)`` prices the rows with e set in the device (a GEMM's efficiency, an attention
    kernel's per head dim or its causal share). A kernel's time is launch + max(compute, memory)
    (:func:`tpsim.cost.compute.gemm_time`, :func:`tpsim.cost.compute.attention_time`), so its
    rate is not proportional to e: the rows are priced at each trial e (scipy's bounded Brent
    search), not scaled from one pricing at e = 1."""
    logm = [math.log(m) for m in measured]

    def err(e: float) -> float:
        return sum((math.log(p) - lm) ** 2 for p, lm in zip(predict(e), logm))

    res = minimize_scalar(err, bounds=(low, 1.0), method="bounded", options={"xatol": 1e-5})
    return float(res.x), float(res.fun)


def fit_gemm(device, fit_rows: list[dict]) -> tuple[float, float]:
    """(gemm_max_efficiency, gemm_k_half_dim) best on ``fit_rows``: for each k_half of the grid
    the efficiency minimising the priced error (:func:`priced_fit`), then the best pair."""
    measured = [float(r["tflops"]) for r in fit_rows]
    best = None
    for k_half in K_HALF_GRID:
        dev = dataclasses.replace(device, gemm_k_half_dim=k_half)
        eff, err = priced_fit(measured, lambda e: [
            gemm_tflops(r, dataclasses.replace(dev, gemm_max_efficiency=e)) for r in fit_rows])
        if best is None or err < best[0]:
            best = (err, eff, k_half)
    return round(best[1], 3), best[2]


def fit_fp8_gemm(device, fit_rows: list[dict], k_half: float) -> tuple[float, float]:
    """(gemm_max_efficiency_fp8, gemm_k_half_dim_fp8) on ``fit_rows``: the k half-dimension
    DERIVED, ``k_half`` (bf16's) x the fp8 / bf16 peak (each tile's fixed prologue and epilogue
    take the same time while the k loop runs at the fp8 rate), the efficiency then minimising
    the priced error (:func:`priced_fit`)."""
    k_half_fp8 = k_half * device.peak("fp8") / device.peak("bf16")
    dev = dataclasses.replace(device, gemm_k_half_dim_fp8=k_half_fp8)
    measured = [float(r["tflops"]) for r in fit_rows]
    eff, _ = priced_fit(measured, lambda e: [
        gemm_tflops(r, dataclasses.replace(dev, gemm_max_efficiency_fp8=e)) for r in fit_rows])
    return round(eff, 3), k_half_fp8


def fit_fp4_gemm(device, fit_rows: list[dict]) -> float:
    """gemm_max_efficiency_fp4 best on ``fit_rows`` (the tiles and gemm_k_half_dim as shipped):
    the efficiency minimising the priced error (:func:`priced_fit`)."""
    eff, _ = priced_fit([float(r["tflops"]) for r in fit_rows], lambda e: [
        gemm_tflops(r, dataclasses.replace(device, gemm_max_efficiency_fp4=e)) for r in fit_rows])
    return round(eff, 3)


def attention_tflops(r: dict, device, kernel: str) -> float:
    """TFLOP/s in FlashAttention's convention (forward 4 b s^2 h d, halved causal; backward 2.5x):
    forward + backward for ``flash2`` rows, forward only for ``*-fwd`` rows; b = tokens / s."""
    s, d, causal = int(r["seq"]), int(r["head_dim"]), r["causal"] == "1"
    b, heads = int(r["tokens"]) // s, 2048 // d
    fa_fwd = 4.0 * b * s * s * heads * d / (2 if causal else 1)
    total, work = 0.0, 0.0
    for backward in ((False,) if r["kernel"].endswith("fwd") else (False, True)):
        op = Attention(b, heads, heads, s, s, d, "bf16", causal, backward, kernel)
        k = device.attention_kernels[kernel]
        flops = attention_exec_flops(op.flops, causal, backward, s, k.causal(backward)[1],
                                     op.full_flops)
        total += attention_time(flops, op.bytes, s, s, d, device, "bf16", backward, kernel, causal)
        work += fa_fwd * (FA_BACKWARD if backward else 1.0)
    return work / total / 1e12


FA_BACKWARD = 2.5


def fit_attention(device, kernel: str, fit_rows: list[dict]) -> AttentionKernel:
    """Efficiency per head dim and seq_half_efficiency on the non-causal ``fit_rows``, then
    causal_efficiency and causal_block on the causal ones: for each seq_half_efficiency (each
    causal_block) of the grid the efficiency (the causal share) minimising the priced error
    (:func:`priced_fit`: every row priced through ``attention_time`` at each trial value), then
    the best."""
    plain = [r for r in fit_rows if r["causal"] == "0"]
    best = None
    for seq_half in SEQ_HALF_GRID:
        eff, err = {}, 0.0
        for d in sorted({r["head_dim"] for r in plain}):
            eff[d], e = _attention_fit(device, kernel, [r for r in plain if r["head_dim"] == d],
                                       lambda x: AttentionKernel({d: x}, None, seq_half))
            err += e
        if best is None or err < best[0]:
            best = (err, AttentionKernel({d: round(e, 3) for d, e in eff.items()}, None,
                                         seq_half))
    k = best[1]
    causal = [r for r in fit_rows if r["causal"] == "1"]
    if not causal:
        return k
    best = None
    for block in BLOCK_GRID:
        trial = dataclasses.replace(k, causal_block=block)
        scale, e = _attention_fit(device, kernel, causal, lambda x: dataclasses.replace(
            trial, causal_efficiency=x))
        if best is None or e < best[0]:
            best = (e, dataclasses.replace(trial, causal_efficiency=round(scale, 3)))
    return best[1]


ATTENTION_LOW = 0.05   # the attention fits' lower bound on an efficiency (GEMMs': 0.3)


def _attention_fit(device, kernel: str, fit_rows: list[dict], kernel_at) -> tuple[float, float]:
    """:func:`priced_fit` of one attention term: ``kernel_at(x)`` is the kernel with the term
    at x, every row priced with it in the device."""
    return priced_fit([float(r["tflops"]) for r in fit_rows], lambda x: [
        attention_tflops(r, _with_kernel(device, kernel, kernel_at(x)), kernel)
        for r in fit_rows], ATTENTION_LOW)


BLOCK_GRID = [float(x) for x in range(0, 1025, 16)]


def _with_kernel(device, name: str, kernel: AttentionKernel):
    kernels = {**(device.attention_kernels or {}), name: kernel}
    return dataclasses.replace(device, attention_kernels=kernels, attention_kernel=name)


def report(title: str, table: list[tuple[dict, float, float]]) -> None:
    print(f"\n{title}")
    for role in ("fit", "check"):
        errs = [p / m - 1 for r, m, p in table if r["role"] == role]
        if errs:
            print(f"  {role:5s} rows: {len(errs):3d}   median |error| "
                  f"{statistics.median(map(abs, errs)):6.1%}   max {max(map(abs, errs)):6.1%}")
    for r, m, p in table:
        label = " ".join(f"{k}={r[k]}" for k in r if k not in ("device", "tflops", "role", "source"))
        print(f"    {r['role']:5s} {label:58s} measured {m:7.1f}  tpsim {p:7.1f}  {p / m - 1:+6.1%}")


def gemm_checks(device_name: str, topo_name: str, dev, gemms: list[dict]) -> None:
    """The GEMM fit on ``device_name``'s ``fit`` rows (if any) and the error on every row."""
    mine = [r for r in gemms if r["device"] == device_name]
    if not mine:
        return
    fit = [r for r in mine if r["role"] == "fit" and r["dtype"] not in ("fp8", *FP4)]
    fit_fp8 = [r for r in mine if r["role"] == "fit" and r["dtype"] == "fp8"]
    fit_fp4 = [r for r in mine if r["role"] == "fit" and r["dtype"] in FP4]
    if fit_fp4:
        eff = fit_fp4_gemm(dev, fit_fp4)
        print(f"\n{device_name}: FP4 GEMM fit on its 'fit' rows ({fit_fp4[0]['source']}): "
              f"gemm_max_efficiency_fp4 {eff:.3f} (shipped: {dev.gemm_max_efficiency_fp4})")
    if fit:
        eff, k_half = fit_gemm(dev, fit)
        print(f"\n{device_name}: GEMM fit on its 'fit' rows ({fit[0]['source']}): "
              f"gemm_max_efficiency {eff:.3f}, gemm_k_half_dim {k_half:g} (shipped: "
              f"{dev.gemm_max_efficiency:g}, {dev.gemm_k_half_dim})")
        if fit_fp8:
            eff, k_half_fp8 = fit_fp8_gemm(dev, fit_fp8, k_half)
            print(f"{device_name}: fp8 GEMM fit on its 'fit' rows ({fit_fp8[0]['source']}): "
                  f"gemm_max_efficiency_fp8 {eff:.3f}, gemm_k_half_dim_fp8 {k_half_fp8:g} "
                  f"derived (shipped: {dev.gemm_max_efficiency_fp8:g}, {dev.gemm_k_half_dim_fp8})")
    else:
        print(f"\n{device_name}: no bf16 GEMM 'fit' rows: {topo_name}'s GEMM efficiencies are "
              f"carried over from another device (its YAML says which); every row checks them")
    for dtype in sorted({r["dtype"] for r in mine}):
        report(f"{device_name} {dtype} GEMMs, shipped {topo_name} (TFLOP/s)",
               [(r, float(r["tflops"]), gemm_tflops(r, dev)) for r in mine
                if r["dtype"] == dtype])


# Blackwell's fused attention kernels (no fit rows): priced with the preset's own kernel
PRICED_AS = {"cudnn": "flash3", "fa4": "flash3"}


def attention_checks(device_name: str, topo_name: str, dev, attns: list[dict]) -> None:
    """Per attention kernel measured on ``device_name``: its fit (on its ``fit`` rows) and the
    error on every row; a kernel without ``fit`` rows is priced with ``PRICED_AS``'s kernel."""
    for kernel in sorted({r["kernel"] for r in attns if r["device"] == device_name}):
        name = kernel.removesuffix("-fwd")
        sub = [r for r in attns if r["device"] == device_name and r["kernel"] == kernel]
        fit = [r for r in sub if r["role"] == "fit"]
        dev_k = dev
        if not fit:
            name = PRICED_AS[name]
            print(f"\n{device_name} {kernel}: no 'fit' rows: priced with {topo_name}'s {name} kernel")
        else:
            k = fit_attention(dev, name, fit)
            print(f"\n{device_name} {kernel}: fit on its 'fit' rows: {_attention_terms(k)}")
            if not dev.attention_kernels or name not in dev.attention_kernels:
                print(f"  ({topo_name} lists no {name} kernel: checks use the fit)")
                dev_k = _with_kernel(dev, name, k)
            else:
                print(f"  (shipped {topo_name}: {_attention_terms(dev.attention_kernels[name])})")
        report(f"{device_name} {kernel} (TFLOP/s, FlashAttention's convention)",
               [(r, float(r["tflops"]), attention_tflops(r, dev_k, name)) for r in sub])


def _attention_terms(k: AttentionKernel) -> str:
    """A kernel's fitted terms (the forward's), as the fit prints them."""
    return (f"efficiency {dict(sorted(k.efficiency.items()))}, seq_half_efficiency "
            f"{k.seq_half_efficiency:g}, causal_efficiency {k.causal_efficiency:g}, "
            f"causal_block {k.causal_block:g}")


def main() -> None:
    gemms, attns = rows("gemm.csv"), rows("attention.csv")
    for device_name, topo_name in TOPOLOGY.items():
        dev = load_topology(topo_name).device
        gemm_checks(device_name, topo_name, dev, gemms)
        attention_checks(device_name, topo_name, dev, attns)


def k_loop_rates(gemms: list[dict], sources=("xla-sm90", "xla-sm100")) -> None:
    """Each XLA table's m = n shapes (batch 1, k >= 1024) on a line t = t0 + 2 m n k / r: the
    k loop's rate r (in % of peak) and the per-GEMM intercept t0 (whatever does not grow with
    k: launch, prologue, epilogue), measured and as tpsim prices the same rows. The tables time
    kernels alone (CUPTI kernel durations, median of 10: tests/data/published_compute/README.md),
    so a t0 excess would be a per-call cost and an r shortfall a rate."""
    print("\nXLA tables' k loop: t = t0 + 2mnk / r over k >= 1024 (r in TFLOP/s, % of peak)")
    for src in sources:
        mine = [r for r in gemms if r["source"] == src and r["batch"] == "1"
                and r["m"] == r["n"] and int(r["k"]) >= 1024]
        for dtype, mn in sorted({(r["dtype"], int(r["m"])) for r in mine}):
            sub = [r for r in mine if r["dtype"] == dtype and int(r["m"]) == mn]
            if len(sub) < 2:
                continue
            dev = load_topology(TOPOLOGY[sub[0]["device"]]).device
            flops = [2.0 * mn * mn * int(r["k"]) for r in sub]
            measured = [f / float(r["tflops"]) / 1e12 for f, r in zip(flops, sub)]
            priced = [gemm_time(mn, mn, int(r["k"]), dev, dtype) for r in sub]
            line = [_line(flops, t) for t in (measured, priced)]
            print(f"  {src:9s} {dtype:4s} m=n={mn:4d}: measured r {line[0][1] / 1e12:6.0f} "
                  f"({line[0][1] / dev.peak(dtype):4.0%}) t0 {line[0][0] * 1e6:5.1f} us;  tpsim r "
                  f"{line[1][1] / 1e12:6.0f} ({line[1][1] / dev.peak(dtype):4.0%}) "
                  f"t0 {line[1][0] * 1e6:5.1f} us")


def _line(flops: list[float], times: list[float]) -> tuple[float, float]:
    """Least-squares (t0, r) of times = t0 + flops / r (r infinite where the time is flat)."""
    fm, tm = statistics.fmean(flops), statistics.fmean(times)
    slope = sum((f - fm) * (t - tm) for f, t in zip(flops, times)) / \
        sum((f - fm) ** 2 for f in flops)
    return tm - slope * fm, (1.0 / slope if slope > 0 else math.inf)


def derived_seq_half() -> None:
    """The Blackwell presets' flash3 ``seq_half_efficiency``: H100's fit x the per-SM tensor rate
    over H100's (a query tile's fixed work takes H100's time, in which the SM streams more keys)."""
    h100 = load_topology("dgx-h100").device
    per_sm = h100.peak("bf16") / h100.sm_count
    for name in ("dgx-b200", "gb200-nvl72", "gb300-nvl72"):
        dev = load_topology(name).device
        ratio = dev.peak("bf16") / dev.sm_count / per_sm
        print(f"{name} flash3 seq_half_efficiency, derived: "
              f"{h100.attention_kernels['flash3'].seq_half_efficiency:g} x {ratio:.3f} = "
              f"{h100.attention_kernels['flash3'].seq_half_efficiency * ratio:.0f} "
              f"(shipped {dev.attention_kernels['flash3'].seq_half_efficiency:g})")


# (hidden, FFN, query heads, KV heads, head dim) of the models vidur profiled
DECODE_SHAPE = {"Meta-Llama-3-8B": (4096, 14336, 32, 8, 128),
                "Llama-2-70b-hf": (8192, 28672, 64, 8, 128)}
DECODE_OPS = ("qkv_us", "proj_us", "mlp_in_us", "mlp_out_us")


def decode_layer_us(r: dict) -> list[float]:
    """tpsim's four GEMMs of one layer at a vidur row's tokens (m), us: (n, k) of the fused QKV,
    the output projection, the fused gate and up, and the down projection, each split over the
    row's TP ranks (columns, columns, columns, rows)."""
    h, ffn, heads, kv, d = DECODE_SHAPE[r["model"]]
    tp, m = int(r["tp"]), int(r["rows"])
    dev = load_topology(TOPOLOGY[r["device"]]).device
    nk = [((heads + 2 * kv) * d // tp, h), (h, heads * d // tp), (2 * ffn // tp, h),
          (h, ffn // tp)]
    return [gemm_time(m, n, k, dev, "bf16") * 1e6 for n, k in nk]


def decode_batch_checks(name: str = "decode_gemm_vidur_batch.csv") -> None:
    """vidur's H100 Llama 70B TP 4 GEMMs at 128-1,024 rows (checks, used in no fit): measured and
    tpsim us per GEMM, and the error."""
    print(f"\n{name}: measured / tpsim us (error)")
    print(f"  {'rows':>5s} " + " ".join(f"{o.removesuffix('_us'):>24s}" for o in DECODE_OPS))
    for r in rows(name):
        got, meas = decode_layer_us(r), [float(r[o]) for o in DECODE_OPS]
        print(f"  {r['rows']:>5s} " + " ".join(f"{mm:7.1f} {g:7.1f} ({g / mm - 1:+6.1%})"
                                               for g, mm in zip(got, meas)))


if __name__ == "__main__":
    main()
    k_loop_rates(rows("gemm.csv"))
    decode_batch_checks()
    derived_seq_half()
