"""What the code-level candidates for llm-foundry's fast rows would move: a diagnosis.

Fitted on nothing and pricing nothing that tpsim ships. tpsim is fast on MPT-30B at 8k on 8 H100
and 8 A100 80GB (+31.4%, +33.1%) and on MPT-13B on 8 A100 40GB at every length (+14% to +17%)
(``python bench/whole_job_bf16_published.py``). Each candidate below is something the code the
runs ran does, priced the way the code does it, over all three tables (the accurate rows must
stay where they are):

* ``non-SP``: llm-foundry v0.3.0's ``llmfoundry/models/layers/flash_attn_triton.py``
  autotunes its backward (``_bwd_kernel``) between two configs, both 128 x 128 tiles, 8 warps:
  ``SEQUENCE_PARALLEL: False``, one program per (batch, head) looping over every key block
  (grid ``(1, batch * nheads)``), and ``True``, one program per 128-key block with fp32 atomic
  adds into dQ (grid ``(cdiv(seqlen_k, 128), batch * nheads)``). The autotune key is
  ``(seqlen_q // 32, seqlen_k // 32, bias type, causal, BLOCK_HEADDIM)``: not the batch or the
  heads, and the first call's own shape picks. MPT-30B at 8k runs 1 x 56 = 56 programs, fewer
  than the SMs (108 on A100, 132 on H100). The candidate prices the backward with the first
  config, its programs in waves over the SMs at the fitted kernel's per-SM speed:
  ``t_bwd x ceil(b h / SMs) x SMs / (b h)``.
* ``hd 112``: MPT-30B as released (64 heads of 112) instead of the benchmark's yaml (llm-foundry
  v0.3.0 ``scripts/train/yamls/pretrain/mpt-30b.yaml``: ``n_heads: 56``, head dim 128), with the
  kernel's ``BLOCK_HEADDIM = next_power_of_2(d)`` = 128: every attention pass x 128 / 112.

A third candidate is left out by the code: ``triton_flash_attn_fn`` turns a key padding mask
into a (b, 1, 1, s) fp32 ``vector`` bias (``MPTModel._attn_bias``), but the runs' text loader
(``llmfoundry/data/text_data.py``: pre-tokenized ``--concat_tokens`` samples, collated by
``transformers.DataCollatorForLanguageModeling`` from bare tensors) hands the model no
``attention_mask``, so the kernel runs without a bias, as in its fitted timings.

Then, per slow row, every FSDP collective of a micro-batch priced as exposed (two all-gathers
of each block's bf16 parameters and one reduce-scatter of its gradient in the reduce dtype, by
``tpsim.sim.price.group_collective``) against the time tpsim misses a micro-batch.

Last, MPT-13B on 8 GPUs of each A100 card in the same software (the 40 GB table's edition:
Composer 0.13.4, PyTorch 1.13.1, ``PURE``): the README's earlier "A100 80GB" table (unchanged
from 300cc5c58 to c6cfb4284, the commit before b2a43a147) ran the same model on 8 A100 80GB at
micro-batches five times the 40 GB card's (``EDITION_80GB``). Each pair solves, published and
tpsim alike, for a cost a token and a fixed cost a micro-batch (the same per-token cost on both
cards: tpsim puts them 1.5% apart at one micro-batch).

    python bench/foundry_kernel_candidates.py
"""
from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import whole_job_bf16_published as bf16  # noqa: E402

from tpsim.base.memo import clear_all  # noqa: E402
from tpsim.cluster.topology import load_topology  # noqa: E402
from tpsim.layer.ops import Attention  # noqa: E402
from tpsim.sim import price as pricing  # noqa: E402
from tpsim.spec.parallel import Group  # noqa: E402

PRICED = pricing.kernel_time
RELEASED_30B = (48, 7168, 64)           # the Hugging Face model card of mosaicml/mpt-30b: 64 heads of 112


def one_program_per_head(op, device) -> float:
    """The backward of ``SEQUENCE_PARALLEL: False``: b h programs in waves over the SMs."""
    t = PRICED(op, device)
    if type(op) is Attention and op.backward and op.kernel == "triton":
        bh = op.b * op.heads
        t *= math.ceil(bh / device.sm_count) * device.sm_count / bh
    return t


def padded_head_dim(op, device) -> float:
    """Every pass of a head dim that is not a power of two on BLOCK_HEADDIM's padded tile."""
    t = PRICED(op, device)
    if type(op) is Attention and op.kernel == "triton":
        t *= 2 ** math.ceil(math.log2(op.head_dim)) / op.head_dim
    return t


@contextmanager
def candidate(kernel_time=None, mpt30b=None):
    saved = bf16.MPT["mpt-30b"]
    pricing.kernel_time = kernel_time or PRICED
    bf16.MPT["mpt-30b"] = mpt30b or saved
    clear_all()
    try:
        yield
    finally:
        pricing.kernel_time, bf16.MPT["mpt-30b"] = PRICED, saved
        clear_all()


CANDIDATES = (("tpsim", {}), ("non-SP", {"kernel_time": one_program_per_head}),
              ("hd 112", {"kernel_time": padded_head_dim, "mpt30b": RELEASED_30B}))
SHOWN = {("mpt-30b", "8"), ("mpt-13b", "8")}          # the slow rows' model and GPUs
LONG = {"65536", "32768"}                             # long rows of few programs a head
SLOW = {("mpt-30b", "8", "8192"), ("mpt-13b", "8", True)}   # 30B at 8k; 13B on 8 A100 40GB


def errors() -> dict:
    """{(table, label): error} for every row of the three tables under the current pricing."""
    out = {}
    for name, topology, card, settings in bf16.TABLES:
        for r in bf16.rows(name):
            pred, _ = bf16.run(r, topology, settings)
            out[(card, bf16.label(r), (r["model"], r["gpus"]), r["seq_len"])] = \
                pred / float(r["tokens_per_s_per_gpu"]) - 1
    return out


def exposed_bound() -> None:
    """Every FSDP collective of a micro-batch exposed, against what tpsim misses a micro-batch."""
    print("\nall FSDP collectives of a micro-batch exposed vs. the time tpsim misses a micro-batch")
    for name, topology, card, settings in bf16.TABLES:
        topo = load_topology(topology)
        for r in bf16.rows(name):
            if (r["model"], r["gpus"], r["seq_len"] if r["model"] == "mpt-30b" else
                    settings.get("grad_reduce_in_bf16", False)) not in SLOW:
                continue
            pred, p = bf16.run(r, topology, settings)
            layers, d, _ = bf16.MPT[r["model"]]
            unit = 12 * d * d + 13 * d               # an MPT block: QKV, out, MLP x4, biases, 2 LNs
            g = Group("dp", int(r["gpus"]))
            rs_bytes = 2 if settings.get("grad_reduce_in_bf16") else 4
            comm = layers * (2 * pricing.group_collective("all-gather", 2 * unit, g, topo).time_s
                             + pricing.group_collective("reduce-scatter", rs_bytes * unit, g,
                                                        topo).time_s)
            st = p.step
            missed = st.time_s * (pred / float(r["tokens_per_s_per_gpu"]) - 1) / st.micro_batches
            print(f"  {card:12s} {bf16.label(r):34s} exposed {comm:5.2f} s  missed {missed:5.2f} s")


# the earlier edition's A100 80GB rows of MPT-13B on 8 GPUs (scripts/train/benchmarking/README.md
# at 300cc5c58-c6cfb4284): seq, micro-batch, accumulation, tokens/s per GPU
EDITION_80GB = ((8192, 5, 3, 1691), (4096, 10, 3, 1917), (2048, 20, 3, 2065))


def fixed_per_micro_batch(t_small: float, n_small: int, t_large: float, n_large: int) -> float:
    """The fixed seconds a micro-batch of the line through (n_small, t_small), (n_large,
    t_large): micro-batch seconds against its tokens."""
    per_token = (t_large - t_small) / (n_large - n_small)
    return t_small - per_token * n_small


def card_pairs() -> None:
    """MPT-13B on 8 A100 40GB against the same software's 8 A100 80GB at 5x the micro-batch."""
    print("\nMPT-13B on 8 A100, the 40 GB table's software: 40 GB against 80 GB (earlier edition)")
    forty = {r["seq_len"]: r for r in bf16.rows(bf16.TABLES[2][0])
             if r["model"] == "mpt-13b" and r["gpus"] == "8"}
    settings = bf16.TABLES[2][3]
    for seq, mbs, accum, published in EDITION_80GB:
        r40 = forty[str(seq)]
        r80 = {**r40, "micro_batch": str(mbs), "grad_accum": str(accum)}
        n40, n80 = int(r40["micro_batch"]) * seq, mbs * seq
        p40, p80 = float(r40["tokens_per_s_per_gpu"]), float(published)
        t40, _ = bf16.run(r40, bf16.TABLES[2][1], settings)
        t80, _ = bf16.run(r80, bf16.TABLES[1][1], settings)
        fixed = (fixed_per_micro_batch(n40 / p40, n40, n80 / p80, n80),
                 fixed_per_micro_batch(n40 / t40, n40, n80 / t80, n80))
        print(f"  seq {seq:5d}: 80 GB mbs {mbs:2d} published {p80:.0f} tpsim {t80:.0f} "
              f"({t80 / p80 - 1:+.1%}); 40 GB mbs {r40['micro_batch']} published {p40:.0f} tpsim "
              f"{t40:.0f}; 80/40 published {p80 / p40:.2f} tpsim {t80 / t40:.3f}; fixed a "
              f"micro-batch published {fixed[0]:.2f} s, tpsim {fixed[1]:.2f} s")


def main() -> None:
    results = {}
    for tag, kw in CANDIDATES:
        with candidate(**kw):
            results[tag] = errors()
    keys = list(results["tpsim"])
    print(f"{'table':12s} {'run':36s} " + " ".join(f"{t:>7s}" for t, _ in CANDIDATES))
    for k in keys:
        if k[2] in SHOWN or k[3] in LONG and k[2][1] == "8":
            print(f"{k[0]:12s} {k[1]:36s} " + " ".join(f"{results[t][k]:+7.1%}"
                                                       for t, _ in CANDIDATES))
    print("\nper table: mean error, within 10%")
    for card in dict.fromkeys(k[0] for k in keys):
        cells = []
        for tag, _ in CANDIDATES:
            e = np.array([v for k, v in results[tag].items() if k[0] == card])
            cells.append(f"{tag} {e.mean():+.1%} {int((np.abs(e) <= 0.10).sum())}/{len(e)}")
        print(f"  {card:12s} " + "; ".join(cells))
    exposed_bound()
    card_pairs()


if __name__ == "__main__":
    main()
