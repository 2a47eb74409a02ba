"""Do llm-foundry's slow rows follow memory pressure? tpsim's error against its memory count.

A diagnosis, fitted on nothing and pricing nothing. PyTorch's caching allocator, when a
``cudaMalloc`` fails, synchronizes the device, returns every cached unused block with
``cudaFree`` and tries again (c10/cuda/CUDACachingAllocator.cpp: ``release_cached_blocks``,
``num_alloc_retries``): a cost that would grow as the memory a step leaves free shrinks, or as
the blocks it allocates and frees grow against what is left. If that cost explained tpsim's
fast llm-foundry rows (``python bench/whole_job_bf16_published.py``: MPT-30B at 8k on 8 GPUs,
MPT-70B on 64 A100 40GB, MPT-13B on 8 A100 40GB), a threshold on one of these measures would
put them on one side and the accurate rows on the other:

* ``free``: capacity - tpsim's peak count - its reserve (CUDA context, NCCL, the allocator's
  waste), GiB and as a share of the capacity; ``peak``: the count / capacity;
* ``unit``: the largest blocks FSDP allocates and frees, one block's (one MPT block, or the
  root unit's tied embedding when larger) all-gathered bf16 parameters and its unsharded
  gradient in the reduce dtype (FSDP1's ``_alloc_storage`` of the padded unsharded flat
  parameter, torch/distributed/fsdp/_flat_param.py; its ``_reduce_grad``'s unsharded gradient):
  ``free / unit``, how many such pairs the free memory holds;
* ``churn``: the bytes a micro-batch allocates and frees, every parameter gathered twice
  (forward, and again for the backward's recomputation under ``reshard_after_forward``), every
  gradient unsharded once, and the activations tpsim counts; x the micro-batches of a step.

Megatron's runs (``python bench/whole_job_published.py``) allocate their weights, gradient
buffer and optimizer state once; each micro-batch allocates the same activations in the same
order, so the allocator's cached blocks are reused as they are: the near-full rows there (NeMo
24.07 GPT-3 20B, 75.5 of 76.9 GiB) are printed as the control.

    python bench/memory_pressure_published.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import whole_job_bf16_published as bf16  # noqa: E402
import whole_job_published as fp8  # noqa: E402

from tpsim.cluster.topology import load_topology  # noqa: E402

GiB = 2**30
VOCAB = 50368        # MPT's vocabulary (whole_job_bf16_published's ModelConfig)
SLOW = 0.10          # a row tpsim prices more than 10% fast is a "slow outlier"
# the measures a threshold is tried on: (column, name, True where the outliers are the low side)
MEASURES = (("free", "free GiB", True), ("free_share", "free / capacity", True),
            ("peak", "peak / capacity", False), ("per_unit", "free / unit", True),
            ("churn_mb", "churn a micro-batch / free", False))


def measures(p, reduce_bytes: int | None = None, hidden: int = 0) -> dict:
    """The memory measures of prediction ``p`` (module docstring); ``reduce_bytes``: FSDP's
    gradient bytes per parameter of MPT blocks of ``hidden``, None for a run without FSDP (no
    gathered unit)."""
    mem = p.memory
    cap = mem.capacity_bytes
    free = cap - mem.total_bytes - mem.reserved_bytes
    if reduce_bytes is None:
        unit, churn = 0.0, mem.activations_bytes
    else:
        block = 12 * hidden**2 + 13 * hidden          # MPT block, biases and two norms
        unit = max(block, VOCAB * hidden) * (2 + reduce_bytes)
        churn = mem.params_per_gpu * (2 * 2 + reduce_bytes) + mem.activations_bytes
    return {"free": free / GiB, "free_share": free / cap, "peak": mem.total_bytes / cap,
            "unit": unit / GiB, "per_unit": free / unit if unit else float("inf"),
            "churn_mb": churn / max(free, 1.0), "churn_step": churn * p.step.micro_batches / GiB}


def named(r: dict, card: str) -> bool:
    """One of the fast rows docs/training-step.md lays to memory: MPT-30B at 8k on 8 GPUs,
    MPT-70B (64 and 128 A100 40GB), MPT-13B on 8 A100 40GB."""
    return ((r["model"], r["seq_len"], r["gpus"]) == ("mpt-30b", "8192", "8")
            or r["model"] == "mpt-70b"
            or (card == "A100 40GB" and (r["model"], r["gpus"]) == ("mpt-13b", "8")))


def bf16_rows() -> list[dict]:
    """Every llm-foundry row of the three tables, its error and its measures."""
    out = []
    for name, topology, card, settings in bf16.TABLES:
        reduce_bytes = 2 if settings.get("grad_reduce_in_bf16") else 4
        for r in bf16.rows(name):
            pred, p = bf16.run(r, topology, settings)
            out.append({"table": card, "run": bf16.label(r), "named": named(r, card),
                        "error": pred / float(r["tokens_per_s_per_gpu"]) - 1,
                        **measures(p, reduce_bytes, bf16.MPT[r["model"]][1])})
    return out


def megatron_rows() -> list[dict]:
    """The Megatron and NeMo rows of whole_job_published (no FSDP), as control."""
    topo = load_topology(fp8.TOPOLOGY)
    out = []
    for r in fp8.rows():
        pred, p = fp8.run(r, topo)
        out.append({"table": "H100 FP8 (Megatron)",
                    "run": f"{r['family']} {r['release']} {r['model']} {r['gpus']} GPUs",
                    "named": False,
                    "error": pred / float(r["tokens_per_s_per_gpu"]) - 1,
                    **measures(p)})
    return out


def best_threshold(x: np.ndarray, slow: np.ndarray, low: bool) -> tuple[float, int]:
    """The threshold on ``x`` that misplaces the fewest rows when the ``slow`` rows are to lie
    below it (``low``) or above it, and how many it misplaces."""
    best = (float("nan"), len(x) + 1)
    for t in np.unique(x):
        side = x <= t if low else x >= t
        wrong = int((side != slow).sum())
        if wrong < best[1]:
            best = (float(t), wrong)
    return best


def split(rows: list[dict], key: str, low: bool) -> str:
    """One line: the best threshold on ``key``, the rows and mean error either side, the
    exceptions (slow rows on the accurate side, accurate rows on the slow side)."""
    x = np.array([r[key] for r in rows])
    e = np.array([r["error"] for r in rows])
    slow = e > SLOW
    t, wrong = best_threshold(x, slow, low)
    side = x <= t if low else x >= t
    missed = int((slow & ~side).sum())
    caught = int((~slow & side).sum())

    def mean(mask) -> str:
        return f"{e[mask].mean():+.1%}" if mask.any() else "  -  "
    return (f"{'<=' if low else '>='} {t:7.3f}: {int(side.sum()):2d} rows (mean {mean(side)}, "
            f"{int((slow & side).sum())} slow) | {int((~side).sum()):2d} rows (mean "
            f"{mean(~side)}); misplaced {wrong}: {missed} slow outside, {caught} accurate inside")


def taken_in(rows: list[dict], key: str, low: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """The threshold on ``key`` that just takes in every named row (:func:`named`), which rows
    it takes in (named and other), and which of them are named."""
    x = np.array([r[key] for r in rows])
    mark = np.array([r["named"] for r in rows])
    t = float(x[mark].max() if low else x[mark].min())
    return t, (x <= t if low else x >= t), mark


def catch_named(rows: list[dict], key: str, low: bool) -> str:
    """One line: :func:`taken_in`'s threshold, how many other rows it takes in with the named
    ones, and the mean error of each group."""
    t, side, mark = taken_in(rows, key, low)
    e = np.array([r["error"] for r in rows])
    others = side & ~mark

    def mean(mask) -> str:
        return f"{e[mask].mean():+.1%}" if mask.any() else "  -  "
    return (f"{'<=' if low else '>='} {t:7.3f}: {int(mark.sum())} named (mean {mean(mark)}) "
            f"+ {int(others.sum()):3d} others (mean {mean(others)}, "
            f"{int((others & (np.abs(e) <= SLOW)).sum())} within 10%) | {int((~side).sum()):3d} "
            f"rows beyond (mean {mean(~side)})")


def print_rows(rows: list[dict]) -> None:
    print(f"  {'table':20s} {'run':44s}  error   free  free%  peak   unit  free/unit  "
          f"churn/free  churn/step")
    for r in sorted(rows, key=lambda r: r["free"]):
        mark = (" <" if r["error"] > SLOW else "") + (" named" if r["named"] else "")
        print(f"  {r['table']:20s} {r['run']:44s} {r['error']:+6.1%} {r['free']:6.1f} "
              f"{r['free_share']:5.1%} {r['peak']:5.2f} {r['unit']:6.2f} {r['per_unit']:9.1f}  "
              f"{r['churn_mb']:10.2f}  {r['churn_step']:8.0f}{mark}")


def print_splits(title: str, rows: list[dict]) -> None:
    e = np.array([r["error"] for r in rows])
    print(f"\n{title}: {len(rows)} rows, {int((e > SLOW).sum())} more than {SLOW:.0%} fast")
    for key, name, low in MEASURES:
        print(f"  {name:27s} {split(rows, key, low)}")
    if any(r["named"] for r in rows):
        print("  the threshold that takes in every named row:")
        for key, name, low in MEASURES:
            print(f"  {name:27s} {catch_named(rows, key, low)}")


def main() -> int:
    rows = bf16_rows()
    control = megatron_rows()
    print("llm-foundry (FSDP) and Megatron (no FSDP) rows by tpsim's free memory "
          "(< : tpsim more than 10% fast; GiB)")
    print_rows(rows + control)
    for card in dict.fromkeys(r["table"] for r in rows):
        print_splits(card, [r for r in rows if r["table"] == card])
    print_splits("all three llm-foundry tables", rows)
    print_splits("the three tables and Megatron's rows (no FSDP: free / unit infinite)",
                 rows + control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
