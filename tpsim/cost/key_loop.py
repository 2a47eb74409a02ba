"""FlashAttention-2's deterministic backward: a few CTAs a head, each looping over key blocks.

FlashAttention-2 (>= 2.4.1, ``csrc/flash_attn/src/flash_bwd_launch_template.h``,
``run_flash_bwd_seqk_parallel``) runs its backward as one CTA per (key block, batch, head),
each adding its share of dQ into one fp32 buffer with atomics: the order of the adds, and dQ's
last bits, change from run to run. With ``deterministic=True`` (what Transformer Engine passes
under ``torch.use_deterministic_algorithms(True)`` or ``NVTE_ALLOW_NONDETERMINISTIC_ALGO=0``)
the grid's first dimension is instead

    splits = ceil(SMs / (b heads))        (flash_api.cpp: nsplits; the launch: gridDimx)

and CTA ``i`` of a (batch, head) loops over the key blocks i, i + splits, i + 2 splits, ...
(``compute_dq_dk_dv_seqk_parallel``), adding into the i-th of ``splits`` fp32 dQ copies,
which a last kernel sums. The work is the same; what changes is how it is cut:

* the CTAs: b heads splits of them, one resident an SM (the head-dim-128 backward's tile,
  Flash_bwd_kernel_traits<128, 64, 128, ...>, takes 144 KiB of shared memory: one fits an
  A100's 164 KiB, an H100's 228 KiB), so just over one wave: the second wave's few CTAs run
  alone after the first;
* causal, a key block j of ``block_k`` keys meets the ceil((s_q - j block_k) / block_q)
  query blocks at or after it (s_q = s_kv), a CTA the sum over its key blocks.

Both grids are list-scheduled the way the hardware hands out CTAs (blockIdx.x fastest, each
to the first SM free), a CTA's time its query-block count; the deterministic backward takes

    t_det = t_default x makespan(deterministic grid) / makespan(default grid)
            + elementwise_time(2 (splits - 1) b s_q heads d x 4)

the last term the dQ copies' extra bytes: ``torch::zeros`` writes all ``splits`` of them (one
kernel) and the sum reads them, where the default clears and reads one. The default
backward's time is the kernel's fitted efficiency's (:func:`tpsim.cost.compute.attention_time`).
Checked (no fit) on flash-attention PR #1893's H100 timing of FlashAttention-2's deterministic
backward (``python bench/deterministic_attention_published.py``).
"""
from __future__ import annotations

import heapq
import math

from ..base.memo import Memo
from .compute import elementwise_time

ACCUM_BYTES = 4      # dQ is accumulated in fp32


def key_blocks(seq_q: int, seq_kv: int, causal: bool, tile: tuple[int, int]) -> list[int]:
    """Query blocks each key block of ``tile`` = (block_q, block_k) meets: all
    ceil(seq_q / block_q), less causal (the queries the last seq_q of seq_kv positions) the
    floor((j block_k - (seq_kv - seq_q)) / block_q) blocks before key block j's first key
    (FlashAttention-2's m_block_min, flash_bwd_kernel.h)."""
    block_q, block_k = tile
    rows = math.ceil(seq_q / block_q)
    blocks = range(math.ceil(seq_kv / block_k))
    if not causal:
        return [rows for _ in blocks]
    offset = seq_kv - seq_q
    return [max(rows - max(j * block_k - offset, 0) // block_q, 0) for j in blocks]


def makespan(works: list[int], sms: int) -> float:
    """Time for ``works`` (CTAs in launch order, one resident an SM) on ``sms`` SMs, each CTA
    started on the first SM free: greedy list scheduling."""
    free = [0.0] * min(sms, len(works))
    end = 0.0
    for w in works:
        t = heapq.heappop(free) + w
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def splits(b_heads: int, sms: int) -> int:
    """CTAs a (batch, head) in the deterministic backward: ceil(SMs / (b heads))."""
    return -(-sms // b_heads)


def slowdown(b_heads: int, seq_q: int, seq_kv: int, causal: bool, sms: int,
             tile: tuple[int, int]) -> float:
    """makespan(deterministic grid) / makespan(default grid) (module docstring)."""
    return _SLOWDOWN.get((b_heads, seq_q, seq_kv, causal, sms, tile), _slowdown,
                         b_heads, seq_q, seq_kv, causal, sms, tile)


def _slowdown(b_heads, seq_q, seq_kv, causal, sms, tile) -> float:
    blocks = key_blocks(seq_q, seq_kv, causal, tile)
    n = splits(b_heads, sms)
    default = makespan(blocks * b_heads, sms)
    looped = [sum(blocks[i::n]) for i in range(n)] * b_heads
    return makespan(looped, sms) / default if default else 1.0


def deterministic_backward_time(default_s: float, b: int, heads: int, seq_q: int, seq_kv: int,
                                head_dim: int, causal: bool, device, tile: tuple[int, int]) -> float:
    """The deterministic backward's seconds from the default one's ``default_s``:
    default_s x slowdown + elementwise_time(2 (splits - 1) b seq_q heads head_dim x 4)
    (module docstring)."""
    bh = b * heads
    extra = 2 * (splits(bh, device.sm_count) - 1) * bh * seq_q * head_dim * ACCUM_BYTES
    ratio = slowdown(bh, seq_q, seq_kv, causal, device.sm_count, tile)
    return default_s * ratio + elementwise_time(extra, device)


_SLOWDOWN = Memo("deterministic attention grids", 1024)

__all__ = ["deterministic_backward_time", "key_blocks", "makespan", "slowdown", "splits"]
