"""tpsim's training step against NVIDIA's published whole-job runs on DGX H100 (FP8).

Two source families, tests/data/published_steps (README there gives each source):

* Megatron-Bridge's performance summary, releases 25.09 to 26.06 (Llama 3 70B, 32 and 64 H100):
  the family ``sustained_clock`` of the H100 presets is fitted on (``--fit``);
* NeMo 24.07's performance summary (GPT-3 5B, 20B, 175B on 128 and 512 H100, Llama 2 7B, 13B,
  70B): used in no fit.

Each run as its recipe ran it under Megatron-core with Transformer Engine: FP8, sequence
parallelism at TP > 1, the distributed optimizer with its weight all-gather overlapped, the
gradients reduced beside the backward in bf16 (Megatron-Bridge's ``_perf_precision`` sets
``grad_reduce_in_fp32=False``; NeMo's launcher ``grad_sync_dtype: bf16``), TP communication
overlapped, no recomputation, dropout as each recipe ran it (:data:`NEMO_DROPOUT`); Megatron-Bridge's FP8 recipes also keep fp8
parameters (``fp8_param_gather=True``, megatron/bridge/training/mixed_precision.py) and run
Transformer Engine's fused cross-entropy (``cross_entropy_loss_fusion=True`` in
megatron/bridge/models/gpt_provider.py, ``cross_entropy_fusion_impl="te"`` in the Llama
providers and scripts/performance/utils/helpers.py; NeMo 24.07's is left unfused). NeMo
24.07 ran Apex's distributed Adam
(NeMo-Framework-Launcher 24.07, conf/training/gpt3/20b.yaml: ``distributed_fused_adam`` with
``contiguous_grad_buffer: True``; examples/training/gpt/h100/20b_fp8_8node.sh:
``grad_sync_dtype=bf16``): its contiguous buffer keeps every local bf16 gradient (Apex's
``_init_grad_buffer``, not ZeRO-2), reduce-scattered bucket by bucket beside the backward, and
it shards fp32 Adam moments and the 16-bit remainders of the fp32 master weights
(``store_param_remainders``, NeMo's megatron_base_model.py), 10 bytes a parameter / d, beside
the 2 / d of the reduced shard: the 2 + 12 / d bytes and the traffic of Megatron-core's
distributed optimizer with bf16 gradients, as these rows run. NeMo 24.07's launcher also turned
Transformer Engine's cuDNN attention off (``NVTE_FUSED_ATTN=0``): its runs' attention is
FlashAttention-2 (:data:`NEMO`), Megatron-Bridge's cuDNN's.

    python bench/whole_job_published.py [--fit] [--breakdown] [--clock-window kernel|step]

``--clock-window``: price the runs with the device's ``clock_window`` set so
(:mod:`tpsim.cluster.sustained`); with ``--fit``, ``sustained_clock`` fitted under it.

``--breakdown``: under each run, where its predicted step goes (:func:`shares`).
"""
from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from tpsim.cluster.sustained import with_device
from tpsim.cluster.topology import CLOCK_WINDOWS, load_topology
from tpsim.report.step import PARTS
from tpsim.spec.frameworks import FRAMEWORKS
from tpsim.spec.model import ModelConfig, load_model
from tpsim.training.predict import predict

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "published_steps"
TOPOLOGY = "dgx-h100-ndr-cluster"
FIT_FAMILY = "megatron-bridge"
# NeMo's GPTConfig5B and GPTConfig20B (nemo/collections/llm/gpt/model/base.py); GPT-2's vocabulary
NEMO_GPT = {"gpt3-5b": (24, 4096, 32), "gpt3-20b": (44, 6144, 48)}
# dropout as NeMo 24.07 ran each model: its GPT-3 recipes keep dropout (NeMo-Framework-Launcher
# tag 24.07, conf/training/gpt3/5b.yaml, 20b.yaml, 175b.yaml: hidden_dropout 0.1,
# attention_dropout 0.1, which its examples/training/gpt/h100/*_fp8_*.sh leave as they are),
# its Llama 2 recipes none (conf/training/llama/llama2_*.yaml: 0.0); Megatron-Bridge's none
NEMO_DROPOUT = {"gpt3-5b": 0.1, "gpt3-20b": 0.1, "gpt3": 0.1}
# NeMo 24.07's attention: FlashAttention-2, as its launcher ran every job (NVTE_FUSED_ATTN=0):
# the `nemo-24.07` framework preset, whose docstring gives the sources. Megatron-Bridge's runs
# set no NVTE_FUSED_ATTN, and Transformer Engine 2.x picks cuDNN on Hopper ("give FusedAttention
# preference on Hopper+", dot_product_attention/utils.py): the presets' default `flash3` class.
NEMO = FRAMEWORKS["nemo-24.07"]
# Megatron-Bridge's FP8 recipes: current scaling (bf16_with_fp8_current_scaling_mixed, the
# performance scripts' fp8_cs: --fp8-recipe tensorwise) with FP8 parameters (mixed_precision.py)
# and Transformer Engine's fused cross-entropy (the GPT provider's cross_entropy_loss_fusion=True;
# the Llama providers' and the performance scripts' cross_entropy_fusion_impl="te"). NeMo 24.07
# ran delayed scaling (the launcher's fp8_amax_history_len / fp8_amax_compute_algo: Transformer
# Engine 1.x had no other recipe), tpsim's default.
BRIDGE = dict(fp8_param_gather=True, cross_entropy="te", fp8_recipe="tensorwise")


def model(name: str, seq_len: int, family: str = FIT_FAMILY) -> ModelConfig:
    """Model ``name`` at ``seq_len`` with the dropout its ``family``'s recipe ran
    (:data:`NEMO_DROPOUT`)."""
    dropout = NEMO_DROPOUT.get(name, 0.0) if family == "nemo" else 0.0
    if name in NEMO_GPT:
        layers, hidden, heads = NEMO_GPT[name]
        m = ModelConfig(name=name, layers=layers, hidden=hidden, heads=heads, vocab=50257,
                        seq_len=seq_len, bias=True, tie_embeddings=True)
    else:
        m = load_model(name)
    return dataclasses.replace(m, seq_len=seq_len, dropout=dropout)


def rows() -> list[dict]:
    with open(DATA / "h100_fp8.csv") as f:
        return list(csv.DictReader(f))


def run(r: dict, topo) -> tuple[float, object]:
    """Predicted tokens/s per GPU of published run ``r``, and the prediction."""
    n = {k: int(r[k]) for k in ("gpus", "global_batch", "micro_batch", "seq_len", "tp", "pp",
                                "vp")}
    dp = n["gpus"] // (n["tp"] * n["pp"])
    p = predict(model(r["model"], n["seq_len"], r["family"]), topo, tp=n["tp"], pp=n["pp"], dp=dp,
                virtual_stages=n["vp"], global_batch=n["global_batch"],
                micro_batch=n["micro_batch"], dtype="fp8", sequence_parallel=n["tp"] > 1,
                distributed_optimizer=True, overlap_param_gather=True,
                tp_comm_overlap=n["tp"] > 1, nodes=max(1, n["gpus"] // 8),
                grad_reduce_in_bf16=True, **(BRIDGE if r["family"] == "megatron-bridge" else NEMO))
    return p.step.tokens_per_s / n["gpus"], p


def errors(data, topo) -> np.ndarray:
    return np.array([run(r, topo)[0] / float(r["tokens_per_s_per_gpu"]) - 1 for r in data])


def shares(step) -> str:
    """Where a predicted step goes: each part of ``tpsim predict``'s split
    (:data:`tpsim.report.step.PARTS`) of 0.05% of the step time or more, as that share, one
    line."""
    parts = ((label, getattr(step, key) / step.time_s) for label, key, _ in PARTS)
    return ", ".join(f"{label} {share:.1%}" for label, share in parts if share >= 5e-4)


def table(data, topo, breakdown: bool = False) -> None:
    print(f"  {'run':44s} {'published':>9s} {'tpsim':>7s}  error  memory (GiB, fits)")
    for r in data:
        pred, p = run(r, topo)
        pub = float(r["tokens_per_s_per_gpu"])
        mem = p.memory
        name = (f"{r['family']} {r['release']} {r['model']} {r['gpus']} GPUs "
                f"TP{r['tp']} PP{r['pp']} VP{r['vp']}")
        print(f"  {name:44s} {pub:9.0f} {pred:7.0f} {pred / pub - 1:+6.1%}  "
              f"{mem.total_bytes / 2**30:5.1f} of {(mem.capacity_bytes - mem.reserved_bytes) / 2**30:.1f}"
              f" {'yes' if mem.fits else 'NO'}")
        if breakdown:
            print(f"      {shares(p.step)}")


def summary(title: str, e: np.ndarray) -> str:
    return (f"{title}: {len(e)} runs, mean error {e.mean():+.1%}, mean |error| "
            f"{np.abs(e).mean():.1%}, max |error| {np.abs(e).max():.1%}")


def with_clock(topo, clock: float | None = None, window: str | None = None):
    """``topo`` with its device's ``sustained_clock`` set to ``clock`` and its
    ``clock_window`` to ``window`` (None: as it is)."""
    dev = topo.device
    return with_device(topo, dataclasses.replace(
        dev, sustained_clock=dev.sustained_clock if clock is None else clock,
        clock_window=window or dev.clock_window))


def fit_clock(topo, fit) -> float:
    """Grid-fit ``sustained_clock`` (0.600-0.995 by 0.005: below 1, as a device with a
    sustained_utilisation must state it) on ``fit``: the least mean |error|."""
    grid = np.round(np.arange(0.60, 0.9951, 0.005), 3)
    scores = [np.abs(errors(fit, with_clock(topo, c))).mean() for c in grid]
    return float(grid[int(np.argmin(scores))])


def main(argv: list[str]) -> int:
    topo = load_topology(TOPOLOGY)
    if "--clock-window" in argv:
        window = (argv[argv.index("--clock-window") + 1:] or [None])[0]
        if window not in CLOCK_WINDOWS:     # a bogus one priced as kernel, without a word
            print(f"whole_job_published.py: error: --clock-window: expected one of "
                  f"{', '.join(CLOCK_WINDOWS)} (got {window!r})", file=sys.stderr)
            return 2
        topo = with_clock(topo, window=window)
    data = rows()
    fit = [r for r in data if r["family"] == FIT_FAMILY]
    rest = [r for r in data if r["family"] != FIT_FAMILY]
    if "--fit" in argv:
        best = fit_clock(topo, fit)
        print(f"sustained_clock fitted on the {len(fit)} {FIT_FAMILY} runs, clock_window "
              f"{topo.device.clock_window}: {best:.3f} (shipped {TOPOLOGY}: "
              f"{topo.device.sustained_clock:g})")
        topo = with_clock(topo, best)
    table(data, topo, "--breakdown" in argv)
    print(summary(f"  fitted on ({FIT_FAMILY})", errors(fit, topo)))
    print(summary("  used in no fit (NeMo 24.07)", errors(rest, topo)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
