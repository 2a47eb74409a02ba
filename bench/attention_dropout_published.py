"""tpsim's attention dropout inside a fused attention kernel (:mod:`tpsim.cost.attention_dropout`)
against published timings of the same call with and without it, used in no fit.

    python bench/attention_dropout_published.py

Reads tests/data/published_compute/attention_dropout.csv (sources in the README there): forward
+ backward through Transformer Engine's ``DotProductAttention``, p 0 and p 0.1. The calls'
times hold Transformer Engine's Python and launches besides the kernels, so what is compared
is the difference the dropout makes: published ``ms_with - ms_without`` against tpsim's
fused attention op priced with and without ``dropout`` (:func:`tpsim.sim.price.kernel_time`,
forward and backward). Held rows run on a topology whose kernel lists ``int32_tops``
(the H200's cuDNN, tpsim's ``flash3`` class there). The GB200 FlashAttention-2 row is
printed, not held: tpsim lists neither FlashAttention-2 nor an INT32 rate for Blackwell, so
its difference is :func:`tpsim.cost.attention_dropout.dropout_time` at an ASSUMED rate,
the device's FP32 peak / 4 (Hopper's ratio: 64 INT32 lanes an SM to 128 FP32 ones, two FLOPs a
fused multiply-add), on the causal elements of dgx-a100's FlashAttention-2 fit
(``causal_block``).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import replace
from pathlib import Path

from tpsim.cluster.topology import load_topology
from tpsim.cost.attention_dropout import dropout_time
from tpsim.cost.compute import attention_exec_flops
from tpsim.layer.ops import Attention
from tpsim.sim.price import kernel_time

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_compute"
TOPOLOGY = {"H200": "dgx-h200", "GB200": "gb200-nvl72"}


def rows() -> list[dict]:
    with open(DATA / "attention_dropout.csv") as f:
        return list(csv.DictReader(f))


def ops(r: dict) -> list[Attention]:
    """Row ``r``'s forward and backward attention ops, with dropout."""
    n = {k: int(r[k]) for k in ("batch", "heads", "kv_heads", "seq", "head_dim")}
    return [Attention(n["batch"], n["heads"], n["kv_heads"], n["seq"], n["seq"], n["head_dim"],
                      "bf16", r["causal"] == "1", bw, r["kernel"], dropout=True)
            for bw in (False, True)]


def tpsim_ms(r: dict) -> tuple[float, float]:
    """(tpsim's forward + backward ms without dropout, the dropout's ms on top) for row ``r``."""
    device = load_topology(TOPOLOGY[r["device"]]).device
    if r["held"] == "1":
        with_ = sum(kernel_time(a, device) for a in ops(r))
        without = sum(kernel_time(replace(a, dropout=False), device) for a in ops(r))
        return without * 1e3, (with_ - without) * 1e3
    block = load_topology("dgx-a100").device.attention_kernels["flash2"].causal_block
    rate = device.peak("fp32") / 4          # ASSUMED (module docstring)
    extra = sum(dropout_time(attention_exec_flops(a.flops, a.causal, a.backward, a.seq_kv, block,
                                                  a.full_flops), a.head_dim, a.backward, rate)
                for a in ops(r))
    return float("nan"), extra * 1e3


def published_ms(r: dict) -> float:
    """The published difference the dropout makes, ms."""
    return float(r["ms_with"]) - float(r["ms_without"])


def error(r: dict) -> float:
    """tpsim's dropout ms over the published difference, less 1 (+: tpsim slow)."""
    return tpsim_ms(r)[1] / published_ms(r) - 1


def main() -> int:
    print("Attention dropout p 0.1 inside a fused kernel, forward + backward, ms it adds "
          "(+: tpsim slow)")
    for r in rows():
        base, extra = tpsim_ms(r)
        held = "held" if r["held"] == "1" else "printed (assumed rate)"
        print(f"  {r['source']:23s} {r['device']:6s} {r['kernel']:6s} {r['layout']:4s} b{r['batch']} "
              f"h{r['heads']} s{r['seq']} d{r['head_dim']}{' causal' if r['causal'] == '1' else ''}:"
              f" published {float(r['ms_without']):.3f} -> {float(r['ms_with']):.3f}"
              f" (+{published_ms(r):.3f}), tpsim +{extra:.4f} {error(r):+6.1%}  [{held}]"
              + (f"  (tpsim's kernels alone {base:.3f} without)" if base == base else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
