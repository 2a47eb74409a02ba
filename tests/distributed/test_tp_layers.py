"""Real tensor-parallel layers against a single-device reference, on 2 and 4 gloo ranks.

Every rank builds the full weights from one seed, runs the reference and its shard, and compares
the forward output, the input gradient and every weight gradient (tpsim.tp.check). A layer with
its all-reduce removed must fail the same check; the chapter's pitfalls must raise.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.dist_helpers import run_ranks  # noqa: E402


def _check(world):
    from tpsim.tp.check import check_all, failures
    results = check_all(seq=4 * world, hidden=16 * world, heads=2 * world, kv_heads=world,
                        ffn=32 * world)
    return len(results), failures(results), sorted({r.layer for r in results})


def _broken():
    """Drop the row-parallel all-reduce: each rank keeps only its partial sum."""
    from tpsim.tp import mappings
    from tpsim.tp.check import check_all, failures
    mappings.reduce_from_tensor_parallel_region = lambda x, group=None: x
    return failures(check_all())


def _all_reduce_of_ranks():
    """Megatron's hand-derived check: each rank contributes its rank id; 4 ranks sum to 6."""
    import torch.distributed as dist
    from tpsim.tp.mappings import reduce_from_tensor_parallel_region
    x = torch.full((3,), float(dist.get_rank()))
    return reduce_from_tensor_parallel_region(x).tolist()


def _pitfalls():
    import torch.distributed as dist
    from tpsim.tp import ColumnParallelLinear, ParallelAttention, ParallelMLP, RowParallelLinear
    from tpsim.tp.layers import ShardingError
    p = dist.get_world_size()
    caught = []
    row = RowParallelLinear(8 * p, 8)
    cases = {
        "full input to row-parallel": lambda: row(torch.randn(2, 1, 8 * p)),
        "heads not divisible": lambda: ParallelAttention(8 * (2 * p + 1), 2 * p + 1),
        "kv heads not divisible": lambda: ParallelAttention(16 * p, 2 * p, kv_heads=1),
        "column outputs not divisible": lambda: ColumnParallelLinear(8, 2 * p + 1),
        "ffn not divisible": lambda: ParallelMLP(8, 2 * p + 1),
        "wrong input width": lambda: ColumnParallelLinear(8, 2 * p)(torch.randn(2, 1, 4)),
    }
    for name, make in cases.items():
        try:
            make()
        except ShardingError as e:
            caught.append((name, str(e)))
    return caught


def _suite(world):
    """Everything that needs a healthy group, in one spawn (each spawn costs seconds)."""
    return {"check": _check(world), "sum": _all_reduce_of_ranks(), "pitfalls": _pitfalls()}


@pytest.fixture(scope="module", params=[2, 4])
def suite(request, tmp_path_factory):
    world = request.param
    return world, run_ranks(world, _suite, world, tmpdir=tmp_path_factory.mktemp(f"w{world}"))


def test_layers_match_single_device_reference(suite):
    world, ranks = suite
    for r in ranks:
        count, bad, layers = r["check"]
        assert bad == [], bad
        assert count >= 40
        assert "column (gathered)" in layers and "mlp swiglu +SP" in layers
        assert f"attention unfused kv={world} +SP" in layers


def test_all_reduce_sums_rank_ids(suite):
    world, ranks = suite
    expected = float(sum(range(world)))           # 2 ranks: 0+1 = 1; 4 ranks: 0+1+2+3 = 6
    assert [r["sum"] for r in ranks] == [[expected] * 3] * world


def test_pitfalls_raise_clear_errors(suite):
    _, ranks = suite
    msg = dict(ranks[0]["pitfalls"])
    assert len(msg) == 6, msg
    assert "full, unsplit input" in msg["full input to row-parallel"]
    assert "not divisible by the tensor-parallel size" in msg["heads not divisible"]
    assert "kv heads" in msg["kv heads not divisible"]
    assert "expects 8 input features" in msg["wrong input width"]


def test_removed_all_reduce_fails_the_check(tmp_path):
    for bad in run_ranks(2, _broken, tmpdir=tmp_path):
        assert any(line.startswith("mlp gelu: output") for line in bad), bad
        assert any("attention" in line for line in bad)


def _graph_nodes(t) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen:
            seen.add(f)
            todo += [n for n, _ in f.next_functions]
    return {type(f).__name__ for f in seen}


def test_unfused_core_is_megatrons_and_matches_flash_attention():
    """Grouped-query (4 query heads on 2 kv heads), Megatron's (s, b, heads, d) layout: the
    unfused core equals torch's causal SDPA in the output and every input gradient, and runs
    Megatron's unfused kernels (repeat_interleave, baddbmm, the in-place mask fill, softmax,
    bmm, the context copy) with no autograd copy around the fill (CopySlices)."""
    import torch.nn.functional as F
    from tpsim.tp.layers import causal_mask, unfused_causal_attention
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(16, 2, h, 8, generator=gen, requires_grad=True) for h in (4, 2, 2))
    out = unfused_causal_attention(q, k, v)                        # (s, b, 4*8)
    bhsd = [t.permute(1, 2, 0, 3) for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*bhsd, is_causal=True, enable_gqa=True)
    ref = ref.permute(2, 0, 1, 3).reshape(16, 2, 32)
    grad = torch.randn(out.shape, generator=gen)
    for a, b in zip((out, *torch.autograd.grad(out, (q, k, v), grad)),
                    (ref, *torch.autograd.grad(ref, (q, k, v), grad))):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    nodes = _graph_nodes(out)
    assert {"BaddbmmBackward0", "MaskedFillBackward0", "SoftmaxBackward0"} <= nodes
    assert "CopySlices" not in nodes
    mask = causal_mask(3, "cpu")
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
