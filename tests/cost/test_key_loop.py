"""FlashAttention-2's deterministic backward (tpsim.cost.key_loop): ceil(SMs / (b heads)) CTAs
a head, each looping over every splits-th key block, list-scheduled against the default grid
of one CTA per key block."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.cost.key_loop import (deterministic_backward_time, key_blocks, makespan, slowdown,
                                 splits)

TILE = (64, 128)


def test_key_blocks_causal_and_not():
    """Causal s = 512, tiles of 64 queries and 128 keys: key block j meets the 8 - 2 j query
    blocks from query 128 j on; without the mask all 8; a decode-like s_q = 64 of s_kv = 256
    meets one query block in every key block (the query sits after them all)."""
    assert key_blocks(512, 512, True, TILE) == [8, 6, 4, 2]
    assert key_blocks(512, 512, False, TILE) == [8, 8, 8, 8]
    assert key_blocks(64, 256, True, TILE) == [1, 1]


def test_splits_and_makespan_by_hand():
    """ceil(108 / 32) = 4 CTAs a head on A100 at b heads = 32; on 2 SMs, CTAs 8, 6, 4, 2 in
    order: 8 | 6, then 4 on the SM free at 6 (10), 2 on the one free at 8 (10)."""
    assert splits(32, 108) == 4 and splits(16, 108) == 7 and splits(200, 108) == 1
    assert makespan([8, 6, 4, 2], 2) == 10
    assert makespan([3], 108) == 3


def test_slowdown_by_hand():
    """s = 512 causal, one head on 2 SMs: the deterministic grid has 2 CTAs, 8 + 4 = 12 and
    6 + 2 = 8 (makespan 12); the default's 4 CTAs make 10 (above): 1.2."""
    assert slowdown(1, 512, 512, True, 2, TILE) == pytest.approx(1.2)


def test_the_ci_shapes_on_a100():
    """The Megatron-LM CI runs' attention on A100 (s 8192, d 128, causal): b heads 32 (TP 1,
    micro-batch 1) cuts into 4 CTAs a head, 1,088 1,056 1,024 992 query blocks: 128 CTAs on 108
    SMs, the last 20 starting at 992 (the first wave's lightest), done at 2,080 at the latest;
    the default grid's 2,048 CTAs end near the mean, 32 x 4,160 / 108 = 1,233."""
    blocks = key_blocks(8192, 8192, True, TILE)
    assert [sum(blocks[i::4]) for i in range(4)] == [1088, 1056, 1024, 992]
    looped = [sum(blocks[i::4]) for i in range(4)] * 32
    assert makespan(looped, 108) == 2080
    assert 1.5 < slowdown(32, 8192, 8192, True, 108, TILE) < 2080 / (32 * 4160 / 108)


def test_time_adds_the_split_dq_copies():
    """t = default x slowdown + one kernel over 2 (splits - 1) b s heads d x 4 bytes."""
    dev = load_topology("dgx-a100").device
    got = deterministic_backward_time(1e-3, 2, 8, 8192, 8192, 128, True, dev, TILE)
    extra = 2 * 6 * 16 * 8192 * 128 * 4
    assert got == pytest.approx(1e-3 * slowdown(16, 8192, 8192, True, 108, TILE)
                                + elementwise_time(extra, dev), rel=1e-12)
    one = dataclasses.replace(dev, sm_count=16)   # one CTA a head: the same grid, no copies
    assert deterministic_backward_time(1e-3, 2, 8, 256, 256, 128, True, one, (64, 256)) == 1e-3


@settings(max_examples=40, deadline=None)
@given(bh=st.integers(1, 64), s=st.integers(64, 4096), sms=st.integers(1, 132),
       causal=st.booleans())
def test_the_deterministic_grid_is_never_shorter_than_its_largest_cta(bh, s, sms, causal):
    """Whatever the cut, the deterministic grid ends no earlier than its largest CTA and the
    mean load (the same total work)."""
    blocks = key_blocks(s, s, causal, TILE)
    n = splits(bh, sms)
    looped = [sum(blocks[i::n]) for i in range(n)] * bh
    end = makespan(looped, sms)
    assert end >= max(looped) and end >= sum(looped) / sms - 1e-9
    assert sum(looped) == sum(blocks) * bh
